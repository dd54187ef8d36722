package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// IdempotencyTTL is how long an idempotency key is remembered.
const IdempotencyTTL = 24 * time.Hour

// idempotencyPurgeBatch bounds the expired keys one purge deletes.
const idempotencyPurgeBatch = 100

// ErrIdempotencyMismatch: the key was already used, within its lifetime, for another
// request (another body, or another route).
var ErrIdempotencyMismatch = errors.New("idempotency key already used for a different request")

// Idempotency names a client's retry-safe request: its key (unique per project), the
// route it was used on and a hash of the request body.
type Idempotency struct {
	Key         string
	Route       string
	RequestHash []byte
}

// claimIdempotency records the key at the start of tx, or finds its earlier use. A
// concurrent request with the same key waits here until the first one commits (then
// replays it) or rolls back (then claims the key itself). replay reports an earlier
// use with the same route and hash, whose ids it returns.
func claimIdempotency(ctx context.Context, tx *sql.Tx, projectID string, idem *Idempotency) (ids []string, replay bool, err error) {
	var claimed bool
	err = tx.QueryRowContext(ctx, `INSERT INTO idempotency_keys (project_id, key, route, request_hash)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (project_id, key) DO UPDATE
			SET route = EXCLUDED.route, request_hash = EXCLUDED.request_hash, response = NULL, created_at = now()
			WHERE idempotency_keys.created_at < now() - make_interval(secs => $5)
		RETURNING true`, projectID, idem.Key, idem.Route, idem.RequestHash, IdempotencyTTL.Seconds()).Scan(&claimed)
	if err == nil {
		return nil, false, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("claim idempotency key: %w", err)
	}
	var route string
	var hash, response []byte
	if err := tx.QueryRowContext(ctx, `SELECT route, request_hash, response FROM idempotency_keys
		WHERE project_id = $1 AND key = $2`, projectID, idem.Key).Scan(&route, &hash, &response); err != nil {
		return nil, false, fmt.Errorf("read idempotency key: %w", err)
	}
	if route != idem.Route || !bytes.Equal(hash, idem.RequestHash) || response == nil {
		return nil, false, ErrIdempotencyMismatch
	}
	if err := json.Unmarshal(response, &ids); err != nil {
		return nil, false, fmt.Errorf("idempotency key response: %w", err)
	}
	return ids, true, nil
}

// recordIdempotency stores what the request created, in the same transaction.
func recordIdempotency(ctx context.Context, tx *sql.Tx, projectID string, idem *Idempotency, ids []string) error {
	raw, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE idempotency_keys SET response = $3 WHERE project_id = $1 AND key = $2`,
		projectID, idem.Key, raw); err != nil {
		return fmt.Errorf("record idempotency key: %w", err)
	}
	return nil
}

// PurgeIdempotencyKeys deletes at most limit expired keys (oldest first), skipping rows
// another instance is deleting, and returns how many it deleted.
func (s *Store) PurgeIdempotencyKeys(ctx context.Context, limit int) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
		SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)
		ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))`, IdempotencyTTL.Seconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("purge idempotency keys: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// purgeAfterClaim keeps the table bounded without a separate job: every newly claimed
// key deletes up to idempotencyPurgeBatch expired ones. Best effort.
func (s *Store) purgeAfterClaim(ctx context.Context) {
	if _, err := s.PurgeIdempotencyKeys(ctx, idempotencyPurgeBatch); err != nil && s.log != nil {
		s.log.Warn("purge idempotency keys", "error", err.Error())
	}
}
