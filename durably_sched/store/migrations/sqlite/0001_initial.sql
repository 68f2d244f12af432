-- durably-sched schema v1 for SQLite. Times are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE runs (
    seq INTEGER PRIMARY KEY,              -- creation order (rowid alias)
    id TEXT NOT NULL UNIQUE,
    job_name TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    failed_step_name TEXT,
    idempotency_key TEXT,
    concurrency_key TEXT,
    labels TEXT NOT NULL DEFAULT '{}',
    schedule_name TEXT,                   -- copy of labels.schedule, indexed for schedule queries
    generation INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    lease_expires_at INTEGER,
    progress_current INTEGER,
    progress_total INTEGER,
    progress_message TEXT,
    step_count INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    updated_at INTEGER NOT NULL
);

-- NULL keys are distinct, so runs without an idempotency key never collide.
CREATE UNIQUE INDEX runs_idempotency ON runs (job_name, idempotency_key);
-- The claim scan reads only active runs, however much history the table holds.
CREATE INDEX runs_active ON runs (seq) WHERE status IN ('pending', 'running');
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
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    idx INTEGER NOT NULL,
    output TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    completed_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;

CREATE TABLE logs (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    step_name TEXT,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, id);

CREATE TABLE schedule_cursors (
    schedule TEXT PRIMARY KEY,
    last_fire_time INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE fire_records (
    schedule TEXT NOT NULL,
    fire_time INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    run_id TEXT,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (schedule, fire_time)
) WITHOUT ROWID;
-- Retention deletes fire records by age.
CREATE INDEX fire_records_fire_time ON fire_records (fire_time);
