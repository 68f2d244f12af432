-- durably-sched schema for PostgreSQL: schedulers share the schedules. A schedule belongs to one of
-- 256 buckets (crc32 of its name, modulo 256: schedule/ownership.py); each bucket is leased by one
-- live scheduler at a time, by the database's clock. Runs inside the migration transaction.

CREATE TABLE schedulers (
    id text PRIMARY KEY,                -- the serve's worker id
    host text NOT NULL,
    pid integer NOT NULL,
    schedules integer NOT NULL,         -- schedules it has loaded
    clock_offset double precision,      -- seconds its host clock is ahead of the database's (NULL: unknown)
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL     -- live while this is in the future
);

CREATE TABLE schedule_buckets (
    bucket integer PRIMARY KEY,
    owner text,                         -- a scheduler id; NULL: free
    expires_at timestamptz,             -- the owner's lease; past: free to take
    taken_at timestamptz
);
INSERT INTO schedule_buckets (bucket) SELECT generate_series(0, 255);
CREATE INDEX schedule_buckets_owner ON schedule_buckets (owner);
