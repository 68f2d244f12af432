-- durably-sched schema v6 for PostgreSQL: dashboard sessions, so that logging out ends a session in
-- every serve process sharing the database. Runs inside the migration transaction, search_path set.

CREATE TABLE web_sessions (
    id text PRIMARY KEY,                -- SHA-256 (hex) of the session's secret; the secret itself
                                        -- is only in the browser's cookie
    role text NOT NULL,                 -- admin | read
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
