-- Idempotency keys (issue 9): a client that sends `Idempotency-Key` on POST /tasks or
-- POST /schedules and retries after a lost answer (or an API killed mid-request) gets the
-- first answer again and no second copy. The key is recorded in the same transaction as
-- the rows it created, so a batch and its key are both present or both absent. route
-- tells a task key from a schedule key; request_hash is SHA-256 of the request body (a
-- different body under a used key is refused); response is what the request created
-- (the ids, in order). Keys live 24 hours: expired ones are ignored, overwritten by a new
-- use, and deleted in small bounded batches (store.PurgeIdempotencyKeys).
CREATE TABLE idempotency_keys (
    project_id   text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    key          text NOT NULL,
    route        text NOT NULL,
    request_hash bytea NOT NULL,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Bounded task logs (issue 9, limits): how many bytes of output a task has stored, and
-- whether the truncation note was written (after it, output is dropped).
ALTER TABLE tasks
    ADD COLUMN log_bytes     bigint  NOT NULL DEFAULT 0,
    ADD COLUMN log_truncated boolean NOT NULL DEFAULT false;
