-- durably-sched schema v15 for SQLite: fewer index entries per new run (docs/design.md,
-- decision 59).

-- The label `schedule` is the run's schedule_name column: every insert since v1 set the column
-- from that label. A filter on it is now answered from runs_schedule, so its rows leave the
-- labels index. The update makes the column agree with the label first, should any run not.
UPDATE runs SET schedule_name = json_extract(labels, '$.schedule')
WHERE schedule_name IS NOT json_extract(labels, '$.schedule');
DELETE FROM run_labels WHERE key = 'schedule';
