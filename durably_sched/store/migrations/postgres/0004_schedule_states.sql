-- Run-time state of each schedule: a pause made at run time, and what its finished runs say.
-- Runs in the migration transaction with search_path set to the store's schema (see 0001).

-- A fire time handled while its schedule is paused is recorded with the outcome 'paused'.
ALTER TABLE fire_records DROP CONSTRAINT fire_records_outcome_check;
ALTER TABLE fire_records ADD CONSTRAINT fire_records_outcome_check
    CHECK (outcome IN ('triggered', 'deduplicated', 'skipped', 'missed', 'disabled', 'paused'));

CREATE TABLE schedule_states (
    schedule text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,             -- true while paused at run time
    paused_at timestamptz,                             -- the current pause, or the last one
    paused_by text,
    pause_reason text,
    auto_paused boolean NOT NULL DEFAULT false,        -- that pause was made by pause_after_failures
    resumed_at timestamptz,                            -- the last resume
    resumed_by text,
    -- Kept by the trigger below, in the transaction that finishes a run of the schedule:
    consecutive_failures integer NOT NULL DEFAULT 0,   -- failed runs since the last completed one
    failures_at_resume integer NOT NULL DEFAULT 0,     -- consecutive_failures when last resumed
    last_success_at timestamptz,                       -- completed_at of the newest completed run
    last_failure_at timestamptz,
    last_failed_run_id text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- What every scheduler reads once per tick: paused and failing schedules only, however many there are.
CREATE INDEX schedule_states_attention ON schedule_states (schedule)
    WHERE paused OR consecutive_failures > 0;

-- A run of a schedule (runs.schedule_name) that completes resets the count; one that fails adds one.
-- Cancelled runs and failed runs going back to pending (retry) change nothing. The row lock taken
-- by the upsert orders concurrent finishes of one schedule, so no count is lost.
CREATE FUNCTION durably_schedule_run_finished() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO schedule_states AS s (
        schedule, consecutive_failures, last_success_at, last_failure_at, last_failed_run_id, updated_at
    ) VALUES (
        NEW.schedule_name,
        CASE WHEN NEW.status = 'failed' THEN 1 ELSE 0 END,
        CASE WHEN NEW.status = 'completed' THEN NEW.completed_at END,
        CASE WHEN NEW.status = 'failed' THEN NEW.completed_at END,
        CASE WHEN NEW.status = 'failed' THEN NEW.id END,
        now()
    )
    ON CONFLICT (schedule) DO UPDATE SET
        consecutive_failures = CASE WHEN NEW.status = 'failed' THEN s.consecutive_failures + 1 ELSE 0 END,
        failures_at_resume = CASE WHEN NEW.status = 'failed' THEN s.failures_at_resume ELSE 0 END,
        last_success_at = CASE WHEN NEW.status = 'completed'
            THEN GREATEST(s.last_success_at, NEW.completed_at) ELSE s.last_success_at END,
        last_failure_at = CASE WHEN NEW.status = 'failed' THEN NEW.completed_at ELSE s.last_failure_at END,
        last_failed_run_id = CASE WHEN NEW.status = 'failed' THEN NEW.id ELSE s.last_failed_run_id END,
        updated_at = now();
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_schedule_finished AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.schedule_name IS NOT NULL AND NEW.status IN ('completed', 'failed')
      AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION durably_schedule_run_finished();

-- Schedules of a database made before this migration start from their finished runs: the newest
-- success, and the failures that finished after it.
INSERT INTO schedule_states (
    schedule, consecutive_failures, last_success_at, last_failure_at, last_failed_run_id
)
SELECT
    s.schedule_name,
    (SELECT count(*) FROM runs f WHERE f.schedule_name = s.schedule_name AND f.status = 'failed'
        AND (s.last_success IS NULL OR f.completed_at > s.last_success)),
    s.last_success,
    s.last_failure,
    (SELECT f.id FROM runs f WHERE f.schedule_name = s.schedule_name AND f.status = 'failed'
        ORDER BY f.completed_at DESC, f.seq DESC LIMIT 1)
FROM (
    SELECT schedule_name,
        max(completed_at) FILTER (WHERE status = 'completed') AS last_success,
        max(completed_at) FILTER (WHERE status = 'failed') AS last_failure
    FROM runs
    WHERE schedule_name IS NOT NULL AND status IN ('completed', 'failed')
    GROUP BY schedule_name
) s;
