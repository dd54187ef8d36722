package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The Open Service Broker's SQL: a service instance is a project with its plan's quotas,
// a binding is a token of that project. Every change is one transaction.

// ErrInstanceNotFound: a binding names a service instance that does not exist.
var ErrInstanceNotFound = errors.New("service instance not found")

func init() {
	// Binding credentials hold a token: `iron-api admin rotate-keys` re-seals them too.
	sealedColumns = append(sealedColumns, struct{ table, column, key string }{"broker_bindings", "credentials_sealed", "id"})
}

// Instance is a provisioned service instance.
type Instance struct {
	ID               string
	ProjectID        string
	ServiceID        string
	PlanID           string
	OrganizationGUID string
	SpaceGUID        string
	Parameters       json.RawMessage
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// NewInstance is a provision request as the broker validated it.
type NewInstance struct {
	ID               string
	ServiceID        string
	PlanID           string
	OrganizationGUID string
	SpaceGUID        string
	// ProjectName names the new project (the CF instance name when Cloud Controller
	// sends it).
	ProjectName string
	Parameters  json.RawMessage
	Context     json.RawMessage
	Quotas      Quotas
}

func jsonOrEmpty(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return "{}"
	}
	return string(raw)
}

const instanceColumns = `id, project_id, service_id, plan_id, organization_guid, space_guid, parameters, created_at, updated_at`

func scanInstance(row rowScanner) (Instance, error) {
	var in Instance
	var params []byte
	err := row.Scan(&in.ID, &in.ProjectID, &in.ServiceID, &in.PlanID, &in.OrganizationGUID, &in.SpaceGUID, &params,
		&in.CreatedAt, &in.UpdatedAt)
	in.Parameters = params
	return in, err
}

