"""PostgreSQL store: every SQL statement the hot paths send, in one reviewable place.

Parameters are positional (``$1``...), as asyncpg sends them; each constant says what it expects.
Names, statuses and column lists shared with the SQLite store come from :mod:`.rows`.
"""

from __future__ import annotations

import re
from typing import Any

from ._common import prefix_upper_bound
from .rows import ACTIVE_SQL, HELD_SQL, RUN_COLUMNS, STATE_COLUMNS, columns

CHANNEL = "durably_sched_runs"
# Advisory locks use the two-int form: (namespace, key). The namespace keeps them apart from other
# applications' locks on the same database ("dura" in ASCII).
LOCK_NAMESPACE = 0x64757261
MIGRATION_LOCK = 0  # (LOCK_NAMESPACE, 0): one migration at a time per database
KEY_LOCK_NAMESPACE = LOCK_NAMESPACE + 1  # (.., hashtext(concurrency_key))
SCHEDULE_LOCK_NAMESPACE = LOCK_NAMESPACE + 2  # (.., hashtext(schedule))
COALESCE_LOCK_NAMESPACE = LOCK_NAMESPACE + 3  # (.., hashtext(job_name || US || concurrency_key))
DEFAULT_POOL_MAX = 10
CONNECT_TIMEOUT = 10.0
LISTENER_CHECK_INTERVAL = 30.0
SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")

RUN_SELECT = columns(RUN_COLUMNS)
STATE_SELECT = columns(STATE_COLUMNS)
NOTIFY = f"pg_notify('{CHANNEL}', job_name)"
SCHEDULES_CHANNEL = "durably_sched_schedules"
RUN_EVENTS_CHANNEL = "durably_sched_run_events"
"""Notified (empty payload) by every transition's trigger (migration 0012): run feeds wake up."""
"""Notified (with the newest seq) on the commit of every change of a schedule (_pg_schedule_defs.py)."""

# Logs travel as five parallel arrays; WITH ORDINALITY keeps their order in the id sequence.
LOGS_FROM = (
    "unnest($3::text[], $4::text[], $5::text[], $6::json[], $7::timestamptz[]) "
    "WITH ORDINALITY AS l(step_name, level, message, data, created_at, ord)"
)

INSERT_RUNS = f"""
WITH ins AS (
    INSERT INTO runs (id, job_name, status, input, idempotency_key, concurrency_key, labels, schedule_name,
                      retry_policy, timeout, schedule_version)
    SELECT n.id, n.job_name, 'pending', n.input, n.idempotency_key, n.concurrency_key, n.labels,
           n.schedule_name, n.retry_policy, n.timeout, n.schedule_version
    FROM unnest($1::text[], $2::text[], $3::json[], $4::text[], $5::text[], $6::json[], $7::text[],
                $8::json[], $9::float8[], $10::int[])
         WITH ORDINALITY AS n(id, job_name, input, idempotency_key, concurrency_key, labels,
                              schedule_name, retry_policy, timeout, schedule_version, ord)
    ORDER BY n.ord
    ON CONFLICT DO NOTHING
    RETURNING seq, id, job_name, labels, created_at
), lab AS (  -- the labels index of run lists (written here only, never by checkpoints); the label
    --  `schedule` is the schedule_name column (_runs_query.SCHEDULE_LABEL)
    INSERT INTO run_labels (key, value, seq)
    SELECT l.key, l.value, ins.seq FROM ins, json_each_text(ins.labels) AS l WHERE l.key <> 'schedule'
)
SELECT id, created_at, {NOTIFY} FROM ins
"""
"""The runs of the arrays that were inserted: their ids and creation times only (their records are
the values sent: rows.new_run_record); a conflict inserts nothing and returns no row."""

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

