-- durably-sched schema v3 for PostgreSQL: indexed label filters and creation-time bounds for run
-- lists. Runs inside the migration transaction with search_path set to the store's schema.

-- One row per label of a run, written when the run is created (never by checkpoints) and deleted
-- with it. (key, value, seq) lists the runs with a label newest first without reading other runs.
CREATE TABLE run_labels (
    key text NOT NULL,
    value text NOT NULL,
    seq bigint NOT NULL,                  -- runs.seq
    PRIMARY KEY (key, value, seq)
);
CREATE INDEX run_labels_seq ON run_labels (seq);

INSERT INTO run_labels (key, value, seq)
    SELECT l.key, l.value, r.seq FROM runs r, json_each_text(r.labels) l;

-- `created_after` bounds: created_at is written once, at insert.
CREATE INDEX runs_created ON runs (created_at);
