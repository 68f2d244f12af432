-- Run-time state of each schedule: a pause made at run time, and what its finished runs say.
-- Times are integer milliseconds since the Unix epoch (UTC), as in 0001.

CREATE TABLE schedule_states (
    schedule TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,                 -- 1 while paused at run time
    paused_at INTEGER,                                 -- the current pause, or the last one
    paused_by TEXT,
    pause_reason TEXT,
    auto_paused INTEGER NOT NULL DEFAULT 0,            -- 1: that pause was made by pause_after_failures
    resumed_at INTEGER,                                -- the last resume
    resumed_by TEXT,
    -- Kept by the trigger below, in the transaction that finishes a run of the schedule:
    consecutive_failures INTEGER NOT NULL DEFAULT 0,   -- failed runs since the last completed one
    failures_at_resume INTEGER NOT NULL DEFAULT 0,     -- consecutive_failures when last resumed
    last_success_at INTEGER,                           -- completed_at of the newest completed run
    last_failure_at INTEGER,
    last_failed_run_id TEXT,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
-- What every scheduler reads once per tick: paused and failing schedules only, however many there are.
CREATE INDEX schedule_states_attention ON schedule_states (schedule)
    WHERE paused = 1 OR consecutive_failures > 0;

-- A run of a schedule (runs.schedule_name) that completes resets the count; one that fails adds one.
-- Cancelled runs and failed runs going back to pending (retry) change nothing.
CREATE TRIGGER runs_schedule_finished AFTER UPDATE OF status ON runs
WHEN NEW.schedule_name IS NOT NULL AND NEW.status IN ('completed', 'failed') AND OLD.status IS NOT NEW.status
BEGIN
    INSERT INTO schedule_states (
        schedule, consecutive_failures, last_success_at, last_failure_at, last_failed_run_id, updated_at
    ) VALUES (
        NEW.schedule_name,
        NEW.status = 'failed',
        CASE WHEN NEW.status = 'completed' THEN NEW.completed_at END,
        CASE WHEN NEW.status = 'failed' THEN NEW.completed_at END,
        CASE WHEN NEW.status = 'failed' THEN NEW.id END,
        NEW.updated_at
    )
    ON CONFLICT (schedule) DO UPDATE SET
        consecutive_failures = CASE WHEN NEW.status = 'failed' THEN consecutive_failures + 1 ELSE 0 END,
        failures_at_resume = CASE WHEN NEW.status = 'failed' THEN failures_at_resume ELSE 0 END,
        last_success_at = CASE WHEN NEW.status = 'completed'
            THEN max(coalesce(last_success_at, NEW.completed_at), NEW.completed_at) ELSE last_success_at END,
        last_failure_at = CASE WHEN NEW.status = 'failed' THEN NEW.completed_at ELSE last_failure_at END,
        last_failed_run_id = CASE WHEN NEW.status = 'failed' THEN NEW.id ELSE last_failed_run_id END,
        updated_at = NEW.updated_at;
END;

-- Schedules of a database made before this migration start from their finished runs: the newest
-- success, and the failures that finished after it.
INSERT INTO schedule_states (
    schedule, consecutive_failures, last_success_at, last_failure_at, last_failed_run_id, updated_at
)
SELECT
    s.schedule_name,
    (SELECT count(*) FROM runs f WHERE f.schedule_name = s.schedule_name AND f.status = 'failed'
        AND (s.last_success IS NULL OR f.completed_at > s.last_success)),
    s.last_success,
    s.last_failure,
    (SELECT f.id FROM runs f WHERE f.schedule_name = s.schedule_name AND f.status = 'failed'
        ORDER BY f.completed_at DESC, f.seq DESC LIMIT 1),
    CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
FROM (
    SELECT schedule_name,
        max(CASE WHEN status = 'completed' THEN completed_at END) AS last_success,
        max(CASE WHEN status = 'failed' THEN completed_at END) AS last_failure
    FROM runs
    WHERE schedule_name IS NOT NULL AND status IN ('completed', 'failed')
    GROUP BY schedule_name
) s;