# The runs a claim may take ($1 job names; ``{only}`` narrows to given run ids), locked: the body
# of the ``c`` CTE of both claim statements below. The limit is written into the text (``{limit}``,
# an int), not sent as a parameter: with a parameter, a prepared statement's generic plan cannot
# know it and costs the index walk as if it read 10 % of the active runs, so the server plans every
# claim anew once the backlog is large (~0.5-1.5 ms of planning at 10^5 pending runs). With the
# number in the text each limit is its own prepared statement, whose generic plan is the cheap one.
_CANDIDATES = f"""\
    SELECT r.seq, r.concurrency_key, r.worker_id FROM runs r
    WHERE r.status IN {ACTIVE_SQL} AND r.job_name = ANY($1::text[]) {{only}}
      AND {CLAIMABLE}
      AND (r.concurrency_key IS NULL OR NOT EXISTS ({KEY_BLOCKED}))
    ORDER BY r.seq
    LIMIT {{limit:d}}
    FOR UPDATE OF r SKIP LOCKED
"""

CLAIM_CANDIDATES = f"""
WITH c AS MATERIALIZED (
{_CANDIDATES})
SELECT seq, worker_id, (concurrency_key IS NULL
             OR pg_try_advisory_xact_lock({KEY_LOCK_NAMESPACE}, hashtext(concurrency_key))) AS free
FROM c ORDER BY seq
"""

CLAIM_UPDATE = f"""
UPDATE runs r SET status = 'running', generation = r.generation + 1, worker_id = $2,
    lease_expires_at = clock_timestamp() + make_interval(secs => $3),
    started_at = COALESCE(r.started_at, now()), attempt = r.attempt + 1, not_before = NULL,
    attempt_started_at = now(), updated_at = now()
WHERE r.seq = ANY($1::bigint[]) AND r.status IN {ACTIVE_SQL}
  AND {CLAIMABLE}
  AND (r.concurrency_key IS NULL OR NOT EXISTS ({KEY_BLOCKED}))
RETURNING r.seq, {columns(RUN_COLUMNS, "r.")}
"""

# The claim in one statement (autocommit: one round trip, one commit). The candidates are those of
# CLAIM_CANDIDATES, locked the same way; the ones without a concurrency key are claimed right here
# (the key rule does not concern them, so no re-check in a later snapshot is needed). Keyed
# candidates are only counted: when there are some, claim() goes on with the two-statement
# transaction above for them. Always one row: ``keyed`` and, when something was claimed, its columns
# (a run per row). $1 job names, $2 worker id, $3 lease seconds[, $4 run ids]; ``{limit}``.
CLAIM_ONE_STATEMENT = f"""
WITH c AS MATERIALIZED (
{_CANDIDATES}), upd AS (
    UPDATE runs r SET status = 'running', generation = r.generation + 1, worker_id = $2,
        lease_expires_at = clock_timestamp() + make_interval(secs => $3),
        started_at = COALESCE(r.started_at, now()), attempt = r.attempt + 1, not_before = NULL,
        attempt_started_at = now(), updated_at = now()
    FROM c
    WHERE r.seq = c.seq AND c.concurrency_key IS NULL
    RETURNING r.seq, c.worker_id AS previous_worker_id, {columns(RUN_COLUMNS, "r.")}
)
SELECT k.keyed, upd.* FROM (SELECT count(*) AS keyed FROM c WHERE c.concurrency_key IS NOT NULL) AS k
LEFT JOIN upd ON true
"""

