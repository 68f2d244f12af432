-- durably-sched schema for PostgreSQL: schedules as data. Every schedule (from schedules.yaml,
-- source 'yaml', or created at run time, source 'api') has one row in schedule_defs (its newest
-- version; a deleted schedule keeps its row, marked deleted, so its versions go on numbering) and
-- one row per change in schedule_versions. seq orders every change of every schedule: a scheduler
-- reads the definitions whose seq is past the last it saw. Runs inside the migration transaction.

CREATE TABLE schedule_versions (
    seq bigserial PRIMARY KEY,
    name text NOT NULL,
    version integer NOT NULL,
    op text NOT NULL,                   -- create, update, delete, rollback, sync, pause, resume
    source text NOT NULL,               -- yaml | api
    by text,
    at timestamptz NOT NULL DEFAULT now(),
    note text,
    definition jsonb,                   -- the YAML's spellings; NULL for a delete
    changed jsonb NOT NULL DEFAULT '[]',
    UNIQUE (name, version)
);

CREATE TABLE schedule_defs (
    name text PRIMARY KEY,
    source text NOT NULL,
    version integer NOT NULL,
    seq bigint NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    job text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    definition jsonb NOT NULL,
    path text,                          -- yaml: the file and line the entry came from
    line integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedule_defs_seq ON schedule_defs (seq);
CREATE INDEX schedule_defs_job ON schedule_defs (job, name);
CREATE INDEX schedule_defs_labels ON schedule_defs USING gin (labels jsonb_path_ops);

ALTER TABLE runs ADD COLUMN schedule_version integer;
