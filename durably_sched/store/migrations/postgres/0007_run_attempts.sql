-- durably-sched schema v6 for PostgreSQL: every attempt of a run is kept (docs/attempts.md).
-- Runs inside the migration transaction, search_path set.

-- When the current attempt was claimed (set by every claim; `started_at` keeps the first start).
ALTER TABLE runs ADD COLUMN attempt_started_at timestamptz;

-- One row per attempt that ended: completed, failed (for good or to be retried), released (a
-- graceful stop), cancelled while running, or lease_lost (its holder stopped renewing and another
-- claim took the run over).
CREATE TABLE run_attempts (
    run_id text NOT NULL,
    attempt integer NOT NULL,            -- runs.attempt of that execution (claims count from 1)
    outcome text NOT NULL,               -- completed, failed, released, cancelled, lease_lost
    worker_id text,                      -- the worker that held it
    started_at timestamptz,              -- its claim; NULL: not known (recorded by this migration)
    ended_at timestamptz NOT NULL,       -- lease_lost: when its lease ran out
    error text,                          -- failed: the one-line error, the step, the traceback
    failed_step_name text,
    traceback text,
    failed_attempts integer NOT NULL,    -- the run's failed attempts after it (the retry budget used)
    PRIMARY KEY (run_id, attempt)
);

-- Recorded by the database in the write that ends the attempt, so no writer can forget it and no
-- extra statement or commit is needed: the completion, the failure (fail_run, retry_later), the
-- release, a cancel of a running run, and (for a lost lease, whose holder can no longer write)
-- the claim that takes the run over. The trigger's WHEN clause keeps every other update of a run
-- (checkpoints, leases, progress) from calling the function at all.
CREATE FUNCTION durably_run_attempt_ended() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    how text := CASE
        WHEN NEW.generation <> OLD.generation THEN 'lease_lost'
        WHEN NEW.status = 'pending' AND NEW.failed_attempts > OLD.failed_attempts THEN 'failed'
        WHEN NEW.status = 'pending' THEN 'released'
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

CREATE TRIGGER runs_attempt_ended AFTER UPDATE OF status, generation ON runs
FOR EACH ROW
WHEN (OLD.status = 'running' AND (NEW.status <> 'running' OR NEW.generation <> OLD.generation))
EXECUTE FUNCTION durably_run_attempt_ended();

-- A run's attempts go with it (delete, retention): one set-based delete per statement.
CREATE FUNCTION durably_runs_deleted() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM run_attempts a USING gone WHERE a.run_id = gone.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_deleted_attempts AFTER DELETE ON runs
REFERENCING OLD TABLE AS gone
FOR EACH STATEMENT
EXECUTE FUNCTION durably_runs_deleted();

-- What a database made before this migration knows of its attempts: the last one of each finished
-- run (completed or failed) and of each run waiting for a retry. Its start is known only when it
-- was the first attempt; earlier attempts were never stored and are not invented.
INSERT INTO run_attempts (run_id, attempt, outcome, worker_id, started_at, ended_at, error,
    failed_step_name, traceback, failed_attempts)
SELECT id, attempt,
    CASE WHEN status = 'completed' THEN 'completed' ELSE 'failed' END,
    worker_id,
    CASE WHEN attempt = 1 THEN started_at END,
    coalesce(completed_at, updated_at),
    CASE WHEN status <> 'completed' THEN error END,
    CASE WHEN status <> 'completed' THEN failed_step_name END,
    CASE WHEN status <> 'completed' THEN traceback END,
    failed_attempts
FROM runs
WHERE attempt > 0 AND (status IN ('completed', 'failed')
    OR (status = 'pending' AND failed_attempts > 0 AND error IS NOT NULL));

-- A run left running: its attempt started at its first start when it is its first attempt.
UPDATE runs SET attempt_started_at = started_at WHERE status = 'running' AND attempt = 1;
