-- durably-sched schema v6 for SQLite: a schedules file that failed to reload, visible to every
-- process (the dashboard banner, GET /api/schedules, `schedules list`). Times are integer
-- milliseconds since the Unix epoch (UTC).

-- One row per serve process whose last reload of its schedules file failed; it keeps running the
-- last good version. The row goes when a reload succeeds or the process stops cleanly; one whose
-- process died stops being shown once `checked_at` is old (the process refreshes it meanwhile).
CREATE TABLE config_errors (
    reporter TEXT PRIMARY KEY,          -- the serve process: its worker id
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    path TEXT NOT NULL,                 -- the schedules file
    line INTEGER,                       -- where the (first) problem is; NULL: not known
    message TEXT NOT NULL,              -- the problem, one line, without the file and line
    since INTEGER NOT NULL,             -- the first failed reload since the last good one
    checked_at INTEGER NOT NULL         -- the latest failed reload (or refresh) of the same streak
) WITHOUT ROWID;
