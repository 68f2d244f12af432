-- durably-sched schema v14 for SQLite: the last sync of a schedules file (docs/design.md,
-- decision 56).

-- What the newest successful sync of a schedules file was: a digest of its entries (names,
-- definitions, file and line) and the newest change (schedule_versions.seq) once it was applied.
-- A sync of the very same entries while no change has been made since writes nothing, so it is
-- answered from this row instead of reading and comparing every definition in the write
-- transaction.
CREATE TABLE schedule_sync_mark (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL,
    seq INTEGER NOT NULL
);
