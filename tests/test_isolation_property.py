"""Tenant isolation as a property: random operations of two users over every tier's read, list,
search and delete API; nothing returned to one user ever carries the other's canary.

Hypothesis drives a state machine on one open manager per backend (fresh user ids per example,
so examples never share data). Every write carries a canary word unique to its user; every
operation may aim at the other user's ids (sessions, threads, facts, store keys), and must then
raise `OwnershipError` / `NotFoundError` or return nothing of theirs. The result of every call,
and every error message, is searched for the other user's canary. At the end of each example
the other user's data is checked to be still there: no cross-user call deleted or changed it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import memory_graph, turn_config, unique
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from memory_tiers import FactCandidate, MemoryManager, NotFoundError, OwnershipError

MAX_EXAMPLES = 30
STEPS = 30
REFUSED = (OwnershipError, NotFoundError)
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=list(HealthCheck),
)
EXECUTED = {"examples": 0, "steps": 0, "refused": 0}


@dataclass
class Tenant:
    """One user, a canary word, and the ids of what it wrote."""

    user_id: str
    canary: str = field(default_factory=lambda: f"canary{uuid.uuid4().hex[:12]}")
    sessions: list[str] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    turned: list[str] = field(default_factory=list)  # threads with checkpoints
    facts: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


WHO = st.sampled_from([0, 1])


class Isolation(RuleBasedStateMachine):
    manager: MemoryManager

    @initialize()
    def users(self) -> None:
        self.tenants = [Tenant(unique("alice")), Tenant(unique("bob"))]
        self.graph = memory_graph(self.manager)
        self.counter = 0
        EXECUTED["examples"] += 1

    # -- helpers ----------------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        EXECUTED["steps"] += 1
        return self.manager.run(coro)

    def clean(self, actor: int, value: Any) -> Any:
        """Fail if ``value`` shows the other tenant's canary; returns it."""
        other = self.tenants[1 - actor].canary
        assert other not in repr(value), f"{self.tenants[actor].user_id} saw {other}: {value!r}"
        return value

    def attempt(self, actor: int, whose: int, coro: Any) -> Any:
        """Run a call of ``actor`` on ``whose``'s ids: a foreign one must be refused (or give
        nothing), an own one may be missing already (deleted by an earlier step)."""
        try:
            return self.clean(actor, self.run(coro))
        except REFUSED as exc:
            self.clean(actor, str(exc))
            EXECUTED["refused"] += 1
            return None

    def pick(self, ids: list[str], index: int) -> str | None:
        return ids[index % len(ids)] if ids else None

    def fresh(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}-{uuid.uuid4().hex[:8]}-{self.counter}"

    # -- sessions ---------------------------------------------------------------------------

    @rule(actor=WHO)
    def start_session(self, actor: int) -> None:
        me = self.tenants[actor]
        sid = self.fresh("s")
        record = self.run(self.manager.sessions.start(me.user_id, sid, {"note": me.canary}))
        assert self.clean(actor, record).data == {"note": me.canary}
        me.sessions.append(sid)

    @rule(actor=WHO, whose=WHO, index=st.integers(0, 20), op=st.sampled_from(["get", "update", "end"]))
    def touch_session(self, actor: int, whose: int, index: int, op: str) -> None:
        me, owner = self.tenants[actor], self.tenants[whose]
        sid = self.pick(owner.sessions, index)
        if sid is None:
            return
        sessions = self.manager.sessions
        call = {
            "get": lambda: sessions.get(me.user_id, sid),
            "update": lambda: sessions.update(me.user_id, sid, {"more": me.canary}),
            "end": lambda: sessions.end(me.user_id, sid),
        }[op]()
        result = self.attempt(actor, whose, call)
        if actor != whose:
            assert result is None, f"{op} of another user's session returned {result!r}"
        elif op == "end" and result is not None:
            owner.sessions.remove(sid)

    @rule(actor=WHO)
    def list_sessions(self, actor: int) -> None:
        me, other = self.tenants[actor], self.tenants[1 - actor]
        listed = self.clean(actor, self.run(self.manager.sessions.list(me.user_id)))
        assert not set(listed) & set(other.sessions)

    # -- long-term --------------------------------------------------------------------------

    @rule(actor=WHO)
    def patch_profile(self, actor: int) -> None:
        me = self.tenants[actor]
        self.clean(actor, self.run(self.manager.long_term.patch_profile(me.user_id, {"nick": me.canary})))

    @rule(actor=WHO)
    def add_fact(self, actor: int) -> None:
        me = self.tenants[actor]
        value = f"{me.canary} {self.fresh('v')}"
        outcome = self.run(
            self.manager.long_term.add_facts(me.user_id, [FactCandidate(attribute="likes", value=value)])
        )
        me.facts.extend(self.clean(actor, outcome).fact_ids)

    @rule(actor=WHO, about=WHO)
    def read_long_term(self, actor: int, about: int) -> None:
        """Profile, facts, history, search (by either canary) and archives of ``actor``."""
        lt, me = self.manager.long_term, self.tenants[actor]
        query = f"what about {self.tenants[about].canary}"
        self.clean(actor, self.run(lt.get_profile(me.user_id)))
        self.clean(actor, self.run(lt.list_facts(me.user_id, include_history=True)))
        self.clean(actor, self.run(lt.fact_history(me.user_id, "likes")))
        found = self.clean(actor, self.run(lt.search_facts(me.user_id, query)))
        if about != actor:
            assert found == [] or all(f.id not in self.tenants[about].facts for f in found)
        self.clean(actor, self.run(lt.list_archives(me.user_id)))

    @rule(actor=WHO, whose=WHO, index=st.integers(0, 20))
    def forget_fact(self, actor: int, whose: int, index: int) -> None:
        me, owner = self.tenants[actor], self.tenants[whose]
        fact_id = self.pick(owner.facts, index)
        if fact_id is None:
            return
        self.attempt(actor, whose, self.manager.long_term.forget_fact(me.user_id, fact_id))
        if actor == whose:
            owner.facts.remove(fact_id)
        else:
            assert fact_id in {f.id for f in self.run(self.manager.long_term.list_facts(owner.user_id))}

    # -- the LangGraph store ----------------------------------------------------------------

    @rule(actor=WHO)
    def store_put(self, actor: int) -> None:
        me = self.tenants[actor]
        key = self.fresh("k")
        self.run(self.manager.store.for_user(me.user_id).aput(("notes",), key, {"text": me.canary}))
        me.keys.append(key)

    @rule(actor=WHO, whose=WHO, index=st.integers(0, 20))
    def store_read_and_delete(self, actor: int, whose: int, index: int) -> None:
        me, owner = self.tenants[actor], self.tenants[whose]
        store = self.manager.store.for_user(me.user_id)
        self.clean(actor, self.run(store.asearch(("notes",), limit=100)))
        self.clean(actor, self.run(store.asearch(("notes",), query=owner.canary, limit=100)))
        self.clean(actor, self.run(store.asearch(("notes",), filter={"text": owner.canary})))
        self.clean(actor, self.run(store.alist_namespaces()))
        key = self.pick(owner.keys, index)
        if key is None:
            return
        item = self.clean(actor, self.run(store.aget(("notes",), key)))
        if actor != whose:
            assert item is None
            self.run(store.adelete(("notes",), key))  # a no-op: the key is not in actor's scope
            theirs = self.run(self.manager.store.for_user(owner.user_id).aget(("notes",), key))
            assert theirs is not None and theirs.value == {"text": owner.canary}
        else:
            self.run(store.adelete(("notes",), key))
            owner.keys.remove(key)

    # -- threads and graph turns --------------------------------------------------------------

    @rule(actor=WHO)
    def create_thread(self, actor: int) -> None:
        me = self.tenants[actor]
        tid = self.fresh("t")
        record = self.run(self.manager.threads.create(me.user_id, tid, metadata={"canary": me.canary}))
        assert self.clean(actor, record).user_id == me.user_id
        me.threads.append(tid)

    @rule(actor=WHO, thread_of=WHO, session_of=WHO, t=st.integers(0, 20), s=st.integers(0, 20))
    def graph_turn(self, actor: int, thread_of: int, session_of: int, t: int, s: int) -> None:
        """A turn through the memory nodes, on an own or foreign thread and session (or new ones)."""
        me = self.tenants[actor]
        tid = self.pick(self.tenants[thread_of].turned, t) or self.fresh("t")
        sid = self.pick(self.tenants[session_of].sessions, s)
        message = f"I like {me.canary}."
        config = turn_config(me.user_id, tid, sid)
        foreign = tid in self.tenants[1 - actor].turned or (sid in self.tenants[1 - actor].sessions)
        try:
            result = self.run(self.graph.ainvoke({"messages": [("user", message)]}, config))
        except REFUSED as exc:
            assert foreign, f"an own turn was refused: {exc}"
            self.clean(actor, str(exc))
            EXECUTED["refused"] += 1
            return
        assert not foreign, "a turn on another user's thread or session ran"
        self.clean(actor, result)
        if tid not in me.turned:
            me.turned.append(tid)
            me.threads.append(tid)

    @rule(actor=WHO, whose=WHO, index=st.integers(0, 20), op=st.sampled_from(["get", "history", "fork"]))
    def read_thread(self, actor: int, whose: int, index: int, op: str) -> None:
        me, owner = self.tenants[actor], self.tenants[whose]
        tid = self.pick(owner.threads, index)
        if tid is None:
            return
        threads = self.manager.threads
        new_id = self.fresh("t")
        call = {
            "get": lambda: threads.get(me.user_id, tid),
            "history": lambda: threads.history(me.user_id, tid),
            "fork": lambda: threads.fork(me.user_id, tid, new_thread_id=new_id),
        }[op]()
        result = self.attempt(actor, whose, call)
        if actor != whose:
            assert result is None, f"{op} of another user's thread returned {result!r}"
        elif op == "fork" and result is not None:
            me.threads.append(new_id)
            me.turned.append(new_id)

    @rule(actor=WHO)
    def list_threads(self, actor: int) -> None:
        me, other = self.tenants[actor], self.tenants[1 - actor]
        page = self.clean(actor, self.run(self.manager.threads.list(me.user_id, limit=200)))
        assert not {r.thread_id for r in page.threads} & set(other.threads)

    @rule(actor=WHO, whose=WHO, index=st.integers(0, 20))
    def delete_thread(self, actor: int, whose: int, index: int) -> None:
        me, owner = self.tenants[actor], self.tenants[whose]
        tid = self.pick(owner.threads, index)
        if tid is None:
            return
        deleted = self.attempt(actor, whose, self.manager.threads.delete(me.user_id, tid))
        if actor != whose:
            assert not deleted
            assert self.run(self.manager.threads.get(owner.user_id, tid)).user_id == owner.user_id
        else:
            owner.threads.remove(tid)
            if tid in owner.turned:
                owner.turned.remove(tid)

    # -- users ------------------------------------------------------------------------------

    @rule(actor=WHO)
    def export(self, actor: int) -> None:
        self.clean(actor, self.run(self.manager.users.export(self.tenants[actor].user_id)))

    @invariant()
    def others_data_is_intact(self) -> None:
        """Whatever the other user did, each user's sessions, facts and keys are still there."""
        if not hasattr(self, "tenants"):
            return
        for me in self.tenants:
            live = set(self.manager.run(self.manager.sessions.list(me.user_id)))
            assert set(me.sessions) <= live
            facts = {f.id for f in self.manager.run(self.manager.long_term.list_facts(me.user_id))}
            assert set(me.facts) <= facts

    def teardown(self) -> None:
        for me in getattr(self, "tenants", []):
            self.manager.run(self.manager.users.forget(me.user_id))


def test_no_user_ever_sees_another_users_canary(memory_config):
    EXECUTED.update(examples=0, steps=0, refused=0)
    with MemoryManager(memory_config) as manager:

        class Bound(Isolation):
            pass

        Bound.manager = manager  # one open manager per backend; each example has new users
        run_state_machine_as_test(Bound, settings=SETTINGS)
    assert EXECUTED["examples"] >= MAX_EXAMPLES // 2
    assert EXECUTED["refused"] > 0, "no cross-user call was tried"
    print(f"isolation: {EXECUTED}")


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
