package store

import (
	"context"
	"crypto/md5"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// archiveChunkSize is the size of one stored piece of a zip archive.
const archiveChunkSize = 1 << 20

// ErrArchiveTooLarge is returned when an uploaded zip exceeds the configured limit.
var ErrArchiveTooLarge = errors.New("code archive too large")

// CodeSettings are what one upload (one revision) says about a code.
type CodeSettings struct {
	Name            string
	Image           string
	Command         string
	Runtime         string
	Stack           string
	FileName        string
	Config          *string           // nil = none
	EnvVars         map[string]string // nil = none
	MaxConcurrency  *int              // nil (or ≤ 0) = unlimited
	Retries         int
	RetriesDelay    int
	DefaultPriority *int
}

// Code is a code package as of its latest revision.
type Code struct {
	ID               string
	ProjectID        string
	Name             string
	Rev              int
	LatestRevisionID string
	Paused           bool
	CreatedAt        time.Time
	UpdatedAt        time.Time
	Revision         CodeRevision
}

// CodeRevision is one upload of a code.
type CodeRevision struct {
	ID          string
	CodeID      string
	ProjectID   string
	Name        string
	Rev         int
	Settings    CodeSettings
	ArchiveSize *int64 // nil when the code is only an image
	Checksum    string
	CreatedAt   time.Time
}

// EffectiveMaxConcurrency is what the API shows: -1 while paused.
func (c Code) EffectiveMaxConcurrency() *int {
	if c.Paused {
		m := -1
		return &m
	}
	return c.Revision.Settings.MaxConcurrency
}

// CodeUpload is one pending upload. Archive may be nil (an image-only code); when set, it
// is read to EOF and stored in chunks within the same transaction as the revision.
type CodeUpload struct {
	Settings     CodeSettings
	Archive      io.Reader
	MaxArchiveSz int64
}

// SaveCode creates the code (revision 1) or adds a revision to the live code of that
// name, all in one transaction. Concurrent uploads of one name are serialised. An archive
// over MaxArchiveSz fails with ErrArchiveTooLarge and nothing is written. A
// MaxConcurrency of 0 or less is stored as unlimited (ironcli sends -1 for "no limit");
// an upload never pauses or resumes the code's queue.
func (s *Store) SaveCode(ctx context.Context, projectID string, up CodeUpload) (Code, error) {
	if up.Settings.MaxConcurrency != nil && *up.Settings.MaxConcurrency <= 0 {
		up.Settings.MaxConcurrency = nil
	}
	var codeID, revID string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Serialise uploads of one name within the project (also the first one, which
		// has no row to lock yet).
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, projectID+"/code/"+up.Settings.Name); err != nil {
			return fmt.Errorf("lock code name: %w", err)
		}
		rev := 1
		err := tx.QueryRowContext(ctx,
			`SELECT id, rev + 1 FROM codes WHERE project_id = $1 AND name = $2 AND deleted_at IS NULL FOR UPDATE`,
			projectID, up.Settings.Name).Scan(&codeID, &rev)
		isNew := errors.Is(err, sql.ErrNoRows)
		if err != nil && !isNew {
			return fmt.Errorf("find code: %w", err)
		}
		if isNew {
			codeID = NewID()
		}
		revID = NewID()

		var size *int64
		checksum := ""
		if up.Archive != nil {
			n, sum, err := s.storeArchive(ctx, tx, revID, up.Archive, up.MaxArchiveSz)
			if err != nil {
				return err
			}
			size, checksum = &n, sum
		}
		configSealed, envSealed, err := s.sealSettings(up.Settings)
		if err != nil {
			return err
		}
		st := up.Settings
		if _, err := tx.ExecContext(ctx, `INSERT INTO code_revisions
			(id, code_id, project_id, rev, image, command, runtime, stack, file_name, config_sealed, env_vars_sealed,
			 max_concurrency, retries, retries_delay, default_priority, archive_size, checksum)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)`,
			revID, codeID, projectID, rev, st.Image, st.Command, st.Runtime, st.Stack, st.FileName, configSealed, envSealed,
			st.MaxConcurrency, st.Retries, st.RetriesDelay, st.DefaultPriority, size, checksum); err != nil {
			return fmt.Errorf("insert revision: %w", err)
		}
		if isNew {
			_, err = tx.ExecContext(ctx, `INSERT INTO codes (id, project_id, name, rev, latest_revision_id) VALUES ($1,$2,$3,$4,$5)`,
				codeID, projectID, st.Name, rev, revID)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE codes SET rev = $2, latest_revision_id = $3, updated_at = now() WHERE id = $1`,
				codeID, rev, revID)
		}
		if err != nil {
			return fmt.Errorf("save code row: %w", err)
		}
		return nil
	})
	if err != nil {
		return Code{}, fmt.Errorf("save code %q: %w", up.Settings.Name, err)
	}
	return s.GetCode(ctx, projectID, codeID)
}

func (s *Store) storeArchive(ctx context.Context, tx *sql.Tx, revID string, r io.Reader, limit int64) (int64, string, error) {
	h := md5.New()
	buf := make([]byte, archiveChunkSize)
	var total int64
	for seq := 0; ; seq++ {
		n, err := fillChunk(r, buf)
		if n > 0 {
			total += int64(n)
			if limit > 0 && total > limit {
				return 0, "", fmt.Errorf("%w: more than %d bytes", ErrArchiveTooLarge, limit)
			}
			h.Write(buf[:n])
			if _, err := tx.ExecContext(ctx, `INSERT INTO code_archive_chunks (revision_id, seq, data) VALUES ($1, $2, $3)`,
				revID, seq, buf[:n]); err != nil {
				return 0, "", fmt.Errorf("store archive chunk %d: %w", seq, err)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, "", fmt.Errorf("read archive: %w", err)
		}
	}
	return total, hex.EncodeToString(h.Sum(nil)), nil
}

// fillChunk reads until buf is full or the reader ends. Unlike io.ReadFull it reports only
// a clean end as io.EOF: a reader that fails with io.ErrUnexpectedEOF (a multipart part
// cut short by a dropped connection) is an error, never a complete archive.
func fillChunk(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (s *Store) sealSettings(st CodeSettings) (config, env []byte, err error) {
	if st.Config != nil {
		if config, err = s.sealer.Seal([]byte(*st.Config)); err != nil {
			return nil, nil, fmt.Errorf("seal config: %w", err)
		}
	}
	if st.EnvVars != nil {
		raw, err := json.Marshal(st.EnvVars)
		if err != nil {
			return nil, nil, fmt.Errorf("encode env_vars: %w", err)
		}
		if env, err = s.sealer.Seal(raw); err != nil {
			return nil, nil, fmt.Errorf("seal env_vars: %w", err)
		}
	}
	return config, env, nil
}

func (s *Store) openSettings(st *CodeSettings, config, env []byte) error {
	if config != nil {
		plain, err := s.sealer.Open(config)
		if err != nil {
			return fmt.Errorf("open config: %w", err)
		}
		c := string(plain)
		st.Config = &c
	}
	if env != nil {
		plain, err := s.sealer.Open(env)
		if err != nil {
			return fmt.Errorf("open env_vars: %w", err)
		}
		if err := json.Unmarshal(plain, &st.EnvVars); err != nil {
			return fmt.Errorf("decode env_vars: %w", err)
		}
	}
	return nil
}

const revisionColumns = `r.id, r.code_id, r.project_id, r.rev, r.image, r.command, r.runtime, r.stack, r.file_name,
	r.config_sealed, r.env_vars_sealed, r.max_concurrency, r.retries, r.retries_delay, r.default_priority,
	r.archive_size, r.checksum, r.created_at`

type rowScanner interface{ Scan(dest ...any) error }

func (s *Store) scanRevision(row rowScanner, extra ...any) (CodeRevision, error) {
	var r CodeRevision
	var config, env []byte
	var maxConc, defPrio, size sql.NullInt64
	dest := append([]any{&r.ID, &r.CodeID, &r.ProjectID, &r.Rev, &r.Settings.Image, &r.Settings.Command,
		&r.Settings.Runtime, &r.Settings.Stack, &r.Settings.FileName, &config, &env, &maxConc,
		&r.Settings.Retries, &r.Settings.RetriesDelay, &defPrio, &size, &r.Checksum, &r.CreatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return CodeRevision{}, err
	}
	r.Settings.MaxConcurrency = nullInt(maxConc)
	r.Settings.DefaultPriority = nullInt(defPrio)
	if size.Valid {
		r.ArchiveSize = &size.Int64
	}
	if err := s.openSettings(&r.Settings, config, env); err != nil {
		return CodeRevision{}, fmt.Errorf("revision %s: %w", r.ID, err)
	}
	return r, nil
}

const codeSelect = `SELECT ` + revisionColumns + `, c.id, c.project_id, c.name, c.rev, c.latest_revision_id, c.paused, c.created_at, c.updated_at
	FROM codes c JOIN code_revisions r ON r.id = c.latest_revision_id`

func (s *Store) scanCode(row rowScanner) (Code, error) {
	var c Code
	rev, err := s.scanRevision(row, &c.ID, &c.ProjectID, &c.Name, &c.Rev, &c.LatestRevisionID, &c.Paused, &c.CreatedAt, &c.UpdatedAt)
	if err != nil {
		return Code{}, err
	}
	rev.Name = c.Name
	rev.Settings.Name = c.Name
	c.Revision = rev
	return c, nil
}

func (s *Store) getCodeWhere(ctx context.Context, where string, args ...any) (Code, error) {
	c, err := s.scanCode(s.db.QueryRowContext(ctx, codeSelect+` WHERE c.deleted_at IS NULL AND `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return Code{}, ErrNotFound
	}
	return c, err
}

// GetCode returns a live code of the project by id.
func (s *Store) GetCode(ctx context.Context, projectID, codeID string) (Code, error) {
	c, err := s.getCodeWhere(ctx, `c.project_id = $1 AND c.id = $2`, projectID, codeID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Code{}, fmt.Errorf("get code %s: %w", codeID, err)
	}
	return c, err
}

// GetCodeByName returns a live code of the project by name.
func (s *Store) GetCodeByName(ctx context.Context, projectID, name string) (Code, error) {
	c, err := s.getCodeWhere(ctx, `c.project_id = $1 AND c.name = $2`, projectID, name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Code{}, fmt.Errorf("get code %q: %w", name, err)
	}
	return c, err
}
