-- durably-sched schema for SQLite: schedulers share the schedules. A schedule belongs to one of 256
-- buckets (crc32 of its name, modulo 256: schedule/ownership.py); each bucket is leased by one live
-- scheduler at a time. Times are integer milliseconds since the Unix epoch.

CREATE TABLE schedulers (
    id TEXT PRIMARY KEY,                -- the serve's worker id
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    schedules INTEGER NOT NULL,         -- schedules it has loaded
    clock_offset REAL,                  -- seconds its clock is ahead of the database's (NULL: unknown)
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL         -- live while this is in the future
);

CREATE TABLE schedule_buckets (
    bucket INTEGER PRIMARY KEY,
    owner TEXT,                         -- a scheduler id; NULL: free
    expires_at INTEGER,                 -- the owner's lease; past: free to take
    taken_at INTEGER
);
WITH RECURSIVE n(bucket) AS (SELECT 0 UNION ALL SELECT bucket + 1 FROM n WHERE bucket < 255)
INSERT INTO schedule_buckets (bucket) SELECT bucket FROM n;
CREATE INDEX schedule_buckets_owner ON schedule_buckets (owner);
