-- durably-sched schema v15 for PostgreSQL: fewer index entries per new run (docs/design.md,
-- decision 59). A burst of 100,000 fire times is paced by the server's work per run row; these two
-- entries were written for every run and answered nothing another index did not.

-- 1. A run's id had two indexes: the unique constraint (default operator class) and
--    runs_id_prefix (text_pattern_ops) for prefix look-ups. One unique index in text_pattern_ops
--    answers both: its operator family holds the ordinary `=`, so look-ups by id use it as before,
--    and ON CONFLICT DO NOTHING sees the same uniqueness. Nothing references runs(id).
CREATE UNIQUE INDEX runs_id ON runs (id text_pattern_ops);
ALTER TABLE runs DROP CONSTRAINT runs_id_key;
DROP INDEX runs_id_prefix;

-- 2. The label `schedule` is the run's schedule_name column: every insert since v1 set the column
--    from that label. A filter on it is now answered from runs_schedule, so its rows leave the
--    labels index. The update makes the column agree with the label first, should any run not.
UPDATE runs SET schedule_name = labels ->> 'schedule'
WHERE schedule_name IS DISTINCT FROM labels ->> 'schedule';
DELETE FROM run_labels WHERE key = 'schedule';
