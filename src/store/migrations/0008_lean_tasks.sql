-- Every queued task is an insert and two or three non-HOT updates of tasks, and each of
-- those writes every index and fires every foreign-key trigger of the table: they were
-- most of an enqueue's and a lease's cost in scripts/bench.
--
-- The two foreign keys checked, per inserted row, a project and a code that the insert
-- itself had just read (and, for the code, locked): all they still did was cascade the
-- purge of a deprovisioned project, which now deletes its tasks itself
-- (PurgeDeletedProjects). Codes are never deleted but with their project.
ALTER TABLE tasks DROP CONSTRAINT tasks_code_id_fkey;
ALTER TABLE tasks DROP CONSTRAINT tasks_project_id_fkey;

-- tasks_active (status of queued, preparing and running tasks) is the union of two
-- partial indexes the queue keeps anyway: tasks_queue (every queued task) and
-- tasks_lease_expiry (every preparing or running one).
DROP INDEX tasks_active;

-- Every lease reads the active tasks to find the codes and projects at their
-- max_concurrency; where no code revision and no project has one (no plan quota, no
-- capped code) there is nothing to find, and these make that a probe each.
CREATE INDEX code_revisions_capped ON code_revisions (id) WHERE max_concurrency IS NOT NULL;
CREATE INDEX projects_capped ON projects (id) WHERE max_concurrency IS NOT NULL;

-- tasks_code_status (code_id, status) held every task of history and took a new entry
-- on every insert and status change; what reads it by code wants the tasks in flight
-- (max_concurrency counts, cancel_all), while queued ones are in tasks_code_queue.
-- Counts by status over time (CodeTaskCounts) read tasks_project_created.
DROP INDEX tasks_code_status;
CREATE INDEX tasks_code_active ON tasks (code_id) WHERE status IN ('preparing', 'running');
