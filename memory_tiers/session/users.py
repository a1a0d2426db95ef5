"""Everything the session tier holds about one user: export it, or forget it.

A user's keys share the ``{user_id}`` hash tag and are found with one SCAN pattern (the id is
glob-escaped, so it matches no other user's keys). Two kinds of entries live outside that tag:
the owner claims of the user's session ids, and the user's members of the expiry index.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from memory_tiers.errors import OwnershipError
from memory_tiers.session.keys import SessionKeys
from memory_tiers.session.records import SessionRecord, decode

_BATCH = 500  # keys per MGET / DEL
# Entries one SCAN or ZSCAN call looks at (Redis' default is 10): finding a user's keys scans the
# keyspace, and finding their expiry entries the index of every user's sessions.
_SCAN_COUNT = 1000
# Longer than any sweeper takes between reading a shadow and deleting it.
FORGOTTEN_TTL_SECONDS = 300


async def _user_keys(client: aioredis.Redis, keys: SessionKeys, user_id: str) -> list[str]:
    """The user's keys, but for the tombstone `forget_user` leaves (it holds no data)."""
    tombstone = keys.forgotten(user_id)
    return [
        key
        async for key in client.scan_iter(match=keys.user_pattern(user_id), count=_SCAN_COUNT)
        if key != tombstone
    ]


def _batches(items: list[str]) -> list[list[str]]:
    return [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]


async def export_user(client: aioredis.Redis, keys: SessionKeys, user_id: str) -> list[SessionRecord]:
    """The user's live sessions, then the expired ones whose context is not archived yet
    (``expired=True``), each newest first. Reads refresh no TTL."""
    found: dict[tuple[str, str], str] = {}
    for key in await _user_keys(client, keys, user_id):
        kind = keys.user_key_kind(user_id, key)
        if kind is not None:
            found[kind] = key
    live = {sid for kind, sid in found if kind == "session"}
    # A live session's shadow is a copy of it; only shadows of expired sessions are exported.
    wanted = [(kind, sid) for kind, sid in found if kind == "session" or sid not in live]
    records: list[SessionRecord] = []
    for batch in _batches([found[item] for item in wanted]):
        # One user's keys share a slot, so MGET is valid on Cluster too.
        for key, raw in zip(batch, await client.mget(batch), strict=True):
            kind, session_id = keys.user_key_kind(user_id, key) or ("", "")
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                records.append(decode(user_id, session_id, raw, expired=kind != "session"))
            except (json.JSONDecodeError, OwnershipError):
                continue  # not a document this user owns: nothing to export
    return sorted(records, key=lambda r: (r.expired, -r.updated_at, r.session_id))


async def forget_user(client: aioredis.Redis, keys: SessionKeys, user_id: str) -> int:
    """Delete every session key of the user, the owner claims the user still holds and the
    user's expiry index entries; returns how many keys and entries were removed (0 when
    nothing was left, so it can be rerun after a failure).

    Claims go first and the user's own keys (which name the session ids) after, so a run that
    stops halfway leaves what the next run needs to find the rest.
    """
    user_keys = await _user_keys(client, keys, user_id)
    index = keys.expiry_index()
    members = [
        member
        async for member, _ in client.zscan_iter(
            index, match=keys.expiry_member_pattern(user_id), count=_SCAN_COUNT
        )
        if keys.parse_expiry_member(member)[0] == user_id
    ]
    session_ids = {keys.parse_expiry_member(member)[1] for member in members}
    session_ids |= {kind[1] for key in user_keys if (kind := keys.user_key_kind(user_id, key))}
    session_ids |= set(await client.zrange(keys.index(user_id), 0, -1))
    removed = 0
    for session_id in sorted(session_ids):
        removed += await _release_claim(client, keys.claim(session_id), user_id)
    for batch in _batches(user_keys):
        removed += int(await client.delete(*batch))
    for batch in _batches(members):
        removed += int(await client.zrem(index, *batch))
    # Last, before the caller deletes the user's long-term rows: a sweeper that read one of the
    # user's shadows before it went sees this and takes back the archive it wrote.
    await client.set(keys.forgotten(user_id), "1", ex=FORGOTTEN_TTL_SECONDS)
    return removed


async def _release_claim(client: aioredis.Redis, claim: str, user_id: str) -> int:
    """Delete ``claim`` if ``user_id`` holds it (compare-and-delete under WATCH)."""

    async def release(pipe: Pipeline) -> int:
        if await pipe.get(claim) != user_id:
            return 0
        pipe.multi()
        pipe.delete(claim)
        return 1

    return int(await client.transaction(release, claim, value_from_callable=True))
