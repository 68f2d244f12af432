-- durably-sched schema v12 for PostgreSQL: the run stream (docs/design.md, decision 49).

-- One row per transition of a run (claimed, retry scheduled, released, waiting, woken, retried,
-- finished). Steps and logs are not repeated here: a reader takes them from `steps` (by index) and
-- `logs` (by id), and a run's creation from `runs` (by seq). `step_count` is the run's step count
-- at the transition, so a reader puts each transition between the right steps; `attempt` is the
-- run's attempt after it. Rows are found by their run's seq (`run_seq`): a new run's rows go to
-- the end of the index (its uuid would scatter them over the index's pages).
CREATE TABLE run_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_seq bigint NOT NULL,
    run_id text NOT NULL,
    type text NOT NULL,
    attempt integer NOT NULL,
    step_count integer NOT NULL,
    data json,                          -- a failure's one-line error and step, a wait's target
    at timestamptz NOT NULL
);
CREATE INDEX run_events_run ON run_events (run_seq, id);

-- A log line's place in its run: the run's attempt and step count when it was written (by the
-- statement that writes it, from the run's row). A line written with a step's checkpoint has the
-- count from before that step, so a reader puts it before the step. NULL: written before v12.
ALTER TABLE logs ADD COLUMN attempt integer;
ALTER TABLE logs ADD COLUMN step_count integer;

-- Written by the database in the statement that makes the change, so no writer can forget one and
-- no statement or commit is added: checkpoints, progress, logs and lease renewals never call these.
-- Each transition also notifies durably_sched_run_events (empty payload: one notification per
-- transaction), which wakes the run feeds of every process; they poll as a fallback.
CREATE FUNCTION durably_run_created_event() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO run_events (run_seq, run_id, type, attempt, step_count, at)
    SELECT n.seq, n.id, 'run:start', n.attempt, n.step_count, n.updated_at FROM created n
    WHERE n.status = 'running';  -- created claimed (create_and_claim): its start
    IF FOUND THEN
        PERFORM pg_notify('durably_sched_run_events', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_created_event AFTER INSERT ON runs
REFERENCING NEW TABLE AS created
FOR EACH STATEMENT
EXECUTE FUNCTION durably_run_created_event();

CREATE FUNCTION durably_run_transition_event() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    kind text := CASE
        WHEN NEW.status = 'running' THEN 'run:start'
        WHEN NEW.status = 'completed' THEN 'run:complete'
        WHEN NEW.status = 'failed' THEN 'run:fail'
        WHEN NEW.status = 'cancelled' THEN 'run:cancel'
        WHEN NEW.status = 'waiting' THEN 'run:waiting'
        WHEN OLD.status = 'running' AND NEW.failed_attempts > OLD.failed_attempts THEN 'run:retry-scheduled'
        WHEN OLD.status = 'running' THEN 'run:release'
        WHEN OLD.status = 'waiting' THEN 'run:wake'
        ELSE 'run:retry' END;
BEGIN
    INSERT INTO run_events (run_seq, run_id, type, attempt, step_count, data, at)
    VALUES (
        NEW.seq, NEW.id, kind, NEW.attempt, NEW.step_count,
        CASE
            WHEN kind IN ('run:fail', 'run:retry-scheduled') THEN json_build_object(
                'error', NEW.error, 'failed_step_name', NEW.failed_step_name,
                'failed_attempts', NEW.failed_attempts, 'not_before', NEW.not_before)
            WHEN kind = 'run:waiting' THEN json_build_object(
                'step', NEW.wait_step, 'kind', NEW.wait_kind, 'key', NEW.wait_key,
                'until', NEW.wake_at, 'children', NEW.wait_children)
        END,
        NEW.updated_at
    );
    PERFORM pg_notify('durably_sched_run_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_transition_event AFTER UPDATE OF status, generation ON runs
FOR EACH ROW
WHEN (NEW.status <> OLD.status OR NEW.generation <> OLD.generation)
EXECUTE FUNCTION durably_run_transition_event();

-- A run's events go with it (delete, retention): one set-based delete per statement.
CREATE FUNCTION durably_runs_deleted_events() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM run_events e USING gone WHERE e.run_seq = gone.seq;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_deleted_events AFTER DELETE ON runs
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT
EXECUTE FUNCTION durably_runs_deleted_events();
