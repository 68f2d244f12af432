-- durably-sched schema v13 for SQLite: a run's steps in their order (docs/design.md, decision 52).
-- The run stream reads a run's new steps past an index ("steps with idx >= n, in idx order, at
-- most m"). The primary key orders a run's steps by name, so without this index every such read
-- sorted all the run's steps: a live stream of a long run cost more with every step it had.
CREATE INDEX steps_order ON steps (run_id, idx);
