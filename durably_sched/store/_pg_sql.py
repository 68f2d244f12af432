"""PostgreSQL store: every SQL statement the hot paths send, in one reviewable place.

Parameters are positional (``$1``...), as asyncpg sends them; each constant says what it expects.
Names, statuses and column lists shared with the SQLite store come from :mod:`.rows`.
"""

from __future__ import annotations

import re

from .rows import ACTIVE_SQL, HELD_SQL, RUN_COLUMNS, columns

CHANNEL = "durably_sched_runs"
# Advisory locks use the two-int form: (namespace, key). The namespace keeps them apart from other
# applications' locks on the same database ("dura" in ASCII).
LOCK_NAMESPACE = 0x64757261
MIGRATION_LOCK = 0  # (LOCK_NAMESPACE, 0): one migration at a time per database
KEY_LOCK_NAMESPACE = LOCK_NAMESPACE + 1  # (.., hashtext(concurrency_key))
SCHEDULE_LOCK_NAMESPACE = LOCK_NAMESPACE + 2  # (.., hashtext(schedule))
DEFAULT_POOL_MAX = 10
CONNECT_TIMEOUT = 10.0
LISTENER_CHECK_INTERVAL = 30.0
SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")

RUN_SELECT = columns(RUN_COLUMNS)
NOTIFY = f"pg_notify('{CHANNEL}', job_name)"

# Logs travel as five parallel arrays; WITH ORDINALITY keeps their order in the id sequence.
LOGS_FROM = (
    "unnest($3::text[], $4::text[], $5::text[], $6::json[], $7::timestamptz[]) "
    "WITH ORDINALITY AS l(step_name, level, message, data, created_at, ord)"
)

INSERT_RUNS = f"""
WITH ins AS (
    INSERT INTO runs (id, job_name, status, input, idempotency_key, concurrency_key, labels, schedule_name,
                      retry_policy, timeout)
    SELECT n.id, n.job_name, 'pending', n.input, n.idempotency_key, n.concurrency_key, n.labels,
           n.schedule_name, n.retry_policy, n.timeout
    FROM unnest($1::text[], $2::text[], $3::json[], $4::text[], $5::text[], $6::json[], $7::text[],
                $8::json[], $9::float8[])
         WITH ORDINALITY AS n(id, job_name, input, idempotency_key, concurrency_key, labels,
                              schedule_name, retry_policy, timeout, ord)
    ORDER BY n.ord
    ON CONFLICT DO NOTHING
    RETURNING {RUN_SELECT}
)
SELECT {RUN_SELECT}, {NOTIFY} FROM ins
"""

# Pending (and past its retry backoff), or running under an expired lease. ``r`` is the run. Only
# pending runs have a not_before (a claim clears it).
CLAIMABLE = (
    "(r.status = 'pending' OR r.lease_expires_at < now()) AND (r.not_before IS NULL OR r.not_before <= now())"
)

# A keyed run is blocked by another active run of its key that is older, or that holds a live
# lease (same rule as sqlite.py). ``r`` is the candidate.
KEY_BLOCKED = f"""
    SELECT 1 FROM runs o
    WHERE o.concurrency_key = r.concurrency_key AND o.concurrency_key IS NOT NULL
      AND o.status IN {ACTIVE_SQL} AND o.seq <> r.seq
      AND (o.seq < r.seq OR (o.status = 'running' AND o.lease_expires_at >= now()))
"""

CLAIM_CANDIDATES = f"""
WITH c AS MATERIALIZED (
    SELECT r.seq, r.concurrency_key, r.worker_id FROM runs r
    WHERE r.status IN {ACTIVE_SQL} AND r.job_name = ANY($1::text[]) {{only}}
      AND {CLAIMABLE}
      AND (r.concurrency_key IS NULL OR NOT EXISTS ({KEY_BLOCKED}))
    ORDER BY r.seq
    LIMIT $2
    FOR UPDATE OF r SKIP LOCKED
)
SELECT seq, worker_id, (concurrency_key IS NULL
             OR pg_try_advisory_xact_lock({KEY_LOCK_NAMESPACE}, hashtext(concurrency_key))) AS free
FROM c ORDER BY seq
"""

CLAIM_UPDATE = f"""
UPDATE runs r SET status = 'running', generation = r.generation + 1, worker_id = $2,
    lease_expires_at = clock_timestamp() + make_interval(secs => $3),
    started_at = COALESCE(r.started_at, now()), attempt = r.attempt + 1, not_before = NULL,
    updated_at = now()
WHERE r.seq = ANY($1::bigint[]) AND r.status IN {ACTIVE_SQL}
  AND {CLAIMABLE}
  AND (r.concurrency_key IS NULL OR NOT EXISTS ({KEY_BLOCKED}))
RETURNING r.seq, {columns(RUN_COLUMNS, "r.")}
"""

