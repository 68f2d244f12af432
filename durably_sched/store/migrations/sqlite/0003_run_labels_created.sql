-- durably-sched schema v3 for SQLite: indexed label filters and creation-time bounds for run lists.

-- One row per label of a run, written when the run is created (never by checkpoints) and deleted
-- with it. (key, value, seq) lists the runs with a label newest first without reading other runs.
CREATE TABLE run_labels (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    seq INTEGER NOT NULL,                 -- runs.seq
    PRIMARY KEY (key, value, seq)
) WITHOUT ROWID;
CREATE INDEX run_labels_seq ON run_labels (seq);

INSERT INTO run_labels (key, value, seq)
    SELECT j.key, j.value, r.seq FROM runs r, json_each(r.labels) j WHERE j.type = 'text';

-- `created_after` bounds: created_at is written once, at insert.
CREATE INDEX runs_created ON runs (created_at);
