-- durably-sched schema v1 for PostgreSQL.
--
-- Runs inside the migration transaction with search_path set to the store's schema, so every
-- name below lands in that schema (``?schema=NAME`` in the URL, default public).
--
-- Times are timestamptz written from the database clock (now()/clock_timestamp()), except the
-- times a caller measured itself (step start/end, log times, fire times), stored as given.
-- JSON values are `json`, not `jsonb`: `json` keeps the encoded text exactly (key order, numbers,
-- "\u0000", which jsonb rejects), so values read back equal what the SQLite store returns.
-- Step outputs are text: the contract hands StepRecord.output_json back byte for byte.

CREATE TABLE runs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- creation order
    id text NOT NULL UNIQUE,
    job_name text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    input json NOT NULL,
    output json,
    error text,
    failed_step_name text,
    idempotency_key text,
    concurrency_key text,
    labels json NOT NULL DEFAULT '{}',
    schedule_name text,                   -- copy of labels.schedule, indexed for schedule queries
    generation bigint NOT NULL DEFAULT 0, -- the fencing token, incremented by every claim
    worker_id text,
    lease_expires_at timestamptz,
    progress_current bigint,
    progress_total bigint,
    progress_message text,
    step_count integer NOT NULL DEFAULT 0,
    attempt integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- NULLs are distinct, so runs without an idempotency key never collide.
CREATE UNIQUE INDEX runs_idempotency ON runs (job_name, idempotency_key);
-- The claim scans only active runs, however much history the table holds.
CREATE INDEX runs_active ON runs (seq) WHERE status IN ('pending', 'running');
-- The concurrency-key check ("an older active run of the key?", "a live lease on the key?").
CREATE INDEX runs_concurrency_active ON runs (concurrency_key, seq)
    WHERE status IN ('pending', 'running') AND concurrency_key IS NOT NULL;
CREATE INDEX runs_schedule_active ON runs (schedule_name)
    WHERE status IN ('pending', 'running') AND schedule_name IS NOT NULL;
CREATE INDEX runs_finished ON runs (completed_at) WHERE status IN ('completed', 'failed', 'cancelled');
CREATE INDEX runs_status ON runs (status, seq);
CREATE INDEX runs_job ON runs (job_name, seq);
-- `runs list --job J --status S`: newest first without walking the job's other statuses.
CREATE INDEX runs_job_status ON runs (job_name, status, seq);
CREATE INDEX runs_schedule ON runs (schedule_name, seq) WHERE schedule_name IS NOT NULL;

CREATE TABLE steps (
    run_id text NOT NULL,
    name text NOT NULL,
    idx integer NOT NULL,
    output text NOT NULL,
    started_at timestamptz NOT NULL,
    completed_at timestamptz NOT NULL,
    generation bigint NOT NULL,           -- the holder that wrote it: tells a replayed write apart
    PRIMARY KEY (run_id, name)
);

CREATE TABLE logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id text NOT NULL,
    step_name text,
    level text NOT NULL,
    message text NOT NULL,
    data json NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, id);

CREATE TABLE schedule_cursors (
    schedule text PRIMARY KEY,
    last_fire_time timestamptz NOT NULL
);

CREATE TABLE fire_records (
    schedule text NOT NULL,
    fire_time timestamptz NOT NULL,
    outcome text NOT NULL
        CHECK (outcome IN ('triggered', 'deduplicated', 'skipped', 'missed', 'disabled')),
    run_id text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, fire_time)
);
-- purge_fire_records deletes by fire time.
CREATE INDEX fire_records_fire_time ON fire_records (fire_time);