# A trigger whose own process has a free worker slot: insert the run already claimed by that worker
# (generation 1, attempt 1, a lease), exactly the state a claim right after the insert would leave,
# in one statement and one commit. It is inserted claimed only if no run of the worker's jobs is
# waiting to be claimed (pending, past any not-before time), so older runs keep their turn; otherwise
# it is inserted pending and announced like any other. For runs without a concurrency key and
# without coalescing only. $1 id, $2 job name, $3 input, $4 idempotency key, $5 labels,
# $6 schedule name, $7 retry policy, $8 timeout, $9 worker id, $10 lease seconds, $11 the worker's
# job names. ``mine`` is MATERIALIZED: PostgreSQL inlines a plain CTE into each of its seven uses
# below, and then plans and runs the test seven times (decision 57).
_INSERT_CLAIMED_RUN = f"""
WITH mine AS MATERIALIZED (
    SELECT NOT EXISTS (
        SELECT 1 FROM runs w
        WHERE w.status = 'pending' AND w.job_name = ANY($11::text[])
          AND (w.not_before IS NULL OR w.not_before <= now())
    ) AS ok
), ins AS (
    INSERT INTO runs (id, job_name, status, input, idempotency_key, labels, schedule_name, retry_policy,
                      timeout, generation, worker_id, lease_expires_at, started_at, attempt,
                      attempt_started_at)
    SELECT $1, $2, CASE WHEN mine.ok THEN 'running' ELSE 'pending' END, $3::json, $4, $5::json, $6,
           $7::json, $8::float8, CASE WHEN mine.ok THEN 1 ELSE 0 END,
           CASE WHEN mine.ok THEN $9 END,
           CASE WHEN mine.ok THEN clock_timestamp() + make_interval(secs => $10) END,
           CASE WHEN mine.ok THEN now() END, CASE WHEN mine.ok THEN 1 ELSE 0 END,
           CASE WHEN mine.ok THEN now() END
    FROM mine
    ON CONFLICT DO NOTHING
    RETURNING seq, {RUN_SELECT}
)"""
_INSERT_CLAIMED_ANSWER = f"""
SELECT {RUN_SELECT}, CASE WHEN status = 'pending' THEN {NOTIFY} END FROM ins
"""
INSERT_CLAIMED = f"""{_INSERT_CLAIMED_RUN}, lab AS (
    INSERT INTO run_labels (key, value, seq)
    SELECT l.key, l.value, ins.seq FROM ins, json_each_text(ins.labels) AS l WHERE l.key <> 'schedule'
){_INSERT_CLAIMED_ANSWER}"""

# INSERT_CLAIMED for a run with nothing for the labels index (no labels, or only `schedule`): the
# same without the labels part, which costs the server a CTE scan and a json_each_text call for
# nothing.
INSERT_CLAIMED_NO_LABELS = _INSERT_CLAIMED_RUN + _INSERT_CLAIMED_ANSWER


def _fenced_step(first: int) -> str:
    """The CTEs a checkpoint starts with: the run row's step counter moved if $1/$2 still hold it
    (the UPDATE takes the row's lock and re-checks its condition on the row's latest version), and
    the step row (name, index, output, started, completed: ``$first`` on) inserted for the run it
    updated. No ``ON CONFLICT``: a step row that exists already (a replay of a checkpoint whose
    commit was not heard) makes the whole statement fail with a unique violation on
    ``steps_pkey``, counter included, which the store answers as a replay (``CHECKPOINT_REPLAYED``).
    Updating first, rather than locking with ``SELECT ... FOR UPDATE`` and updating after the
    insert, spares the server the row lock's own WAL record and a scan (~0.1 of a one-row commit)."""
    name, idx, output, started, completed = (f"${n}" for n in range(first, first + 5))
    return f"""
WITH upd AS (
    UPDATE runs SET step_count = step_count + 1, updated_at = now()
    WHERE id = $1 AND generation = $2 AND status IN {HELD_SQL}
    RETURNING id, status, attempt, step_count
), step AS (
    INSERT INTO steps (run_id, name, idx, output, started_at, completed_at, generation)
    SELECT upd.id, {name}::text, {idx}::integer, {output}::text, {started}::timestamptz,
        {completed}::timestamptz, $2 FROM upd
)"""


STEP_EXISTS = "steps_pkey"
"""The constraint a checkpoint's statement violates when its step row exists already."""

# A checkpoint's log lines carry the attempt and the step count before this step (as on SQLite,
# where they are inserted before the counter moves): the reader orders them among steps by it.
CHECKPOINT = f"""{_fenced_step(8)}, lg AS (
    INSERT INTO logs (run_id, step_name, level, message, data, created_at, attempt, step_count)
    SELECT $1, l.step_name, l.level, l.message, l.data, l.created_at, upd.attempt, upd.step_count - 1
    FROM {LOGS_FROM} CROSS JOIN upd
    ORDER BY l.ord
)
SELECT status FROM upd
"""

# CHECKPOINT for a step without log lines (the common case): the same statement without the logs
# part, which costs the server some 10-30 µs even when its arrays are empty. $1 run id,
# $2 generation, $3 name, $4 index, $5 output, $6 started, $7 completed.
CHECKPOINT_NO_LOGS = f"""{_fenced_step(3)}
SELECT status FROM upd
"""

