-- durably-sched schema v6 for SQLite: dashboard sessions, so that logging out ends a session in
-- every serve process sharing the database. Times are integer milliseconds since the Unix epoch.

CREATE TABLE web_sessions (
    id TEXT PRIMARY KEY,                -- SHA-256 (hex) of the session's secret; the secret itself
                                        -- is only in the browser's cookie
    role TEXT NOT NULL,                 -- admin | read
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
