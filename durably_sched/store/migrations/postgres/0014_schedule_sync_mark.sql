-- durably-sched schema v14 for PostgreSQL: the last sync of a schedules file (docs/design.md,
-- decision 56).

-- What the newest successful sync of a schedules file was: a digest of its entries (names,
-- definitions, file and line) and the newest change (schedule_versions.seq) once it was applied.
-- A sync of the very same entries while no change has been made since writes nothing, so it is
-- answered from this row instead of reading and comparing every definition under the lock that
-- orders the changes: serves started together then wait for one sync, not for each other's.
CREATE TABLE schedule_sync_mark (
    id integer PRIMARY KEY CHECK (id = 1),
    fingerprint text NOT NULL,
    seq bigint NOT NULL
);
