-- Runner leases (issue 3). A task in 'preparing' or 'running' is held by one lease: the
-- runner that leased it must heartbeat before lease_expires_at, or the reaper takes the
-- task back. backend_ref is the backend's reference for the started task (see
-- src/backend); it survives a lost lease so that the next runner can adopt the task.
ALTER TABLE tasks
    ADD COLUMN lease_id          text,
    ADD COLUMN lease_expires_at  timestamptz,
    ADD COLUMN runner_id         text,
    ADD COLUMN backend_ref       text,
    ADD COLUMN backend_adoptable boolean NOT NULL DEFAULT false,
    ADD COLUMN lease_count       integer NOT NULL DEFAULT 0;

-- What the reaper scans: held tasks by lease expiry.
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE status IN ('preparing', 'running');

-- Cancelled tasks that may still run on their backend and that no runner holds: the
-- lease hands them out to be stopped.
CREATE INDEX tasks_cancel_pending ON tasks (updated_at)
    WHERE status = 'cancelled' AND lease_id IS NULL AND backend_ref IS NOT NULL AND backend_adoptable;
-- Cancelled while held: the reaper watches their lease until the holder completes them.
CREATE INDEX tasks_cancel_lease_expiry ON tasks (lease_expires_at)
    WHERE status = 'cancelled' AND lease_expires_at IS NOT NULL;

-- Each code's queue head, for leases when paused or full codes' backlogs fill the
-- front of the global queue (tasks_queue).
CREATE INDEX tasks_code_queue ON tasks (code_id, priority, run_at, id) WHERE status = 'queued';
-- What the lease's max_concurrency accounting reads besides the held tasks: tasks queued
-- for adoption (they still run on their backend), and the paused codes.
CREATE INDEX tasks_adoptable ON tasks (code_id) WHERE status = 'queued' AND backend_ref IS NOT NULL;
CREATE INDEX codes_paused ON codes (id) WHERE paused AND deleted_at IS NULL;