# Several checkpoints (of concurrent runs) in one statement, so they share one commit (group
# commit, see _pg_group_commit.py). Each is fenced on its own run's generation exactly as CHECKPOINT
# is: a run no longer held by its generation is not locked, so its step is not inserted and its row
# is missing from the answer ("lost" for that checkpoint alone); a step already written (same name)
# is not inserted again. Runs are locked in id order (two batches never wait for each other in a
# cycle). $1..$7: one element per checkpoint -- run ids, generations, names, indexes, outputs,
# started, completed; $8..$14: one element per log line -- its checkpoint's run id and step name,
# then the line (step name, level, message, data, created). One row per step written: run id,
# step name, and the run's status after the write.
CHECKPOINT_BATCH = f"""
WITH cp AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::integer[], $5::text[],
                         $6::timestamptz[], $7::timestamptz[])
        AS c(run_id, generation, name, idx, output, started_at, completed_at)
), run AS (
    -- Each run's row by its id, locked, its status tested after the lock (the locked row's latest
    -- version): a status test in this WHERE would let the planner walk every held run instead.
    SELECT r.id, r.status FROM cp JOIN runs r ON r.id = cp.run_id AND r.generation = cp.generation
    ORDER BY r.id
    FOR UPDATE OF r
), step AS (
    INSERT INTO steps (run_id, name, idx, output, started_at, completed_at, generation)
    SELECT cp.run_id, cp.name, cp.idx, cp.output, cp.started_at, cp.completed_at, cp.generation
    FROM cp JOIN run ON run.id = cp.run_id
    WHERE run.status IN {HELD_SQL}
    ON CONFLICT DO NOTHING
    RETURNING run_id, name
), upd AS (
    UPDATE runs r SET step_count = r.step_count + s.n, updated_at = now()
    FROM (SELECT run_id, count(*) AS n FROM step GROUP BY run_id) AS s
    WHERE r.id = s.run_id
    RETURNING r.id, r.status
), lg AS (
    INSERT INTO logs (run_id, step_name, level, message, data, created_at, attempt, step_count)
    SELECT l.run_id, l.step_name, l.level, l.message, l.data, l.created_at, r.attempt, r.step_count
    FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::json[],
                $14::timestamptz[])
         WITH ORDINALITY AS l(run_id, of_step, step_name, level, message, data, created_at, ord)
    JOIN runs r ON r.id = l.run_id
    WHERE (l.run_id, l.of_step) IN (SELECT run_id, name FROM step)
    ORDER BY l.ord
)
SELECT step.run_id, step.name, upd.status FROM step JOIN upd ON upd.id = step.run_id
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
    INSERT INTO logs (run_id, step_name, level, message, data, created_at, attempt, step_count)
    SELECT $1, l.step_name, l.level, l.message, l.data, l.created_at, r.attempt, r.step_count
    FROM {LOGS_FROM} CROSS JOIN runs r
    WHERE r.id = $1 AND EXISTS (SELECT 1 FROM upd)
    ORDER BY l.ord
)
SELECT status{", " + NOTIFY if notify else ""} FROM upd
"""


def fenced_sql_no_logs(assignments: str, statuses: str) -> str:
    """:func:`fenced_sql` for a write without log lines: one UPDATE, without the logs part (which
    costs the server some 10-30 µs even when its arrays are empty). The assignments' parameters,
    written ``$8`` on for :func:`fenced_sql`, move down to ``$3`` on (no five log arrays before
    them)."""
    own = re.sub(
        r"\$(\d+)", lambda m: f"${int(m.group(1)) - 5}" if int(m.group(1)) >= 8 else m[0], assignments
    )
    return f"""
UPDATE runs SET {own}, updated_at = now()
WHERE id = $1 AND generation = $2 AND status IN {statuses}
RETURNING status
"""