// ProvisionInstance creates the instance and its project, with the plan's quotas. An
// instance of that id with the same service, plan, org, space and parameters is returned
// as it is with created false; one that differs gives ErrConflict.
func (s *Store) ProvisionInstance(ctx context.Context, ni NewInstance) (Instance, bool, error) {
	var out Instance
	var created bool
	attempt := func() error {
		return s.inTx(ctx, func(tx *sql.Tx) error {
			var same bool
			existing, err := scanInstance(tx.QueryRowContext(ctx, `SELECT `+instanceColumns+` FROM broker_instances WHERE id = $1`, ni.ID))
			if err == nil {
				if err := tx.QueryRowContext(ctx, `SELECT service_id = $2 AND plan_id = $3 AND organization_guid = $4
					AND space_guid = $5 AND parameters = $6::jsonb FROM broker_instances WHERE id = $1`,
					ni.ID, ni.ServiceID, ni.PlanID, ni.OrganizationGUID, ni.SpaceGUID, jsonOrEmpty(ni.Parameters)).Scan(&same); err != nil {
					return fmt.Errorf("compare instance: %w", err)
				}
				if !same {
					return ErrConflict
				}
				out, created = existing, false
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read instance: %w", err)
			}
			projectID := NewID()
			args := append([]any{projectID, ni.ProjectName, ni.PlanID}, quotaArgs(ni.Quotas)...)
			if _, err := tx.ExecContext(ctx, `INSERT INTO projects (id, name, plan_id, max_concurrency, max_timeout_seconds,
				max_payload_bytes, max_queued_tasks, max_schedules, allowed_priorities)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, args...); err != nil {
				return fmt.Errorf("insert project: %w", err)
			}
			out, err = scanInstance(tx.QueryRowContext(ctx, `INSERT INTO broker_instances
				(id, project_id, service_id, plan_id, organization_guid, space_guid, parameters, context)
				VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb) RETURNING `+instanceColumns,
				ni.ID, projectID, ni.ServiceID, ni.PlanID, ni.OrganizationGUID, ni.SpaceGUID,
				jsonOrEmpty(ni.Parameters), jsonOrEmpty(ni.Context)))
			if err != nil {
				return err
			}
			created = true
			return nil
		})
	}
	err := attempt()
	if err != nil && isUniqueViolation(err) {
		// A concurrent provision of the same id won: compare with what it made.
		err = attempt()
	}
	if errors.Is(err, ErrConflict) {
		return Instance{}, false, ErrConflict
	}
	if err != nil {
		return Instance{}, false, fmt.Errorf("provision instance %s: %w", ni.ID, err)
	}
	return out, created, nil
}

// GetInstance returns a provisioned instance, or ErrNotFound.
func (s *Store) GetInstance(ctx context.Context, id string) (Instance, error) {
	in, err := scanInstance(s.db.QueryRowContext(ctx, `SELECT `+instanceColumns+` FROM broker_instances WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Instance{}, ErrNotFound
	}
	if err != nil {
		return Instance{}, fmt.Errorf("get instance %s: %w", id, err)
	}
	return in, nil
}

// InstanceUpdate changes an instance's plan (and so its project's quotas) and/or its
// parameters; nil Parameters keeps them.
type InstanceUpdate struct {
	PlanID     string
	Quotas     Quotas
	Parameters json.RawMessage
	Context    json.RawMessage
}

// UpdateInstance applies a plan change. A plan whose max_queued_tasks or max_schedules is
// below the project's current use is refused with *QuotaError and nothing changes.
// ErrNotFound when the instance does not exist.
func (s *Store) UpdateInstance(ctx context.Context, id string, u InstanceUpdate) (Instance, error) {
	var out Instance
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var projectID string
		err := tx.QueryRowContext(ctx, `SELECT project_id FROM broker_instances WHERE id = $1 FOR UPDATE`, id).Scan(&projectID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read instance: %w", err)
		}
		if _, err := lockedQuotas(ctx, tx, projectID, true); err != nil {
			return err
		}
		var queued, schedules int
		if err := tx.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM tasks WHERE project_id = $1 AND status = 'queued'),
			(SELECT count(*) FROM schedules WHERE project_id = $1 AND status = 'scheduled')`, projectID).Scan(&queued, &schedules); err != nil {
			return fmt.Errorf("read project use: %w", err)
		}
		if m := u.Quotas.MaxQueuedTasks; m != nil && queued > *m {
			return &QuotaError{Limit: "max_queued_tasks", Max: *m, Current: queued}
		}
		if m := u.Quotas.MaxSchedules; m != nil && schedules > *m {
			return &QuotaError{Limit: "max_schedules", Max: *m, Current: schedules}
		}
		args := append([]any{projectID, u.PlanID}, quotaArgs(u.Quotas)...)
		if _, err := tx.ExecContext(ctx, `UPDATE projects SET plan_id = $2, max_concurrency = $3, max_timeout_seconds = $4,
			max_payload_bytes = $5, max_queued_tasks = $6, max_schedules = $7, allowed_priorities = $8, updated_at = now()
			WHERE id = $1`, args...); err != nil {
			return fmt.Errorf("update project quotas: %w", err)
		}
		var params, ctxJSON any
		if u.Parameters != nil {
			params = jsonOrEmpty(u.Parameters)
		}
		if len(u.Context) > 0 {
			ctxJSON = jsonOrEmpty(u.Context)
		}
		out, err = scanInstance(tx.QueryRowContext(ctx, `UPDATE broker_instances SET plan_id = $2,
			parameters = coalesce($3::jsonb, parameters), context = coalesce($4::jsonb, context), updated_at = now()
			WHERE id = $1 RETURNING `+instanceColumns, id, u.PlanID, params, ctxJSON))
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return Instance{}, ErrNotFound
	}
	var qe *QuotaError
	if errors.As(err, &qe) {
		return Instance{}, qe
	}
	if err != nil {
		return Instance{}, fmt.Errorf("update instance %s: %w", id, err)
	}
	return out, nil
}

// Deprovisioned tells what a deprovision did.
type Deprovisioned struct {
	ProjectID          string
	CancelledQueued    int
	CancelledRunning   int
	CancelledSchedules int
	RevokedTokens      int
}

// DeprovisionMsg is the msg of the tasks that a deprovision cancelled.
const DeprovisionMsg = "Cancelled: the service instance was deleted"

// DeprovisionInstance ends an instance in one transaction: its queued tasks and the ones
// runners hold are cancelled (runners learn it on their next heartbeat), its schedules
// cancelled, every token of the project revoked (bindings included), the instance and
// its bindings removed and the project disabled (deleted_at); PurgeDeletedProjects
// deletes it later. ErrNotFound when the instance does not exist. Nothing of another
// project is touched.
func (s *Store) DeprovisionInstance(ctx context.Context, id string) (Deprovisioned, error) {
	var d Deprovisioned
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		d = Deprovisioned{}
		err := tx.QueryRowContext(ctx, `SELECT project_id FROM broker_instances WHERE id = $1 FOR UPDATE`, id).Scan(&d.ProjectID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read instance: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM projects WHERE id = $1 FOR UPDATE`, d.ProjectID); err != nil {
			return fmt.Errorf("lock project: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `WITH c AS (
				SELECT id, status FROM tasks WHERE project_id = $1 AND status IN `+activeStatuses+` FOR UPDATE)
			UPDATE tasks t SET status = 'cancelled', msg = $2, end_time = now(), updated_at = now()
			FROM c WHERE t.id = c.id RETURNING c.status`, d.ProjectID, DeprovisionMsg)
		if err != nil {
			return fmt.Errorf("cancel tasks: %w", err)
		}
		for rows.Next() {
			var st string
			if err := rows.Scan(&st); err != nil {
				rows.Close()
				return fmt.Errorf("cancel tasks: %w", err)
			}
			if st == "queued" {
				d.CancelledQueued++
			} else {
				d.CancelledRunning++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("cancel tasks: %w", err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE schedules SET status = 'cancelled', next_start = NULL, updated_at = now()
			WHERE project_id = $1 AND status = 'scheduled'`, d.ProjectID)
		if err != nil {
			return fmt.Errorf("cancel schedules: %w", err)
		}
		n, _ := res.RowsAffected()
		d.CancelledSchedules = int(n)
		if res, err = tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = now() WHERE project_id = $1 AND revoked_at IS NULL`, d.ProjectID); err != nil {
			return fmt.Errorf("revoke tokens: %w", err)
		}
		n, _ = res.RowsAffected()
		d.RevokedTokens = int(n)
		if _, err := tx.ExecContext(ctx, `DELETE FROM broker_instances WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete instance: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE projects SET deleted_at = now(), updated_at = now() WHERE id = $1`, d.ProjectID); err != nil {
			return fmt.Errorf("disable project: %w", err)
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return Deprovisioned{}, ErrNotFound
	}
	if err != nil {
		return Deprovisioned{}, fmt.Errorf("deprovision instance %s: %w", id, err)
	}
	s.tokensRevoked()
	return d, nil
}

// PurgeDeletedProjects deletes the projects disabled more than olderThan ago, with
// everything they own, and returns how many it deleted. Their tasks go by name (tasks
// has no foreign keys, see migration 0008); the rest by ON DELETE CASCADE. A disabled
// project takes no new task, so none can appear behind the delete.
func (s *Store) PurgeDeletedProjects(ctx context.Context, olderThan time.Duration) (int, error) {
	res, err := s.db.ExecContext(ctx, `WITH gone AS (
			SELECT id FROM projects WHERE deleted_at IS NOT NULL
			AND deleted_at <= now() - $1::bigint * interval '1 millisecond'
			FOR UPDATE),
		t AS (DELETE FROM tasks WHERE project_id IN (SELECT id FROM gone))
		DELETE FROM projects WHERE id IN (SELECT id FROM gone)`, olderThan.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("purge deleted projects: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// ProjectDeleted tells whether a project is disabled (deprovisioned) or gone.
func (s *Store) ProjectDeleted(ctx context.Context, projectID string) (bool, error) {
	var live bool
	err := s.db.QueryRowContext(ctx, `SELECT deleted_at IS NULL FROM projects WHERE id = $1`, projectID).Scan(&live)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read project %s: %w", projectID, err)
	}
	return !live, nil
}

// NewBinding is a bind request as the broker validated it.
type NewBinding struct {
	ID           string
	InstanceID   string
	ServiceID    string
	PlanID       string
	AppGUID      string
	BindResource json.RawMessage
	Parameters   json.RawMessage
}

// Credentials builds a binding's credentials from its project id and fresh token.
type Credentials func(projectID, token string) ([]byte, error)

// CreateBinding adds a token to the instance's project and stores the binding with its
// credentials (sealed), returning the credentials. A binding of that id with the same
// instance, service, plan, app, bind_resource and parameters returns the credentials it
// was made with, created false; one that differs gives ErrConflict. An unknown instance
// gives ErrInstanceNotFound.
func (s *Store) CreateBinding(ctx context.Context, nb NewBinding, creds Credentials) ([]byte, bool, error) {
	var out []byte
	var created bool
	attempt := func() error {
		return s.inTx(ctx, func(tx *sql.Tx) error {
			var projectID string
			err := tx.QueryRowContext(ctx, `SELECT project_id FROM broker_instances WHERE id = $1 FOR SHARE`, nb.InstanceID).Scan(&projectID)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrInstanceNotFound
			}
			if err != nil {
				return fmt.Errorf("read instance: %w", err)
			}
			var same bool
			var sealed []byte
			err = tx.QueryRowContext(ctx, `SELECT instance_id = $2 AND service_id = $3 AND plan_id = $4 AND app_guid = $5
				AND bind_resource = $6::jsonb AND parameters = $7::jsonb, credentials_sealed FROM broker_bindings WHERE id = $1`,
				nb.ID, nb.InstanceID, nb.ServiceID, nb.PlanID, nb.AppGUID, jsonOrEmpty(nb.BindResource), jsonOrEmpty(nb.Parameters)).
				Scan(&same, &sealed)
			if err == nil {
				if !same {
					return ErrConflict
				}
				if out, err = s.sealer.Open(sealed); err != nil {
					return fmt.Errorf("open binding credentials: %w", err)
				}
				created = false
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read binding: %w", err)
			}
			token := NewToken()
			if _, err := tx.ExecContext(ctx, `INSERT INTO tokens (token_hash, project_id, description) VALUES ($1, $2, $3)`,
				HashToken(token), projectID, "service binding "+nb.ID); err != nil {
				return fmt.Errorf("insert token: %w", err)
			}
			if out, err = creds(projectID, token); err != nil {
				return err
			}
			if sealed, err = s.sealer.Seal(out); err != nil {
				return fmt.Errorf("seal binding credentials: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO broker_bindings
				(id, instance_id, service_id, plan_id, app_guid, bind_resource, parameters, token_hash, credentials_sealed)
				VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9)`,
				nb.ID, nb.InstanceID, nb.ServiceID, nb.PlanID, nb.AppGUID, jsonOrEmpty(nb.BindResource),
				jsonOrEmpty(nb.Parameters), HashToken(token), sealed); err != nil {
				return fmt.Errorf("insert binding: %w", err)
			}
			created = true
			return nil
		})
	}
	err := attempt()
	if err != nil && isUniqueViolation(err) {
		err = attempt()
	}
	switch {
	case errors.Is(err, ErrConflict), errors.Is(err, ErrInstanceNotFound):
		return nil, false, err
	case err != nil:
		return nil, false, fmt.Errorf("bind %s to instance %s: %w", nb.ID, nb.InstanceID, err)
	}
	return out, created, nil
}

