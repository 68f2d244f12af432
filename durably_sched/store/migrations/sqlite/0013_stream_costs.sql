-- durably-sched schema v13 for SQLite: what the run stream costs (docs/design.md, decision 52).

-- A run's steps in their order. The stream reads a run's new steps past an index ("steps with
-- idx >= n, in idx order, at most m"). The primary key orders a run's steps by name, so without
-- this index every such read sorted all the run's steps: a live stream of a long run cost more
-- with every step it had. (SQLite's trigger for a run created claimed is a row trigger already.)
CREATE INDEX steps_order ON steps (run_id, idx);