# Several completions (of concurrent runs) in one statement, one commit (group commit, as
# CHECKPOINT_BATCH): each fenced as COMPLETE is, on its own run's generation and status running,
# runs locked in id order. A run's schedule state (the runs_schedule_finished trigger) is updated
# by this same statement. $1 run ids, $2 generations, $3 outputs (json); $4..$9: one element per
# log line -- its run id, then the line (step name, level, message, data, created). One row (id,
# status) per run completed.
COMPLETE_BATCH = """
WITH c AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::json[]) AS c(id, generation, output)
), run AS (  -- by id, status tested after the lock (as in CHECKPOINT_BATCH)
    SELECT r.id, r.status FROM c JOIN runs r ON r.id = c.id AND r.generation = c.generation
    ORDER BY r.id
    FOR UPDATE OF r
), upd AS (
    UPDATE runs r SET status = 'completed', output = c.output, completed_at = now(),
        lease_expires_at = NULL, error = NULL, failed_step_name = NULL, updated_at = now()
    FROM c JOIN run ON run.id = c.id
    WHERE r.id = c.id AND run.status = 'running'
    RETURNING r.id, r.status
), lg AS (
    INSERT INTO logs (run_id, step_name, level, message, data, created_at, attempt, step_count)
    SELECT l.run_id, l.step_name, l.level, l.message, l.data, l.created_at, r.attempt, r.step_count
    FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::json[], $9::timestamptz[])
         WITH ORDINALITY AS l(run_id, step_name, level, message, data, created_at, ord)
    JOIN runs r ON r.id = l.run_id
    WHERE l.run_id IN (SELECT id FROM upd)
    ORDER BY l.ord
)
SELECT id, status FROM upd
"""

SET_PROGRESS = fenced_sql("progress_current = $8, progress_total = $9, progress_message = $10", HELD_SQL)
APPEND_LOGS = fenced_sql("generation = generation", HELD_SQL)
_COMPLETED = (
    "status = 'completed', output = $8::json, completed_at = now(), lease_expires_at = NULL, "
    "error = NULL, failed_step_name = NULL"
)
COMPLETE = fenced_sql(_COMPLETED, "('running')")
COMPLETE_NO_LOGS = fenced_sql_no_logs(_COMPLETED, "('running')")
"""COMPLETE without log lines: $1 run id, $2 generation, $3 output."""
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

# The fire sequence's set-based statements (rules.fire_many): parallel arrays, rows in sorted order.
LOCK_SCHEDULES = """
SELECT count(pg_advisory_xact_lock($1, hashtext(s.name)))
FROM (SELECT name FROM unnest($2::text[]) WITH ORDINALITY AS n(name, ord) ORDER BY ord) AS s
"""
ADVANCE_CURSORS = """
INSERT INTO schedule_cursors AS c (schedule, last_fire_time)
SELECT n.schedule, n.fire_time FROM unnest($1::text[], $2::timestamptz[]) AS n(schedule, fire_time)
ORDER BY n.schedule
ON CONFLICT (schedule) DO UPDATE SET last_fire_time = EXCLUDED.last_fire_time
WHERE c.last_fire_time < EXCLUDED.last_fire_time
"""
_SLOTS = (
    "unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[]) AS n(schedule, fire_time, outcome, run_id)"
)
TAKE_FIRE_SLOTS = f"""
INSERT INTO fire_records (schedule, fire_time, outcome, run_id, recorded_at)
SELECT n.schedule, n.fire_time, n.outcome, n.run_id, now() FROM {_SLOTS}
ORDER BY n.schedule, n.fire_time
ON CONFLICT DO NOTHING RETURNING schedule, fire_time
"""
TAKE_PAUSED_SLOTS = f"""
UPDATE fire_records f SET outcome = n.outcome, run_id = n.run_id, recorded_at = now() FROM {_SLOTS}
WHERE f.schedule = n.schedule AND f.fire_time = n.fire_time AND f.outcome = 'paused'
RETURNING f.schedule, f.fire_time
"""
SEEN_FIRE_SLOTS = """
SELECT f.schedule, f.fire_time, f.outcome, f.run_id
FROM fire_records f JOIN unnest($1::text[], $2::timestamptz[]) AS n(schedule, fire_time)
  ON f.schedule = n.schedule AND f.fire_time = n.fire_time
"""
RECORD_FIRES = f"""
UPDATE fire_records f SET outcome = n.outcome, run_id = n.run_id FROM {_SLOTS}
WHERE f.schedule = n.schedule AND f.fire_time = n.fire_time
"""
SCHEDULES_ACTIVE = f"""
SELECT n.name FROM unnest($1::text[]) AS n(name)
WHERE EXISTS (SELECT 1 FROM runs WHERE schedule_name = n.name AND status IN {ACTIVE_SQL})
   OR EXISTS (SELECT 1 FROM runs WHERE schedule_name = n.name AND status = 'waiting')
"""
"""The schedules of ``$1`` with a run pending, running or waiting (the overlap policy treats a waiting
run as still running): the partial indexes runs_schedule_active and runs_schedule_waiting."""

