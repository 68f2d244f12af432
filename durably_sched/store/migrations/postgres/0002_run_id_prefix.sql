-- durably-sched schema v2 for PostgreSQL: short run ids.
--
-- The CLI accepts any unique prefix of a run id (`runs show 33fc6f80`). The unique index on
-- runs.id follows the database's collation, and under a linguistic one (en_US.UTF-8, ICU) neither
-- LIKE 'prefix%' nor a range can use it, so a prefix lookup would read the whole table (0.5 s at
-- 10^6 runs). text_pattern_ops orders by code point, which is what `id ~>=~ $1 AND id ~<~ $2`
-- (Store.find_run_ids) asks: 0.4 ms at 10^6 runs. Building it takes about 1.5 s per 10^6 runs.
CREATE INDEX runs_id_prefix ON runs (id text_pattern_ops);
