-- durably-sched schema v6 for PostgreSQL: a schedules file that failed to reload, visible to every
-- process (the dashboard banner, GET /api/schedules, `schedules list`). Runs inside the migration
-- transaction, search_path set.

-- One row per serve process whose last reload of its schedules file failed; it keeps running the
-- last good version. The row goes when a reload succeeds or the process stops cleanly; one whose
-- process died stops being shown once `checked_at` is old (the process refreshes it meanwhile).
CREATE TABLE config_errors (
    reporter text PRIMARY KEY,          -- the serve process: its worker id
    host text NOT NULL,
    pid integer NOT NULL,
    path text NOT NULL,                 -- the schedules file
    line integer,                       -- where the (first) problem is; NULL: not known
    message text NOT NULL,              -- the problem, one line, without the file and line
    since timestamptz NOT NULL,         -- the first failed reload since the last good one
    checked_at timestamptz NOT NULL     -- the latest failed reload (or refresh) of the same streak
);