UPSERT_CURSOR = """
INSERT INTO schedule_cursors AS c (schedule, last_fire_time) VALUES ($1, $2)
ON CONFLICT (schedule) DO UPDATE SET last_fire_time = GREATEST(c.last_fire_time, EXCLUDED.last_fire_time)
RETURNING last_fire_time
"""


def find_run_ids_query(prefix: str, limit: int) -> tuple[str, list[Any]]:
    """The statement of :meth:`PostgresStore.find_run_ids` and its arguments.

    ``~>=~`` and ``~<~`` compare in code point order whatever the database's collation, and are what
    the runs_id index (unique, text_pattern_ops; schema v15) answers; a range or LIKE on ``id`` with
    the ordinary operators would need the "C" collation to use an index.
    """
    upper = prefix_upper_bound(prefix)
    bound = "AND id ~<~ $3 " if upper is not None else ""
    sql = f"SELECT id FROM runs WHERE id ~>=~ $1 {bound}ORDER BY id USING ~<~ LIMIT $2"
    return sql, [prefix, limit, upper] if upper is not None else [prefix, limit]


# $1 schedule, $2 by, $3 reason, $4 auto, $5 failures since the last resume needed (0: any), $6 the
# moment of the pause (NULL: now()). Runs
# after an insert of the schedule's row (if missing), in the same transaction. Returns the row after
# the pause, or nothing if it is paused already (or, for an automatic pause, has too few failures).
PAUSE_SCHEDULE = f"""
UPDATE schedule_states SET paused = true,
    paused_at = CASE WHEN $4 THEN coalesce(last_failure_at, $6::timestamptz, now())
                     ELSE coalesce($6::timestamptz, now()) END,
    paused_by = $2, pause_reason = $3, auto_paused = $4, updated_at = now()
WHERE schedule = $1 AND NOT paused AND consecutive_failures - failures_at_resume >= $5
RETURNING {STATE_SELECT}
"""

# $1 schedule, $2 by, $3 the moment of the resume (NULL: now()). The row after the resume, or
# nothing if the schedule was not paused.
RESUME_SCHEDULE = f"""
UPDATE schedule_states SET paused = false, resumed_at = coalesce($3::timestamptz, now()), resumed_by = $2,
    failures_at_resume = consecutive_failures, updated_at = now()
WHERE schedule = $1 AND paused
RETURNING {STATE_SELECT}
"""

# Coalescing triggers of one (job, concurrency key) take this transaction-level lock first, so the
# look-up below and the insert that follows when it finds nothing are one step for every other
# coalescing trigger of the key (under READ COMMITTED each statement after the lock sees what the
# previous holder committed). Triggers without coalesce never take it.
COALESCE_LOCK = f"SELECT pg_advisory_xact_lock({COALESCE_LOCK_NAMESPACE}, hashtext($1 || chr(31) || $2))"
# The run a coalescing trigger joins: pending and never started (``started_at`` is set by the first
# claim and kept), oldest first. $1 job name, $2 concurrency key.
COALESCE_TARGET = f"""
SELECT {RUN_SELECT} FROM runs
WHERE concurrency_key = $2 AND status IN {ACTIVE_SQL} AND status = 'pending' AND job_name = $1
  AND started_at IS NULL
ORDER BY seq LIMIT 1
"""