CHECKPOINT = f"""
WITH run AS (
    SELECT id FROM runs
    WHERE id = $1 AND generation = $2 AND status IN {HELD_SQL}
    FOR UPDATE
), step AS (
    INSERT INTO steps (run_id, name, idx, output, started_at, completed_at, generation)
    SELECT run.id, $8::text, $9::integer, $10::text, $11::timestamptz, $12::timestamptz, $2 FROM run
    ON CONFLICT DO NOTHING
    RETURNING run_id
), upd AS (
    UPDATE runs SET step_count = step_count + 1, updated_at = now()
    WHERE id = (SELECT run_id FROM step)
    RETURNING status
), lg AS (
    INSERT INTO logs (run_id, step_name, level, message, data, created_at)
    SELECT $1, l.step_name, l.level, l.message, l.data, l.created_at FROM {LOGS_FROM}
    WHERE EXISTS (SELECT 1 FROM upd)
    ORDER BY l.ord
)
SELECT status FROM upd
"""

CHECKPOINT_REPLAYED = f"""
SELECT r.status FROM runs r JOIN steps s ON s.run_id = r.id
WHERE r.id = $1 AND r.generation = $2 AND r.status IN {HELD_SQL}
  AND s.name = $3 AND s.generation = $2
"""


def fenced_sql(assignments: str, statuses: str, notify: bool = False) -> str:
    return f"""
WITH upd AS (
    UPDATE runs SET {assignments}, updated_at = now()
    WHERE id = $1 AND generation = $2 AND status IN {statuses}
    RETURNING status, job_name
), lg AS (
    INSERT INTO logs (run_id, step_name, level, message, data, created_at)
    SELECT $1, l.step_name, l.level, l.message, l.data, l.created_at FROM {LOGS_FROM}
    WHERE EXISTS (SELECT 1 FROM upd)
    ORDER BY l.ord
)
SELECT status{", " + NOTIFY if notify else ""} FROM upd
"""


SET_PROGRESS = fenced_sql("progress_current = $8, progress_total = $9, progress_message = $10", HELD_SQL)
APPEND_LOGS = fenced_sql("generation = generation", HELD_SQL)
COMPLETE = fenced_sql(
    "status = 'completed', output = $8::json, completed_at = now(), lease_expires_at = NULL, "
    "error = NULL, failed_step_name = NULL",
    "('running')",
)
FAIL = fenced_sql(
    "status = 'failed', error = $8, failed_step_name = $9, traceback = $10, completed_at = now(), "
    "lease_expires_at = NULL, failed_attempts = failed_attempts + 1",
    "('running')",
)
RETRY_LATER = fenced_sql(
    "status = 'pending', error = $8, failed_step_name = $9, traceback = $10, "
    "not_before = clock_timestamp() + make_interval(secs => $11), lease_expires_at = NULL, "
    "failed_attempts = failed_attempts + 1",
    "('running')",
)
RELEASE = fenced_sql(
    "status = 'pending', worker_id = NULL, lease_expires_at = NULL", "('running')", notify=True
)

RENEW = f"""
UPDATE runs r SET lease_expires_at = CASE WHEN r.status = 'running'
        THEN clock_timestamp() + make_interval(secs => $3) ELSE r.lease_expires_at END
FROM unnest($1::text[], $2::bigint[]) AS l(id, generation)
WHERE r.id = l.id AND r.generation = l.generation AND r.status IN {HELD_SQL}
RETURNING r.id, r.status
"""

# The same, with the worker registry's heartbeat in the same statement ($4 worker id, $5 runs held).
RENEW_WITH_BEAT = f"""
WITH beat AS (
    UPDATE workers SET heartbeat_at = clock_timestamp(), runs_held = $5 WHERE id = $4
)
{RENEW.strip()}
"""

BEAT = "UPDATE workers SET heartbeat_at = clock_timestamp(), runs_held = $2 WHERE id = $1 RETURNING 1"

UPSERT_CURSOR = """
INSERT INTO schedule_cursors AS c (schedule, last_fire_time) VALUES ($1, $2)
ON CONFLICT (schedule) DO UPDATE SET last_fire_time = GREATEST(c.last_fire_time, EXCLUDED.last_fire_time)
RETURNING last_fire_time
"""
