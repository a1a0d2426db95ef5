"""Versioned profile documents: bringing stored profiles to the current schema version.

Each profile row records the shape of its document (``schema_version``). When the store reads
an older one it migrates the document in Python (the configured `StateMigrator`) and writes it
back with a compare-and-set UPDATE that only lands if the row is still what was read. So two
processes loading the same old profile migrate it once, an old-code writer's patch is never
overwritten, and a failing migration writes nothing. `migrate_profiles` does the same for every
profile, walking the table in keyset batches; a rerun skips what is already current, so an
interrupted run is resumed by running it again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import case, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_tiers.config import ProfileConfig
from memory_tiers.errors import ConfigError, UsageError
from memory_tiers.long_term.schema import profiles
from memory_tiers.state.migrators import StateMigrationError, StateMigrator, load_migrator
from memory_tiers.translate import translate_errors

if TYPE_CHECKING:
    from memory_tiers.long_term.store import LongTermStore

TIER = "long_term"


def profile_migrator_for(config: ProfileConfig, migrator: StateMigrator | None = None) -> StateMigrator:
    """``migrator`` (or, when None, the one ``long_term.profile.migrators`` / ``.model`` name),
    checked to reach ``long_term.profile.version``.

    Raises:
        ConfigError: something cannot be imported, or a step is missing.
    """
    key = "long_term.profile"
    if migrator is None:
        return load_migrator(migrators=config.migrators, model=config.model, version=config.version, key=key)
    try:
        migrator.check(config.version)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}".replace(": state migrators:", ":")) from None
    return migrator


class StoredProfile(NamedTuple):
    """A profile row as read: its document, patch counter and document schema version."""

    document: dict[str, Any]
    version: int
    schema_version: int


PROFILE_COLUMNS = (profiles.c.document, profiles.c.version, profiles.c.schema_version)


def profile_subject(user_id: str) -> str:
    """How migration errors name a profile."""
    return f"profile of {user_id!r}"


async def read_profile(conn: AsyncConnection, user_id: str) -> StoredProfile | None:
    """The user's profile row, or None when there is none."""
    row = (await conn.execute(select(*PROFILE_COLUMNS).where(profiles.c.user_id == user_id))).first()
    return None if row is None else StoredProfile(row.document, row.version, row.schema_version)


async def bring_forward(
    conn: AsyncConnection,
    migrator: StateMigrator,
    current_version: int,
    user_id: str,
    stored: StoredProfile | None,
) -> StoredProfile | None:
    """Migrate ``stored`` to ``current_version`` if it is older, and write it back.

    The UPDATE is a compare-and-set on the schema version and the patch counter read: if another
    writer got there first (usually: another process migrated the same profile), the row is read
    again and, if still old, migrated again. Profiles at or beyond the current version are
    returned as they are: a newer document is never taken back.

    Returns:
        The profile as stored afterwards (None if the row is gone).

    Raises:
        StateMigrationError: a step or the model's validation failed; nothing was written.
    """
    # Ends: each turn either writes, or saw the row change under it (someone else's progress).
    while stored is not None and stored.schema_version < current_version:
        document = await migrator.migrate(
            stored.document, stored.schema_version, current_version, subject=profile_subject(user_id)
        )
        written = (
            await conn.execute(
                update(profiles)
                .where(
                    profiles.c.user_id == user_id,
                    profiles.c.schema_version == stored.schema_version,
                    profiles.c.version == stored.version,
                )
                .values(
                    document=document,
                    schema_version=current_version,
                    version=profiles.c.version + 1,
                    updated_at=datetime.now(UTC),
                )
                .returning(profiles.c.version)
            )
        ).scalar()
        if written is not None:
            return StoredProfile(document, written, current_version)
        stored = await read_profile(conn, user_id)
    return stored


@dataclass
class ProfileMigrationReport:
    """What a bulk profile migration found and did.

    Attributes:
        version: the schema version profiles were brought to (``long_term.profile.version``).
        before: profiles per schema version when the walk reached them.
        after: profiles per schema version after it (for a dry run: what it would leave).
        migrated: profiles brought forward (for a dry run: that would be).
        failed: user id -> why that profile was left as it was.
        dry_run: whether anything was written.
    """

    version: int
    before: Counter[int] = field(default_factory=Counter)
    after: Counter[int] = field(default_factory=Counter)
    migrated: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False


async def migrate_profiles(
    store: LongTermStore,
    *,
    dry_run: bool = False,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> ProfileMigrationReport:
    """Bring every profile of ``store`` to its current schema version (see
    `LongTermStore.migrate_profiles`)."""
    if batch_size < 1:
        raise UsageError(f"migrate_profiles: batch_size must be at least 1, got {batch_size}")
    current = store.profile_version
    report = ProfileMigrationReport(version=current, dry_run=dry_run)
    # Only old documents are fetched: current profiles are counted, not read.
    old_document = case((profiles.c.schema_version < current, profiles.c.document), else_=null())
    last: str | None = None
    while True:
        stmt = select(profiles.c.user_id, profiles.c.version, profiles.c.schema_version, old_document)
        if last is not None:
            stmt = stmt.where(profiles.c.user_id > last)
        stmt = stmt.order_by(profiles.c.user_id).limit(batch_size)
        with translate_errors(TIER, store.masked_url):
            async with store.engine.connect() as conn:
                batch = (await conn.execute(stmt)).all()
        if not batch:
            return report
        for user_id, version, schema_version, document in batch:
            report.before[schema_version] += 1
            left = await _migrate_one(
                store, report, user_id, StoredProfile(document, version, schema_version)
            )
            if left is not None:
                report.after[left] += 1
            if progress is not None:
                progress(1)
        last = batch[-1].user_id


async def _migrate_one(
    store: LongTermStore, report: ProfileMigrationReport, user_id: str, stored: StoredProfile
) -> int | None:
    """Migrate one profile all-or-nothing; returns the schema version it is left at."""
    current = report.version
    if stored.schema_version >= current:
        return stored.schema_version
    try:
        if report.dry_run:
            await store.profile_migrator.migrate(
                stored.document, stored.schema_version, current, subject=profile_subject(user_id)
            )
            left: int | None = current
        else:
            with translate_errors(TIER, store.masked_url):
                async with store.engine.begin() as conn:
                    after = await bring_forward(conn, store.profile_migrator, current, user_id, stored)
            left = None if after is None else after.schema_version
    except StateMigrationError as exc:
        report.failed[user_id] = str(exc)
        return stored.schema_version
    if left == current:
        report.migrated += 1
    return left
