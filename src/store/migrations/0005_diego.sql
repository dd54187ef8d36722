-- Diego backend (issue 5). A CF task cannot be given a 64 KiB payload in its command, so
-- its container fetches payload and config from the API with a short-lived credential
-- that the runner obtained for that one task (POST /internal/v1/tasks/:id/input-token).
-- Only a SHA-256 of the token is kept. A task may hold several (one per lease that
-- asked: a runner that adopts a CF task started by an earlier lease must not invalidate
-- the token printed in that task's command). A token is accepted while its task has not
-- finished; the rows go with the task.
CREATE TABLE task_input_tokens (
    token_sha256 bytea PRIMARY KEY,
    task_id      text NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_input_tokens_task ON task_input_tokens (task_id);

-- How far a backend's own log of a task (Log Cache, for diego) has been copied into
-- task_logs, reported by the lease holder once the lines are stored, so that a runner
-- adopting the task resumes there instead of appending the lines a second time.
CREATE TABLE task_log_cursors (
    task_id    text PRIMARY KEY REFERENCES tasks(id) ON DELETE CASCADE,
    cursor     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
