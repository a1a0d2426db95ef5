"""Graph nodes that load and save each memory tier.

Each node is one async implementation in a `MemoryNode` whose sync side runs that same
coroutine on the manager's loop, so the nodes serve ``graph.invoke`` and ``graph.ainvoke``.
Round trips per turn are fixed: load = 1 Redis round trip + 1 SQL SELECT; save = 1 SQL
transaction (on PostgreSQL one statement) + 1 Redis round trip, whatever the history length.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AnyMessage, BaseMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langgraph._internal._runnable import coerce_to_runnable  # what StateGraph.add_node uses
from langgraph.graph import END, START, StateGraph, add_messages

from memory_tiers.context import TurnIds, resolve_ids
from memory_tiers.errors import (
    BackendUnavailableError,
    InvalidIdentifierError,
    OwnershipError,
    StateSchemaError,
)
from memory_tiers.learning import Turn
from memory_tiers.long_term.consolidate import Provenance
from memory_tiers.long_term.models import Fact
from memory_tiers.observability import bind_ids, get_logger
from memory_tiers.state.schema import MemoryState

if TYPE_CHECKING:
    from memory_tiers.manager import MemoryManager

logger = get_logger(__name__)

# Where LangGraph puts the run's checkpointer in config['configurable'].
CONFIG_KEY_CHECKPOINTER = "__pregel_checkpointer"
DEGRADED_KEY = "memory_degraded"

Update = dict[str, Any]
NodeImpl = Callable[[dict[str, Any], TurnIds, RunnableConfig], Awaitable[Update]]


def _messages(state: dict[str, Any], node: str) -> Sequence[Any]:
    """``state['messages']``: a list as a graph's messages channel holds it, or converted.

    The messages in a list are checked where `_last_human_text` and `_messages_since` read
    them, from the newest back (an older entry that is not a message is never read): checking
    each one of a 400-message thread, twice per load, was a fifth of a turn-200 load's Python."""
    if not isinstance(state, dict) or "messages" not in state:
        raise StateSchemaError(
            f"{node}: the graph state has no 'messages' key; build the graph on MemoryState "
            "(or a state with a messages channel)"
        )
    messages = state["messages"]
    return messages if isinstance(messages, list) else _converted(messages, node)


def _converted(messages: Any, node: str) -> list[AnyMessage]:
    try:
        return convert_to_messages(messages)
    except (ValueError, NotImplementedError, TypeError) as exc:
        raise StateSchemaError(
            f"{node}: state['messages'] holds something that is not a message: {exc}"
        ) from None


def _messages_since(messages: Sequence[Any], cursor: str | None, node: str) -> list[AnyMessage]:
    """The messages after the one the last save stopped at (all of them if it is gone)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if not isinstance(message, BaseMessage):  # a dict or tuple a caller passed: convert all
            return _messages_since(_converted(messages, node), cursor, node)
        if cursor is not None and message.id == cursor:
            return list(messages[index + 1 :])
    return list(messages)


def _all_messages(state: dict[str, Any], node: str) -> list[AnyMessage]:
    """Every message of the state, checked (converted if a caller passed dicts or tuples)."""
    messages = _messages(state, node)
    if all(isinstance(message, BaseMessage) for message in messages):
        return list(messages)
    return _converted(messages, node)


def _last_human_text(messages: Sequence[Any], node: str) -> str | None:
    """The text of the latest user message: what this turn's recall is about."""
    for message in reversed(messages):
        if not isinstance(message, BaseMessage):
            return _last_human_text(_converted(messages, node), node)
        if message.type == "human":
            return message.text
    return None


def _flags(state: dict[str, Any], outcome: dict[str, bool]) -> Update:
    """The ``memory_degraded`` update after the tiers in ``outcome`` were tried (True: served
    degraded); the other tiers' flags stay. Nothing when the flags do not change, so a healthy
    turn's update is what it always was."""
    before = list(state.get(DEGRADED_KEY) or [])
    down = [tier for tier, degraded in outcome.items() if degraded]
    after = [tier for tier in before if tier not in outcome] + down
    return {DEGRADED_KEY: after} if after != before else {}