// Binding is a stored binding with its credentials in the clear.
type Binding struct {
	ID          string
	InstanceID  string
	Credentials []byte
	Parameters  json.RawMessage
}

// GetBinding returns a binding of the instance, or ErrNotFound.
func (s *Store) GetBinding(ctx context.Context, instanceID, bindingID string) (Binding, error) {
	b := Binding{ID: bindingID, InstanceID: instanceID}
	var sealed, params []byte
	err := s.db.QueryRowContext(ctx, `SELECT credentials_sealed, parameters FROM broker_bindings WHERE id = $1 AND instance_id = $2`,
		bindingID, instanceID).Scan(&sealed, &params)
	if errors.Is(err, sql.ErrNoRows) {
		return Binding{}, ErrNotFound
	}
	if err != nil {
		return Binding{}, fmt.Errorf("get binding %s: %w", bindingID, err)
	}
	b.Parameters = params
	if b.Credentials, err = s.sealer.Open(sealed); err != nil {
		return Binding{}, fmt.Errorf("open binding credentials: %w", err)
	}
	return b, nil
}

// DeleteBinding revokes the binding's token at once and removes the binding, in one
// transaction. ErrNotFound when the instance has no such binding.
func (s *Store) DeleteBinding(ctx context.Context, instanceID, bindingID string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var hash []byte
		err := tx.QueryRowContext(ctx, `DELETE FROM broker_bindings WHERE id = $1 AND instance_id = $2 RETURNING token_hash`,
			bindingID, instanceID).Scan(&hash)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("delete binding: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL`, hash); err != nil {
			return fmt.Errorf("revoke token: %w", err)
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("unbind %s: %w", bindingID, err)
	}
	s.tokensRevoked()
	return nil
}
