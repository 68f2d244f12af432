-- durably-sched schema for PostgreSQL: durable waits (docs/waiting.md). A run that sleeps, waits
-- for an event or for its child runs is `waiting`: no lease, no slot, no worker.
-- Runs inside the migration transaction, search_path set.

ALTER TABLE runs DROP CONSTRAINT IF EXISTS runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled'));

-- The run that started this one with step.run_job (NULL: started otherwise).
ALTER TABLE runs ADD COLUMN parent_run_id text;
-- What a waiting run waits for: sleep | event | children; the step that waits (its name makes the
-- replay deterministic); the event key; the time it may wake (a sleep's end, an event's timeout).
-- They stay set after the wake-up, so the woken attempt's replay knows how its wait ended.
ALTER TABLE runs ADD COLUMN wait_kind text;
ALTER TABLE runs ADD COLUMN wait_step text;
ALTER TABLE runs ADD COLUMN wait_key text;
ALTER TABLE runs ADD COLUMN wake_at timestamptz;
ALTER TABLE runs ADD COLUMN wait_children integer;
-- How the last wait ended: due (its time came), event, timeout, children.
ALTER TABLE runs ADD COLUMN wait_outcome text;
-- The data of the event that ended it.
ALTER TABLE runs ADD COLUMN wait_data json;
-- The newest event this run received (an event is delivered to a run once).
ALTER TABLE runs ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;

-- The due sleepers and timeouts: one range read of this index per worker poll, whatever the number
-- of runs waiting.
CREATE INDEX runs_waking ON runs (wake_at) WHERE status = 'waiting' AND wake_at IS NOT NULL;
-- The runs an event wakes.
CREATE INDEX runs_waiting_key ON runs (wait_key) WHERE status = 'waiting' AND wait_key IS NOT NULL;
-- A parent's children.
CREATE INDEX runs_parent ON runs (parent_run_id, seq) WHERE parent_run_id IS NOT NULL;
-- The overlap policy counts a waiting run of a schedule as still running.
CREATE INDEX runs_schedule_waiting ON runs (schedule_name)
    WHERE status = 'waiting' AND schedule_name IS NOT NULL;

-- Every event sent (durably.send_event, `events send`, POST /api/events): kept, so a run that
-- reaches its wait after the event was sent (and was created before it: runs.seq <= run_seq) still
-- receives it.
CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text NOT NULL,
    data json,                          -- NULL: no data
    created_at timestamptz NOT NULL DEFAULT now(),
    run_seq bigint NOT NULL,            -- the newest run when it was sent: it is for runs up to it
    woken integer NOT NULL              -- the waiting runs it woke when it was sent
);
CREATE INDEX events_key ON events (key, seq);
-- Retention deletes events by age (as it does finished runs).
CREATE INDEX events_created ON events (created_at);

-- The attempt that ends by waiting is recorded as `suspended` (it ended well; the run goes on in
-- a later attempt).
CREATE OR REPLACE FUNCTION durably_run_attempt_ended() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    how text := CASE
        WHEN NEW.generation <> OLD.generation THEN 'lease_lost'
        WHEN NEW.status = 'pending' AND NEW.failed_attempts > OLD.failed_attempts THEN 'failed'
        WHEN NEW.status = 'pending' THEN 'released'
        WHEN NEW.status = 'waiting' THEN 'suspended'
        ELSE NEW.status END;
BEGIN
    INSERT INTO run_attempts (
        run_id, attempt, outcome, worker_id, started_at, ended_at, error, failed_step_name, traceback,
        failed_attempts
    ) VALUES (
        NEW.id, OLD.attempt, how, OLD.worker_id, OLD.attempt_started_at,
        CASE how
            WHEN 'lease_lost' THEN LEAST(coalesce(OLD.lease_expires_at, NEW.updated_at), NEW.updated_at)
            WHEN 'released' THEN NEW.updated_at
            ELSE coalesce(NEW.completed_at, NEW.updated_at) END,
        CASE WHEN how = 'failed' THEN NEW.error END,
        CASE WHEN how = 'failed' THEN NEW.failed_step_name END,
        CASE WHEN how = 'failed' THEN NEW.traceback END,
        NEW.failed_attempts
    )
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

-- A child that finishes wakes its parent, in the same transaction, once no child of the parent is
-- still unfinished. The parent's row is locked first, and the check reads after the lock: a parent
-- suspending concurrently (it locks its row too, then checks its children) sees either this
-- child finished, or its own waiting state is seen here.
CREATE FUNCTION durably_child_finished() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM 1 FROM runs WHERE id = NEW.parent_run_id FOR UPDATE;
    UPDATE runs SET status = 'pending', wait_outcome = 'children', updated_at = now()
    WHERE id = NEW.parent_run_id AND status = 'waiting' AND wait_kind = 'children'
        AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.parent_run_id = NEW.parent_run_id
            AND c.status NOT IN ('completed', 'failed', 'cancelled'));
    IF FOUND THEN
        PERFORM pg_notify('durably_sched_runs', (SELECT job_name FROM runs WHERE id = NEW.parent_run_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_child_finished AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.parent_run_id IS NOT NULL AND NEW.status IN ('completed', 'failed', 'cancelled')
    AND OLD.status NOT IN ('completed', 'failed', 'cancelled'))
EXECUTE FUNCTION durably_child_finished();
