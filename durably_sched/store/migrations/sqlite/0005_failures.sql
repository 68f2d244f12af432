-- durably-sched schema v5 for SQLite: failures you can act on (tracebacks, automatic retries,
-- timeouts, the worker registry). Times are integer milliseconds since the Unix epoch (UTC).

-- The failing attempt's formatted traceback (its last 16 KiB), next to the one-line `error`.
ALTER TABLE runs ADD COLUMN traceback TEXT;
-- Failed attempts so far: the retry budget's counter. `attempt` keeps counting claims (resumes
-- after a crash or a stop included), which never use up the budget.
ALTER TABLE runs ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
-- A pending run waiting for its retry backoff is not claimed before this time.
ALTER TABLE runs ADD COLUMN not_before INTEGER;
-- The effective retry policy (JSON) when a schedule or a trigger overrode the job's; NULL: the job's.
ALTER TABLE runs ADD COLUMN retry_policy TEXT;
-- Seconds one attempt may take when a schedule or a trigger set it; NULL: the job's timeout.
ALTER TABLE runs ADD COLUMN timeout REAL;

-- A run that failed under the previous version failed once.
UPDATE runs SET failed_attempts = 1 WHERE status = 'failed';

-- The worker registry: one row per worker process, from its start to its clean stop.
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,                 -- host name, for people
    host_key TEXT,                      -- host name + boot id + pid namespace (NULL: unknown); equal
                                        -- keys mean pids name the same processes
    pid INTEGER NOT NULL,
    process_start TEXT,                 -- the process's start time (clock ticks since boot), to tell
                                        -- a reused pid from the worker's own process
    version TEXT NOT NULL,
    jobs TEXT NOT NULL,                 -- JSON array of the job names it claims
    concurrency INTEGER NOT NULL,
    lease_seconds REAL NOT NULL,        -- its stale threshold: its heartbeat is overdue after this long
    runs_held INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    gone_at INTEGER,                    -- when a worker on its host found its process gone
    gone_by TEXT                        -- that worker
) WITHOUT ROWID;
CREATE INDEX workers_host ON workers (host_key);
