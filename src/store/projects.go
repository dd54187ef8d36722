package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

type Project struct {
	ID        string
	Name      string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// CreateProject makes a project and its first token, returning the token in the clear
// (the only time it is ever seen).
func (s *Store) CreateProject(ctx context.Context, name string) (Project, string, error) {
	p := Project{ID: NewID(), Name: name}
	token := NewToken()
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx,
			`INSERT INTO projects (id, name) VALUES ($1, $2) RETURNING created_at, updated_at`,
			p.ID, name).Scan(&p.CreatedAt, &p.UpdatedAt); err != nil {
			return fmt.Errorf("insert project: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens (token_hash, project_id, description) VALUES ($1, $2, $3)`,
			HashToken(token), p.ID, "created with the project")
		if err != nil {
			return fmt.Errorf("insert token: %w", err)
		}
		return nil
	})
	if err != nil {
		return Project{}, "", fmt.Errorf("create project %q: %w", name, err)
	}
	return p, token, nil
}

// CreateToken adds a token to a project and returns it in the clear.
func (s *Store) CreateToken(ctx context.Context, projectID, description string) (string, error) {
	token := NewToken()
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (token_hash, project_id, description) VALUES ($1, $2, $3)`,
		HashToken(token), projectID, description)
	if err != nil {
		return "", fmt.Errorf("create token for project %s: %w", projectID, err)
	}
	return token, nil
}

// TokenRevocations is a counter that changes after every token revocation made through
// this Store: caches of token lookups (the API's) drop what they took before it changed.
func (s *Store) TokenRevocations() uint64 { return s.revocations.Load() }

// tokensRevoked records, after the revoking statement or transaction committed, that
// tokens were revoked through this Store (see TokenRevocations): RevokeToken,
// DeleteBinding and DeprovisionInstance call it.
func (s *Store) tokensRevoked() { s.revocations.Add(1) }

// RevokeToken disables a token at once.
func (s *Store) RevokeToken(ctx context.Context, token string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL`, HashToken(token))
	s.tokensRevoked()
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// ProjectForToken returns the project a live token belongs to, or ErrNotFound. The
// lookup is by SHA-256 digest through the primary key, so it does not compare token
// bytes in a way that leaks timing about stored tokens.
func (s *Store) ProjectForToken(ctx context.Context, token string) (string, error) {
	var projectID string
	err := s.db.QueryRowContext(ctx,
		`SELECT project_id FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL`, HashToken(token)).Scan(&projectID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("look up token: %w", err)
	}
	return projectID, nil
}

func (s *Store) GetProject(ctx context.Context, id string) (Project, error) {
	var p Project
	err := s.db.QueryRowContext(ctx, `SELECT id, name, created_at, updated_at FROM projects WHERE id = $1`, id).
		Scan(&p.ID, &p.Name, &p.CreatedAt, &p.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Project{}, ErrNotFound
	}
	if err != nil {
		return Project{}, fmt.Errorf("get project %s: %w", id, err)
	}
	return p, nil
}
