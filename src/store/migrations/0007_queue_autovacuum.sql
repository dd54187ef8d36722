-- The task table is the queue: every task is inserted, then updated three or four
-- times (leased, running, finished), and kept as history. Dead versions pile up in the
-- queue's indexes (tasks_queue, tasks_active, tasks_lease_expiry), and every lease scan
-- walks over them: after 200k completions a lease read ~1000 index pages instead of
-- ~40. The defaults vacuum a table once a fifth of it is dead and analyze it once a
-- tenth changed, which on a table of millions of rows of history is far too late, and
-- stale statistics made the planner expect 150k queued rows where 1000 were left.
ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);
