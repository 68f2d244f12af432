-- durably-sched schema for SQLite: schedules as data. Every schedule (from schedules.yaml, source
-- 'yaml', or created at run time, source 'api') has one row in schedule_defs (its newest version;
-- a deleted schedule keeps its row, marked deleted, so its versions go on numbering) and one row
-- per change in schedule_versions. seq orders every change of every schedule: a scheduler reads
-- the definitions whose seq is past the last it saw. Times are integer milliseconds since the epoch.

CREATE TABLE schedule_versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    op TEXT NOT NULL,                   -- create, update, delete, rollback, sync, pause, resume
    source TEXT NOT NULL,               -- yaml | api
    by TEXT,
    at INTEGER NOT NULL,
    note TEXT,
    definition TEXT,                    -- JSON, the YAML's spellings; NULL for a delete
    changed TEXT NOT NULL DEFAULT '[]', -- JSON list of the fields that changed
    UNIQUE (name, version)
);

CREATE TABLE schedule_defs (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    job TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    definition TEXT NOT NULL,
    path TEXT,                          -- yaml: the file and line the entry came from
    line INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX schedule_defs_seq ON schedule_defs (seq);
CREATE INDEX schedule_defs_job ON schedule_defs (job, name);

ALTER TABLE runs ADD COLUMN schedule_version INTEGER;
