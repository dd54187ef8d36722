package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// SaveRegistryCredentials stores (sealed) the docker login JSON for one registry.
func (s *Store) SaveRegistryCredentials(ctx context.Context, projectID, serverAddress string, authJSON []byte) error {
	sealed, err := s.sealer.Seal(authJSON)
	if err != nil {
		return fmt.Errorf("seal registry credentials: %w", err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO registry_credentials (project_id, server_address, auth_sealed)
		VALUES ($1, $2, $3)
		ON CONFLICT (project_id, server_address) DO UPDATE SET auth_sealed = EXCLUDED.auth_sealed, updated_at = now()`,
		projectID, serverAddress, sealed)
	if err != nil {
		return fmt.Errorf("save registry credentials for %s: %w", serverAddress, err)
	}
	return nil
}

// RegistryCredentials returns the docker login JSON stored for one registry.
func (s *Store) RegistryCredentials(ctx context.Context, projectID, serverAddress string) ([]byte, error) {
	var sealed []byte
	err := s.db.QueryRowContext(ctx, `SELECT auth_sealed FROM registry_credentials WHERE project_id = $1 AND server_address = $2`,
		projectID, serverAddress).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get registry credentials for %s: %w", serverAddress, err)
	}
	plain, err := s.sealer.Open(sealed)
	if err != nil {
		return nil, fmt.Errorf("registry credentials for %s: %w", serverAddress, err)
	}
	return plain, nil
}

// sealedColumns lists every sealed column, for key rotation.
var sealedColumns = []struct{ table, column, key string }{
	{"code_revisions", "config_sealed", "id"},
	{"code_revisions", "env_vars_sealed", "id"},
	{"registry_credentials", "auth_sealed", "ctid"},
}

// RotateKeys re-seals with the active key every value sealed with another key, in
// batches, and returns how many values it re-sealed. Once it returns, old keys can be
// removed from the config.
func (s *Store) RotateKeys(ctx context.Context) (int, error) {
	active := s.sealer.ActiveKey()
	total := 0
	for _, col := range sealedColumns {
		for {
			n, err := s.rotateBatch(ctx, col.table, col.column, col.key, active)
			if err != nil {
				return total, fmt.Errorf("rotate %s.%s: %w", col.table, col.column, err)
			}
			total += n
			if n == 0 {
				break
			}
		}
	}
	return total, nil
}

func (s *Store) rotateBatch(ctx context.Context, table, column, key, active string) (int, error) {
	// The label sits at bytes 3..(2+len) of a sealed value; see package secrets.
	prefix := append([]byte{1, byte(len(active))}, active...)
	n := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(`SELECT %[1]s::text, %[2]s FROM %[3]s
			WHERE %[2]s IS NOT NULL AND substring(%[2]s from 1 for $1) <> $2 LIMIT 200 FOR UPDATE`, key, column, table),
			len(prefix), prefix)
		if err != nil {
			return err
		}
		type item struct {
			key    string
			sealed []byte
		}
		var items []item
		for rows.Next() {
			var it item
			if err := rows.Scan(&it.key, &it.sealed); err != nil {
				rows.Close()
				return err
			}
			items = append(items, it)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, it := range items {
			plain, err := s.sealer.Open(it.sealed)
			if err != nil {
				return err
			}
			resealed, err := s.sealer.Seal(plain)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET %s = $1 WHERE %s::text = $2`, table, column, key), resealed, it.key); err != nil {
				return err
			}
		}
		n = len(items)
		return nil
	})
	return n, err
}