def _changed(state: dict[str, Any], update: Update, kept: Update) -> Update:
    """``update`` without the memory keys whose values ``state`` already holds; the keys of
    ``kept`` (the agent's own update) stay whatever they hold. An unwritten channel keeps its
    value, so the state is the same, but the checkpoint stores no new copy of an unchanged
    profile or session on every turn."""
    return {
        key: value for key, value in update.items() if key in kept or key not in state or state[key] != value
    }


def _require(value: str | None, kind: str, node: str) -> str:
    if value is None:
        raise InvalidIdentifierError(f"{node}: {kind} is missing from config['configurable']")
    return value


class MemoryNode(Runnable[dict[str, Any], Update]):
    """A memory node: a `Runnable` calling its implementation directly.

    Unlike `RunnableLambda` it opens no callback run of its own: inside a graph LangGraph already
    traces each node as its task's run (as it runs a plain function node), and the extra layer
    cost about as much Python as the node's own round trips.

    Args:
        name: the node's name.
        sync: ``(state, config) -> update``, for ``invoke``.
        asynchronous: ``async (state, config) -> update``, for ``ainvoke``.
    """

    def __init__(
        self,
        name: str,
        sync: Callable[[dict[str, Any], RunnableConfig], Update],
        asynchronous: Callable[[dict[str, Any], RunnableConfig], Awaitable[Update]],
    ) -> None:
        self.name = name
        self._sync = sync
        self._async = asynchronous

    def invoke(self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any) -> Update:
        """Run the node from sync code (``graph.invoke``)."""
        return self._sync(input, ensure_config(config))

    async def ainvoke(
        self, input: dict[str, Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Update:
        """Run the node (``graph.ainvoke``)."""
        return await self._async(input, ensure_config(config))


class MemoryNodes:
    """The nodes of one manager; get them as ``manager.nodes.load`` and so on.

    Example:
        >>> from langgraph.graph import StateGraph
        >>> from memory_tiers import MemoryManager, MemoryState
        >>> manager = MemoryManager.from_config({"working": {"backend": "memory"}})
        >>> builder = StateGraph(MemoryState)
        >>> _ = builder.add_node("load_memory", manager.nodes.load)
        >>> manager.nodes.load.name
        'load_memory'
    """

    def __init__(self, manager: MemoryManager) -> None:
        self._manager = manager
        self.load = self._node("load_memory", self._load)
        self.save = self._node("save_memory", self._save)
        self.load_session = self._node("load_session", self._load_session)
        self.save_session = self._node("save_session", self._save_session)
        self.load_long_term = self._node("load_long_term", self._load_long_term)
        self.save_long_term = self._node("save_long_term", self._save_long_term)

    def around(self, agent: Any, state_schema: type[Any] | None = None, *, name: str = "agent") -> StateGraph:
        """A graph builder running ``load_memory -> agent -> save_memory``, to compile yourself.

        Add more nodes and edges to it as to any `StateGraph`; compile it with the manager's
        checkpointer (and ``store=manager.store`` if your nodes use the store).

        Args:
            agent: your node (a function or runnable taking and returning state).
            state_schema: the graph state; `MemoryState` or a subclass (the default).
            name: the agent node's name.

        Example:
            >>> from memory_tiers import MemoryManager
            >>> manager = MemoryManager({"working": {"backend": "memory"}})
            >>> builder = manager.nodes.around(lambda state: {"messages": []})
            >>> sorted(builder.nodes)
            ['agent', 'load_memory', 'save_memory']
        """
        builder = StateGraph(state_schema or MemoryState)
        builder.add_node("load_memory", self.load)
        builder.add_node(name, agent)
        builder.add_node("save_memory", self.save)
        builder.add_edge(START, "load_memory")
        builder.add_edge("load_memory", name)
        builder.add_edge(name, "save_memory")
        builder.add_edge("save_memory", END)
        return builder

    def wrap(self, agent: Any, *, name: str = "agent") -> MemoryNode:
        """One node that loads memory, runs ``agent``, then saves: the three in one LangGraph
        super-step, so a turn writes one checkpoint instead of three.

        The agent sees the state with memory loaded (``session``, ``profile``, ``facts``) and
        returns its update as usual; the save sees the agent's messages and session. The node's
        update is the agent's and the memory keys whose values changed (see docs/nodes.md). Use it in
        place of the ``load -> agent -> save`` chain when a turn's cost matters; the separate
        nodes stay for graphs that need other nodes between them.

        Args:
            agent: a function (sync or async, taking ``state`` and, as a LangGraph node does,
                optionally ``config``, ``runtime`` or ``store``) or a runnable, returning a dict
                update.
            name: the node's name.

        Example:
            >>> from langchain_core.messages import AIMessage
            >>> from memory_tiers import MemoryManager
            >>> manager = MemoryManager({"working": {"backend": "memory"}})
            >>> node = manager.nodes.wrap(lambda state: {"messages": [AIMessage("hi")]})
            >>> node.name
            'agent'
        """
        # As LangGraph makes a node of a function (config, runtime and store passed the same way),
        # without a callback run of its own: LangGraph traces the task this node runs in.
        runnable = coerce_to_runnable(agent, name=name, trace=False)
        manager = self._manager

        def merged(
            state: dict[str, Any], messages: list[AnyMessage], loaded: Update, agent_update: Any
        ) -> dict[str, Any]:
            if not isinstance(agent_update, dict):
                raise StateSchemaError(
                    f"{name}: the agent returned {type(agent_update).__name__}, not a dict"
                )
            combined = {**state, **loaded, **agent_update}
            try:
                combined["messages"] = add_messages(messages, agent_update.get("messages") or [])
            except (ValueError, NotImplementedError, TypeError) as exc:
                raise StateSchemaError(f"{name}: the agent's messages are not messages: {exc}") from None
            return combined

        async def run_async(state: dict[str, Any], config: RunnableConfig) -> Update:
            # Checked before the agent runs: the save reads them all once it has.
            messages = _all_messages(state, name)
            ids = resolve_ids(config, manager.config.ids)
            loaded = await self._observed("load_memory", self._load, state, ids, config)
            agent_update = await runnable.ainvoke({**state, **loaded}, config)
            saved = await self._observed(
                "save_memory", self._save, merged(state, messages, loaded, agent_update), ids, config
            )
            return _changed(state, {**loaded, **agent_update, **saved}, agent_update)

        def run_sync(state: dict[str, Any], config: RunnableConfig) -> Update:
            messages = _all_messages(state, name)
            ids = resolve_ids(config, manager.config.ids)
            loaded = manager.bridge.run(self._observed("load_memory", self._load, state, ids, config))
            agent_update = runnable.invoke(
                {**state, **loaded}, config
            )  # the agent runs here, not on our loop
            saved = manager.bridge.run(
                self._observed(
                    "save_memory", self._save, merged(state, messages, loaded, agent_update), ids, config
                )
            )
            return _changed(state, {**loaded, **agent_update, **saved}, agent_update)

        return MemoryNode(name, run_sync, run_async)

    def _node(self, name: str, impl: NodeImpl) -> MemoryNode:
        manager = self._manager

        async def run_async(state: dict[str, Any], config: RunnableConfig) -> Update:
            _messages(state, name)
            ids = resolve_ids(config, manager.config.ids)
            return await self._observed(name, impl, state, ids, config)

        def run_sync(state: dict[str, Any], config: RunnableConfig) -> Update:
            _messages(state, name)
            # Ids are read here, in the caller's context, before crossing to the manager's loop
            # (which runs the coroutine in a copy of this context: spans and log ids follow).
            ids = resolve_ids(config, manager.config.ids)
            return manager.bridge.run(self._observed(name, impl, state, ids, config))

        return MemoryNode(name, run_sync, run_async)

    async def _observed(
        self, name: str, impl: NodeImpl, state: dict[str, Any], ids: TurnIds, config: RunnableConfig
    ) -> Update:
        """Run a node's implementation in its span (``memory_tiers.node.<name>``) with the
        turn's ids on every log record, and count it as a load or a save."""
        operation, _, tier = name.partition("_")
        telemetry = self._manager.telemetry
        with (
            bind_ids(ids.user_id, ids.thread_id, ids.session_id),
            telemetry.span(f"memory_tiers.node.{name}", "all" if tier == "memory" else tier, operation),
        ):
            update = await impl(state, ids, config)
        telemetry.metrics.add(f"{operation}s", attributes={"memory_tiers.node": name})
        return update

    # -- session tier -------------------------------------------------------------------

    def _degraded(self, tier: str, operation: str, error: BackendUnavailableError) -> None:
        """Serve this call without ``tier`` (its ``on_unavailable`` is ``degrade``), or re-raise."""
        if getattr(self._manager.config, tier).on_unavailable == "fail":
            raise error
        logger.warning("%s tier unavailable, %s proceeds without it: %s", tier, operation, error)
        self._count_degradation(tier, operation)

    def _count_degradation(self, tier: str, operation: str) -> None:
        self._manager.metrics.add(
            "degradations", attributes={"memory_tiers.tier": tier, "memory_tiers.operation": operation}
        )

    async def _read_session(self, ids: TurnIds) -> tuple[Update, bool]:
        """The session update ({} if it does not exist), and whether it was served degraded
        (Redis down: an empty session)."""
        session_id = _require(ids.session_id, "session_id", "load_session")
        try:
            record = await self._manager.session_store.load(ids.user_id, session_id)
        except BackendUnavailableError as exc:
            self._degraded("session", "load", exc)
            return {"session": {}}, True
        return {"session": dict(record.data) if record else {}}, False

    async def _load_session(self, state: dict[str, Any], ids: TurnIds, config: RunnableConfig) -> Update:
        update, degraded = await self._read_session(ids)
        return {**update, **_flags(state, {"session": degraded})}

    async def _save_session(self, state: dict[str, Any], ids: TurnIds, config: RunnableConfig) -> Update:
        session_id = _require(ids.session_id, "session_id", "save_session")
        if "session" in (state.get(DEGRADED_KEY) or ()):
            # This turn's session was never read: writing it would replace the stored context
            # with one built on an empty session.
            self._count_degradation("session", "save")
            return {}
        try:
            await self._manager.session_store.save(ids.user_id, session_id, dict(state.get("session") or {}))
        except BackendUnavailableError as exc:
            self._degraded("session", "save", exc)
            return _flags(state, {"session": True})
        return {}

    # -- long-term tier -----------------------------------------------------------------

    async def _recall(
        self, state: dict[str, Any], ids: TurnIds, config: RunnableConfig, query: str | None
    ) -> tuple[Update, bool]:
        """Profile, facts (recalled for ``query``) and the state's version, and whether they were
        served degraded (the database down: no profile or facts; only where the thread's owner
        was verified without it)."""
        try:
            context = await self._manager.long_term_store.load_context(ids.user_id, ids.thread_id, query)
        except BackendUnavailableError as exc:
            checkpointer = (config.get("configurable") or {}).get(CONFIG_KEY_CHECKPOINTER)
            if checkpointer is not None and checkpointer is not self._manager.checkpointer:
                raise  # only the manager's checkpointer verified the thread's owner without this read
            self._degraded("long_term", "load", exc)
            return {**await self._migrated(state, ids, config), "profile": {}, "facts": []}, True
        if context.thread_owner is not None and context.thread_owner != ids.user_id:
            raise OwnershipError(f"thread {ids.thread_id!r} belongs to another user")
        return {
            **await self._migrated(state, ids, config),
            "profile": context.profile.document,
            "facts": Fact.dump_json(context.facts),
        }, False

    async def _load_long_term(self, state: dict[str, Any], ids: TurnIds, config: RunnableConfig) -> Update:
        query = _last_human_text(_messages(state, "load_long_term"), "load_long_term")
        update, degraded = await self._recall(state, ids, config, query)
        return {**update, **_flags(state, {"long_term": degraded})}

    async def _migrated(self, state: dict[str, Any], ids: TurnIds, config: RunnableConfig) -> Update:
        """The state's version, and what migration changes when the state is old.

        ``manager.checkpointer`` brings a thread forward before the graph sees it; this covers
        graphs compiled with another checkpointer (or none), as far as their state keys reach.
        """
        current = self._manager.config.state.version
        version = state.get("memory_version")
        if not isinstance(version, int) or version == current:
            return {"memory_version": current}
        subject = f"thread {ids.thread_id!r}"
        if version > current:
            raise StateSchemaError(
                f"{subject} is at state version {version}, newer than this code's {current}: deploy "
                "the newer code (state versions only move forward)"
            )
        checkpointer = (config.get("configurable") or {}).get(CONFIG_KEY_CHECKPOINTER)
        if checkpointer is not None and checkpointer is self._manager.checkpointer:
            # Our checkpointer migrates before the graph runs; an old state here would be
            # migrated from what this graph can see, which may miss renamed keys: refuse.
            raise StateSchemaError(
                f"{subject} reached the load node at state version {version}, not {current}"
            )
        migrated = await self._manager.state_migrator.migrate(dict(state), version, current, subject=subject)
        return {key: value for key, value in migrated.items() if state.get(key) != value} | {
            "memory_version": current
        }

    async def _save_long_term(self, state: dict[str, Any], ids: TurnIds, config: RunnableConfig) -> Update:
        thread_id = _require(ids.thread_id, "thread_id", "save_long_term")
        messages = _messages(state, "save_long_term")
        new = _messages_since(messages, state.get("memory_cursor"), "save_long_term")
        # LangGraph maps each namespace to the checkpoint this step started from; ours is last.
        checkpoint_map = (config.get("configurable") or {}).get("checkpoint_map") or {}
        checkpoint_id = next(reversed(checkpoint_map.values()), None)
        provenance = Provenance(thread_id=thread_id, checkpoint_id=checkpoint_id)
        turn = Turn(ids, provenance, new, known_facts=state.get("facts") or ())
        problems = await self._manager.learner.learn(turn)
        update: Update = {"memory_errors": problems}
        if new:
            update["memory_cursor"] = new[-1].id
        return update

    # -- all tiers ----------------------------------------------------------------------

    async def _load(self, state: dict[str, Any], ids: TurnIds, config: RunnableConfig) -> Update:
        # Both reads go out at once; an ownership failure on either discards both results. The
        # recall runs in this task and only the session read gets a task of its own (a gather
        # would make two: about 7 us of Python each). The message is read first: a state the
        # load cannot read fails before either tier is touched.
        query = _last_human_text(_messages(state, "load_memory"), "load_memory")
        reading = asyncio.get_running_loop().create_task(self._read_session(ids))
        try:
            recalled, long_term_down = await self._recall(state, ids, config, query)
        except Exception:
            # As a gather of both did: wait for the session read; its error comes first.
            (session_result,) = await asyncio.gather(reading, return_exceptions=True)
            if isinstance(session_result, BaseException):
                raise session_result from session_result.__cause__  # its own cause, as it was
            raise
        except BaseException:  # cancelled (or interrupted): so is the session read
            reading.cancel()
            raise
        session, session_down = await reading
        return {
            **session,
            **recalled,
            **_flags(state, {"session": session_down, "long_term": long_term_down}),
        }

    async def _save(self, state: dict[str, Any], ids: TurnIds, config: RunnableConfig) -> Update:
        # Long-term first: it verifies the thread's owner before the session is written. Its
        # failure fails the turn (facts are never dropped) and leaves the session unwritten.
        update = await self._save_long_term(state, ids, config)
        return {**update, **await self._save_session(state, ids, config)}
