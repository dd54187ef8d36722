-- A task must not be queued for a code that is being deleted behind the insert's back
-- (DeleteCode cancels the code's queued tasks; a task it cannot see yet would stay
-- queued for a deleted code). The queue statements held the code row FOR SHARE for
-- that, but a row share-locked by several transactions at once takes a MultiXact, and
-- concurrent enqueues of one code made one per statement: 20% of batch enqueue
-- throughput in scripts/bench. They take this instead: a shared advisory lock per code
-- (the lock manager only: no row, no WAL), then a fresh look at the code. DeleteCode
-- takes the same lock exclusively before it marks the code deleted, so every enqueue
-- either finished before it (and its tasks are cancelled with the others) or looks
-- after it committed (and finds no code). The look is in a VOLATILE function because
-- only there does a statement of READ COMMITTED take a new snapshot after a lock wait.
CREATE FUNCTION iron_live_code_locked(code_id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('code-delete/' || code_id, 0));
    RETURN EXISTS (SELECT 1 FROM codes WHERE id = code_id AND deleted_at IS NULL);
END
$$;
