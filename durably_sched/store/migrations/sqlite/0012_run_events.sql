-- durably-sched schema v12 for SQLite: the run stream (docs/design.md, decision 49). Times are
-- integer milliseconds since the Unix epoch (UTC).

-- One row per transition of a run (claimed, retry scheduled, released, waiting, woken, retried,
-- finished). Steps and logs are not repeated here: a reader takes them from `steps` (by index) and
-- `logs` (by id), and a run's creation from `runs` (by seq). `step_count` is the run's step count
-- at the transition, so a reader puts each transition between the right steps; `attempt` is the
-- run's attempt after it. Rows are found by their run's seq (`run_seq`): a new run's rows go to
-- the end of the index, where the commit writes anyway (its uuid would scatter them).
-- No AUTOINCREMENT (it writes sqlite_sequence with every row): the newest row is never deleted
-- (see runs_deleted_events), so an id is never used twice.
CREATE TABLE run_events (
    id INTEGER PRIMARY KEY,
    run_seq INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    type TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    step_count INTEGER NOT NULL,
    data TEXT,                          -- JSON: a failure's one-line error and step, a wait's target
    at INTEGER NOT NULL
);
CREATE INDEX run_events_run ON run_events (run_seq, id);

-- A log line's place in its run: the run's attempt and step count when it was written (by the
-- statement that writes it, from the run's row). A line written with a step's checkpoint has the
-- count from before that step, so a reader puts it before the step. NULL: written before v12.
ALTER TABLE logs ADD COLUMN attempt INTEGER;
ALTER TABLE logs ADD COLUMN step_count INTEGER;

-- Written by the database in the statement that makes the change, so no writer can forget one and
-- no statement or commit is added: checkpoints, progress, logs and lease renewals never fire these.
CREATE TRIGGER runs_created_event AFTER INSERT ON runs
WHEN NEW.status = 'running'  -- created claimed (create_and_claim): its start
BEGIN
    INSERT INTO run_events (run_seq, run_id, type, attempt, step_count, at)
    VALUES (NEW.seq, NEW.id, 'run:start', NEW.attempt, NEW.step_count, NEW.updated_at);
END;

CREATE TRIGGER runs_transition_event AFTER UPDATE OF status, generation ON runs
WHEN NEW.status != OLD.status OR NEW.generation != OLD.generation
BEGIN
    INSERT INTO run_events (run_seq, run_id, type, attempt, step_count, data, at)
    SELECT NEW.seq, NEW.id, t.type, NEW.attempt, NEW.step_count,
        CASE
            WHEN t.type IN ('run:fail', 'run:retry-scheduled') THEN json_object(
                'error', NEW.error, 'failed_step_name', NEW.failed_step_name,
                'failed_attempts', NEW.failed_attempts, 'not_before', NEW.not_before)
            WHEN t.type = 'run:waiting' THEN json_object(
                'step', NEW.wait_step, 'kind', NEW.wait_kind, 'key', NEW.wait_key,
                'until', NEW.wake_at, 'children', NEW.wait_children)
        END,
        NEW.updated_at
    FROM (SELECT CASE
        WHEN NEW.status = 'running' THEN 'run:start'
        WHEN NEW.status = 'completed' THEN 'run:complete'
        WHEN NEW.status = 'failed' THEN 'run:fail'
        WHEN NEW.status = 'cancelled' THEN 'run:cancel'
        WHEN NEW.status = 'waiting' THEN 'run:waiting'
        WHEN OLD.status = 'running' AND NEW.failed_attempts > OLD.failed_attempts THEN 'run:retry-scheduled'
        WHEN OLD.status = 'running' THEN 'run:release'
        WHEN OLD.status = 'waiting' THEN 'run:wake'
        ELSE 'run:retry' END AS type) AS t
    WHERE true;
END;

-- A run's events go with it (delete, retention), except the newest row of the table, which stays
-- until a later row exists (SQLite would give its id to the next row: a reader past it would miss
-- that row). Readers find rows through runs, so a row of a deleted run is never read as a run's.
CREATE TRIGGER runs_deleted_events AFTER DELETE ON runs
BEGIN
    DELETE FROM run_events WHERE run_seq = OLD.seq AND id < (SELECT max(id) FROM run_events);
END;
