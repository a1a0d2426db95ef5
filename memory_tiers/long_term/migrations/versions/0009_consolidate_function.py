"""PostgreSQL: a turn's consolidation as one function, ``mt_consolidate``, so a save is one statement.

A save sent BEGIN, the lock and replay check, the fact upserts and COMMIT: four round trips for
work whose every step depends on the one before. ``mt_consolidate(user, now, replayable, facts)``
runs the same steps on the server, in the caller's transaction (alone, its statement commits by
itself), and returns the ids of the facts the candidates landed in:

1. take the user's write lock, ``pg_advisory_xact_lock(0x6D74, hashtext(user))``; each statement
   after it takes a fresh snapshot (a function is VOLATILE unless declared otherwise), so it sees
   what the writer it waited for committed;
2. leave out the candidates this turn has observed already, when ``replayable`` (a replay: a
   crash after the commit, then a resume; it must not bring back a value a later turn replaced);
3. upsert each fact into the current facts (``ON CONFLICT`` on ``ux_mt_facts_current``) and
   insert its observation keyed by ``observation_key`` (``ON CONFLICT DO NOTHING``);
4. corroborate the known facts newly observed: ``confidence = 1 - (1 - old) * (1 - new)``;
5. close the other current values of each new, unflagged single-valued fact (``valid_to``,
   ``superseded_by``), which stay as history.

``facts`` is a JSON array of the candidates' rows (keys as in the record type below). SQLite keeps
these steps in Python (``memory_tiers.long_term.consolidate``); the tests run both on the same
turns. Downgrading drops the function (the code of 0008 does not call it).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CONSOLIDATE = r"""
CREATE FUNCTION mt_consolidate(p_user text, p_now timestamptz, p_replayable boolean, p_facts jsonb)
RETURNS text[]
LANGUAGE plpgsql
AS $function$
DECLARE
    landed_ids text[];
    corroborated_ids text[];
    corroborated_confidences float8[];
    single_ids text[];
    single_subjects text[];
    single_attributes text[];
BEGIN
    PERFORM pg_advisory_xact_lock(28020, hashtext(p_user));  -- 28020 = 0x6D74, "mt"

    WITH incoming AS (
        SELECT * FROM jsonb_to_recordset(p_facts) AS c(
            id text, subject text, attribute text, value text, value_norm text, cardinality text,
            confidence float8, thread_id text, checkpoint_id text, message_id text,
            flagged boolean, embedding json, search_text text, observation_key text
        )
    ),
    fresh AS (
        -- A lateral probe a candidate (its LIMIT keeps it from being flattened into a join):
        -- one look-up of the (user_id, observation_key) index each, whatever the user's history
        -- holds. Written as NOT EXISTS, it was planned as a hash of all the user's observations.
        SELECT c.* FROM incoming AS c
        LEFT JOIN LATERAL (
            SELECT true AS seen FROM mt_fact_observations AS o JOIN mt_facts AS f ON f.id = o.fact_id
            WHERE p_replayable AND o.user_id = p_user AND o.observation_key = c.observation_key
              AND f.subject = c.subject AND f.attribute = c.attribute AND f.value_norm = c.value_norm
            LIMIT 1
        ) AS replayed ON true
        WHERE replayed.seen IS NULL
    ),
    landed AS (
        INSERT INTO mt_facts AS f (
            id, user_id, subject, attribute, value, value_norm, cardinality, confidence,
            thread_id, checkpoint_id, message_id, created_at, updated_at, valid_from,
            flagged, embedding, search_text
        )
        SELECT id, p_user, subject, attribute, value, value_norm, cardinality, confidence,
               thread_id, checkpoint_id, message_id, p_now, p_now, p_now,
               flagged, embedding, search_text
        FROM fresh
        ON CONFLICT (user_id, subject, attribute, value_norm) WHERE superseded_by IS NULL
        -- A fact stored before embeddings were configured gets its vector when seen again.
        DO UPDATE SET updated_at = excluded.updated_at, embedding = coalesce(excluded.embedding, f.embedding)
        RETURNING f.id, f.subject, f.attribute, f.value_norm, f.cardinality, f.flagged
    ),
    observed AS (
        INSERT INTO mt_fact_observations (
            fact_id, observation_key, user_id, thread_id, checkpoint_id, message_id, confidence, observed_at
        )
        SELECT l.id, c.observation_key, p_user, c.thread_id, c.checkpoint_id, c.message_id,
               c.confidence, p_now
        FROM landed AS l JOIN fresh AS c USING (subject, attribute, value_norm)
        ON CONFLICT DO NOTHING
        RETURNING fact_id, confidence
    ),
    outcome AS (
        SELECT l.id, l.subject, l.attribute, l.cardinality, l.flagged,
               l.id = c.id AS created, o.confidence AS observed
        FROM landed AS l
        JOIN fresh AS c USING (subject, attribute, value_norm)
        LEFT JOIN observed AS o ON o.fact_id = l.id
    )
    SELECT array_agg(id),
           array_agg(id) FILTER (WHERE NOT created AND observed IS NOT NULL),
           array_agg(observed) FILTER (WHERE NOT created AND observed IS NOT NULL),
           array_agg(id) FILTER (WHERE created AND cardinality = 'one' AND NOT flagged),
           array_agg(subject) FILTER (WHERE created AND cardinality = 'one' AND NOT flagged),
           array_agg(attribute) FILTER (WHERE created AND cardinality = 'one' AND NOT flagged)
    INTO landed_ids, corroborated_ids, corroborated_confidences,
         single_ids, single_subjects, single_attributes
    FROM outcome;

    IF corroborated_ids IS NOT NULL THEN
        UPDATE mt_facts AS f
        SET confidence = 1.0 - (1.0 - f.confidence) * (1.0 - n.confidence), updated_at = p_now
        FROM unnest(corroborated_ids, corroborated_confidences) AS n(id, confidence)
        WHERE f.id = n.id;
    END IF;

    IF single_ids IS NOT NULL THEN
        UPDATE mt_facts AS f
        SET superseded_by = s.id, valid_to = p_now
        FROM unnest(single_ids, single_subjects, single_attributes) AS s(id, subject, attribute)
        WHERE f.user_id = p_user AND f.subject = s.subject AND f.attribute = s.attribute
          AND f.superseded_by IS NULL AND f.id <> s.id;
    END IF;

    RETURN coalesce(landed_ids, '{}');
END
$function$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CONSOLIDATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION mt_consolidate(text, timestamptz, boolean, jsonb)")
