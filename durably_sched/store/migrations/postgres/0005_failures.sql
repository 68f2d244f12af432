-- durably-sched schema v5 for PostgreSQL: failures you can act on (tracebacks, automatic retries,
-- timeouts, the worker registry). Runs inside the migration transaction, search_path set.

-- The failing attempt's formatted traceback (its last 16 KiB), next to the one-line `error`.
ALTER TABLE runs ADD COLUMN traceback text;
-- Failed attempts so far: the retry budget's counter. `attempt` keeps counting claims (resumes
-- after a crash or a stop included), which never use up the budget.
ALTER TABLE runs ADD COLUMN failed_attempts integer NOT NULL DEFAULT 0;
-- A pending run waiting for its retry backoff is not claimed before this time (database clock).
ALTER TABLE runs ADD COLUMN not_before timestamptz;
-- The effective retry policy when a schedule or a trigger overrode the job's; NULL: the job's.
ALTER TABLE runs ADD COLUMN retry_policy json;
-- Seconds one attempt may take when a schedule or a trigger set it; NULL: the job's timeout.
ALTER TABLE runs ADD COLUMN timeout double precision;

-- A run that failed under the previous version failed once.
UPDATE runs SET failed_attempts = 1 WHERE status = 'failed';

-- The worker registry: one row per worker process, from its start to its clean stop.
CREATE TABLE workers (
    id text PRIMARY KEY,
    host text NOT NULL,                 -- host name, for people
    host_key text,                      -- host name + boot id + pid namespace (NULL: unknown); equal
                                        -- keys mean pids name the same processes
    pid integer NOT NULL,
    process_start text,                 -- the process's start time (clock ticks since boot), to tell
                                        -- a reused pid from the worker's own process
    version text NOT NULL,
    jobs json NOT NULL,                 -- array of the job names it claims
    concurrency integer NOT NULL,
    lease_seconds double precision NOT NULL,  -- its stale threshold
    runs_held integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    gone_at timestamptz,                -- when a worker on its host found its process gone
    gone_by text                        -- that worker
);
CREATE INDEX workers_host ON workers (host_key);
