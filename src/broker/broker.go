// Package broker is iron-api's Open Service Broker (brokerapi v13): the catalog comes
// from config, a service instance is an IronWorker project with its plan's quotas, a
// binding is a token of that project. Everything is synchronous: a project is a row.
package broker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"code.cloudfoundry.org/brokerapi/v13"
	"code.cloudfoundry.org/brokerapi/v13/auth"
	"code.cloudfoundry.org/brokerapi/v13/domain"
	"code.cloudfoundry.org/brokerapi/v13/domain/apiresponses"
	"code.cloudfoundry.org/brokerapi/v13/middlewares"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/store"
)

// MinAPIMinor is the oldest OSB 2.x minor version served. Cloud Controller sends 2.15;
// 2.14 (the first with GET instance/binding) is what the reference Go OSB client speaks.
const MinAPIMinor = 14

// Broker implements domain.ServiceBroker on the store.
type Broker struct {
	store   *store.Store
	cfg     config.Broker
	log     *slog.Logger // component=broker
	baseLog *slog.Logger
	plans   map[string]config.BrokerPlan
}

var _ domain.ServiceBroker = (*Broker)(nil)

// New makes a broker from its (validated) config.
func New(st *store.Store, cfg config.Broker, log *slog.Logger) *Broker {
	if log == nil {
		log = slog.Default()
	}
	b := &Broker{store: st, cfg: cfg, log: log.With("component", "broker"), baseLog: log, plans: map[string]config.BrokerPlan{}}
	for _, p := range cfg.Plans {
		b.plans[p.ID] = p
	}
	return b
}

// Handler is the OSB API (/v2/...) with HTTP basic auth (401 first), the API version
// check (412, with the spec's lowercase "description"; brokerapi's own check, which
// stays behind it, answers "Description") and request logging.
func (b *Broker) Handler() http.Handler {
	inner := brokerapi.New(b, b.baseLog.With("component", "brokerapi"),
		brokerapi.BrokerCredentials{Username: b.cfg.Username, Password: b.cfg.Password},
		brokerapi.WithAdditionalMiddleware(b.requestLog))
	return auth.NewWrapper(b.cfg.Username, b.cfg.Password).Wrap(b.checkVersion(inner))
}

// QuotasOf turns a plan's config into the store's quotas.
func QuotasOf(p config.BrokerPlan) store.Quotas {
	q := p.Quotas
	out := store.Quotas{PlanID: p.ID, MaxConcurrency: q.MaxConcurrency, MaxTimeoutSeconds: q.MaxTimeoutSeconds,
		MaxPayloadBytes: q.MaxPayloadBytes, MaxQueuedTasks: q.MaxQueuedTasks, MaxSchedules: q.MaxSchedules}
	if len(q.AllowedPriorities) > 0 {
		out.AllowedPriorities = append([]int(nil), q.AllowedPriorities...)
	}
	return out
}

// Run keeps the projects in step with the plans: at start it applies each configured
// plan's quotas to the existing projects on it (an operator's change of a plan reaches
// existing instances), then every minute it deletes the projects that deprovision
// disabled more than purge_after ago. It returns when ctx ends.
func (b *Broker) Run(ctx context.Context) {
	for _, p := range b.cfg.Plans {
		n, err := b.store.ApplyPlanQuotas(ctx, QuotasOf(p))
		if err != nil {
			b.log.Error("applying plan quotas failed", "plan_id", p.ID, "error", err.Error())
		} else if n > 0 {
			b.log.Info("applied changed plan quotas", "plan_id", p.ID, "plan", p.Name, "projects", n)
		}
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if n, err := b.store.PurgeDeletedProjects(ctx, b.cfg.PurgeAfter.Std()); err != nil {
			if ctx.Err() == nil {
				b.log.Warn("purging deprovisioned projects failed", "error", err.Error())
			}
		} else if n > 0 {
			b.log.Info("purged deprovisioned projects", "projects", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ---- middleware: version floor and request logging ----

// checkVersion answers 412 unless X-Broker-API-Version is 2.14 or a later 2.x.
func (b *Broker) checkVersion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := strings.TrimSpace(r.Header.Get("X-Broker-API-Version"))
		var problem string
		major, minor, _ := strings.Cut(v, ".")
		minorN, err := strconv.Atoi(minor)
		switch {
		case v == "":
			problem = "X-Broker-API-Version header is required"
		case major != "2" || err != nil:
			problem = fmt.Sprintf("X-Broker-API-Version %q is not supported: this broker serves 2.%d and later 2.x versions", v, MinAPIMinor)
		case minorN < MinAPIMinor:
			problem = fmt.Sprintf("X-Broker-API-Version %s is too old: this broker serves 2.%d and later 2.x versions", v, MinAPIMinor)
		}
		if problem == "" {
			next.ServeHTTP(w, r)
			return
		}
		b.log.Warn("osb request refused: API version", "api_version", v, "method", r.Method, "path", r.URL.Path,
			"request_identity", r.Header.Get("X-Broker-API-Request-Identity"))
		w.Header().Set("Content-Type", "application/json")
		if id := r.Header.Get("X-Broker-API-Request-Identity"); id != "" {
			w.Header().Set("X-Broker-API-Request-Identity", id)
		}
		w.WriteHeader(http.StatusPreconditionFailed)
		_ = json.NewEncoder(w).Encode(apiresponses.ErrorResponse{Description: problem})
	})
}

type logKey struct{}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// requestLog gives every operation a logger that carries the request identity and the
// originating identity (the Cloud Foundry user), and logs each request once done.
func (b *Broker) requestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		attrs := []any{"request_identity", r.Header.Get("X-Broker-API-Request-Identity"),
			"api_version", r.Header.Get("X-Broker-API-Version")}
		attrs = append(attrs, originatingIdentity(r.Header.Get("X-Broker-API-Originating-Identity"))...)
		if v := r.Header.Get("X-Vcap-Request-Id"); v != "" {
			attrs = append(attrs, "vcap_request_id", v)
		}
		log := b.log.With(attrs...)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), logKey{}, log)))
		log.Info("osb request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"duration_ms", time.Since(start).Milliseconds())
	})
}

// originatingIdentity decodes `X-Broker-API-Originating-Identity: <platform> <base64
// JSON>` into log attributes: the platform and, for Cloud Foundry, the user id.
func originatingIdentity(h string) []any {
	if h == "" {
		return nil
	}
	platform, value, _ := strings.Cut(strings.TrimSpace(h), " ")
	out := []any{"identity_platform", platform}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
	if err != nil {
		return append(out, "identity_error", "value is not base64")
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		return append(out, "identity_error", "value is not a JSON object")
	}
	if uid, ok := fields["user_id"].(string); ok {
		out = append(out, "user_id", uid)
	}
	if user, ok := fields["user"].(string); ok { // other platforms' spelling
		out = append(out, "user", user)
	}
	return out
}

func (b *Broker) logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok {
		return l
	}
	if id, _ := ctx.Value(middlewares.RequestIdentityKey).(string); id != "" {
		return b.log.With("request_identity", id)
	}
	return b.log
}

// ---- errors ----

func badRequest(format string, args ...any) error {
	return apiresponses.NewFailureResponse(fmt.Errorf(format, args...), http.StatusBadRequest, "bad-request")
}

func unprocessable(key, format string, args ...any) error {
	return apiresponses.NewFailureResponseBuilder(fmt.Errorf(format, args...), http.StatusUnprocessableEntity, key).Build()
}

// internal logs err and answers 500 with a description that names no detail.
func (b *Broker) internal(ctx context.Context, op string, err error) error {
	if store.IsUnavailable(err) {
		b.logger(ctx).Warn(op+" failed: database unavailable", "error", err.Error())
		return apiresponses.NewFailureResponse(errors.New("the service is temporarily unavailable, retry later"),
			http.StatusServiceUnavailable, op+"-unavailable")
	}
	b.logger(ctx).Error(op+" failed", "error", err.Error())
	return apiresponses.NewFailureResponse(errors.New("internal error"), http.StatusInternalServerError, op+"-failed")
}

// ---- catalog ----

// Services is the catalog: one service with the configured plans.
func (b *Broker) Services(ctx context.Context) ([]domain.Service, error) {
	s := b.cfg.Service
	plans := make([]domain.ServicePlan, len(b.cfg.Plans))
	for i, p := range b.cfg.Plans {
		plans[i] = domain.ServicePlan{
			ID: p.ID, Name: p.Name, Description: p.Description,
			Free:     domain.FreeValue(p.IsFree()),
			Bindable: domain.BindableValue(true),
			Metadata: &domain.ServicePlanMetadata{DisplayName: p.DisplayName, Bullets: planBullets(p),
				AdditionalMetadata: map[string]any{"quotas": p.Quotas}},
		}
	}
	tags := s.Tags
	if tags == nil {
		tags = []string{}
	}
	return []domain.Service{{
		ID: s.ID, Name: s.Name, Description: s.Description,
		Bindable: true, InstancesRetrievable: true, BindingsRetrievable: true, PlanUpdatable: true,
		Tags: tags,
		Metadata: &domain.ServiceMetadata{DisplayName: s.DisplayName, ProviderDisplayName: s.ProviderName,
			DocumentationUrl: s.DocumentationURL, SupportUrl: s.SupportURL, ImageUrl: s.ImageURL,
			LongDescription: s.LongDescription},
		Plans: plans,
	}}, nil
}

// planBullets are the configured bullets, or the quotas in words.
func planBullets(p config.BrokerPlan) []string {
	if len(p.Bullets) > 0 {
		return p.Bullets
	}
	q := p.Quotas
	var out []string
	add := func(v *int, format string) {
		if v != nil {
			out = append(out, fmt.Sprintf(format, *v))
		}
	}
	add(q.MaxConcurrency, "Up to %d tasks running at once")
	add(q.MaxQueuedTasks, "Up to %d queued tasks")
	add(q.MaxSchedules, "Up to %d schedules")
	add(q.MaxTimeoutSeconds, "Task timeout up to %d seconds")
	add(q.MaxPayloadBytes, "Payloads up to %d bytes")
	if len(q.AllowedPriorities) > 0 {
		ps := make([]string, len(q.AllowedPriorities))
		for i, p := range q.AllowedPriorities {
			ps[i] = strconv.Itoa(p)
		}
		out = append(out, "Priorities "+strings.Join(ps, ", "))
	}
	return out
}

// ---- validation shared by the operations ----

func (b *Broker) checkService(serviceID string) error {
	if serviceID != b.cfg.Service.ID {
		return badRequest("unknown service_id %q", serviceID)
	}
	return nil
}

func (b *Broker) plan(planID string) (config.BrokerPlan, error) {
	p, ok := b.plans[planID]
	if !ok {
		return config.BrokerPlan{}, badRequest("unknown plan_id %q", planID)
	}
	return p, nil
}

// checkIDs validates service_id and plan_id as DELETE and GET carry them (query).
func (b *Broker) checkIDs(serviceID, planID string) error {
	if serviceID != "" {
		if err := b.checkService(serviceID); err != nil {
			return err
		}
	}
	if planID != "" {
		if _, err := b.plan(planID); err != nil {
			return err
		}
	}
	return nil
}

// noParameters refuses parameters: the service has none (plans carry every setting).
func noParameters(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return badRequest("parameters must be a JSON object")
	}
	if len(m) > 0 {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		return badRequest("this service takes no parameters, got: %s", strings.Join(keys, ", "))
	}
	return nil
}

func noMaintenanceInfo(mi *domain.MaintenanceInfo) error {
	if mi != nil && !mi.Equals(domain.MaintenanceInfo{}) {
		return apiresponses.ErrMaintenanceInfoNilConflict
	}
	return nil
}

// cfContext is what the broker reads of the OSB context object.
type cfContext struct {
	Platform         string `json:"platform"`
	OrganizationGUID string `json:"organization_guid"`
	SpaceGUID        string `json:"space_guid"`
	InstanceName     string `json:"instance_name"`
	OrganizationName string `json:"organization_name"`
	SpaceName        string `json:"space_name"`
}

func parseContext(raw json.RawMessage) (cfContext, error) {
	var c cfContext
	if len(raw) == 0 || string(raw) == "null" {
		return c, nil
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, badRequest("context must be a JSON object")
	}
	return c, nil
}

// ---- instances ----

// Provision makes a project for the instance with the plan's quotas (201), answers 200
// for an identical repeat and 409 for a conflicting one.
func (b *Broker) Provision(ctx context.Context, instanceID string, d domain.ProvisionDetails, _ bool) (domain.ProvisionedServiceSpec, error) {
	log := b.logger(ctx).With("instance_id", instanceID, "plan_id", d.PlanID)
	if err := b.checkService(d.ServiceID); err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	plan, err := b.plan(d.PlanID)
	if err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	cc, err := parseContext(d.RawContext)
	if err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	org, space := d.OrganizationGUID, d.SpaceGUID
	if org == "" {
		org = cc.OrganizationGUID
	}
	if space == "" {
		space = cc.SpaceGUID
	}
	if org == "" || space == "" {
		return domain.ProvisionedServiceSpec{}, badRequest("organization_guid and space_guid are required")
	}
	if err := noParameters(d.RawParameters); err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	if err := noMaintenanceInfo(d.MaintenanceInfo); err != nil {
		return domain.ProvisionedServiceSpec{}, err
	}
	name := cc.InstanceName
	if name == "" {
		name = "cf-service-instance-" + instanceID
	}
	in, created, err := b.store.ProvisionInstance(ctx, store.NewInstance{
		ID: instanceID, ServiceID: d.ServiceID, PlanID: d.PlanID, OrganizationGUID: org, SpaceGUID: space,
		ProjectName: name, Parameters: d.RawParameters, Context: d.RawContext, Quotas: QuotasOf(plan),
	})
	if errors.Is(err, store.ErrConflict) {
		log.Info("provision refused: the instance exists with other attributes")
		return domain.ProvisionedServiceSpec{}, apiresponses.ErrInstanceAlreadyExists
	}
	if err != nil {
		return domain.ProvisionedServiceSpec{}, b.internal(ctx, "provision", err)
	}
	if created {
		log.Info("provisioned", "project_id", in.ProjectID, "plan", plan.Name, "organization_guid", org, "space_guid", space)
	} else {
		log.Info("provision repeated: identical instance exists", "project_id", in.ProjectID)
	}
	return domain.ProvisionedServiceSpec{AlreadyExists: !created}, nil
}

// GetInstance returns the instance's service, plan and parameters (404 when unknown).
func (b *Broker) GetInstance(ctx context.Context, instanceID string, d domain.FetchInstanceDetails) (domain.GetInstanceDetailsSpec, error) {
	if err := b.checkIDs(d.ServiceID, d.PlanID); err != nil {
		return domain.GetInstanceDetailsSpec{}, err
	}
	in, err := b.store.GetInstance(ctx, instanceID)
	if errors.Is(err, store.ErrNotFound) {
		return domain.GetInstanceDetailsSpec{}, apiresponses.ErrInstanceNotFound
	}
	if err != nil {
		return domain.GetInstanceDetailsSpec{}, b.internal(ctx, "get-instance", err)
	}
	return domain.GetInstanceDetailsSpec{ServiceID: in.ServiceID, PlanID: in.PlanID, Parameters: json.RawMessage(in.Parameters)}, nil
}

// Update changes the plan and with it the project's quotas. A plan whose limits the
// project's current use exceeds is refused with 422.
func (b *Broker) Update(ctx context.Context, instanceID string, d domain.UpdateDetails, _ bool) (domain.UpdateServiceSpec, error) {
	log := b.logger(ctx).With("instance_id", instanceID)
	if err := b.checkService(d.ServiceID); err != nil {
		return domain.UpdateServiceSpec{}, err
	}
	if err := noParameters(d.RawParameters); err != nil {
		return domain.UpdateServiceSpec{}, err
	}
	if err := noMaintenanceInfo(d.MaintenanceInfo); err != nil {
		return domain.UpdateServiceSpec{}, err
	}
	if _, err := parseContext(d.RawContext); err != nil {
		return domain.UpdateServiceSpec{}, err
	}
	current, err := b.store.GetInstance(ctx, instanceID)
	if errors.Is(err, store.ErrNotFound) {
		return domain.UpdateServiceSpec{}, apiresponses.ErrInstanceNotFound
	}
	if err != nil {
		return domain.UpdateServiceSpec{}, b.internal(ctx, "update", err)
	}
	planID := d.PlanID
	if planID == "" {
		planID = current.PlanID
	}
	plan, err := b.plan(planID)
	if err != nil {
		return domain.UpdateServiceSpec{}, err
	}
	_, err = b.store.UpdateInstance(ctx, instanceID, store.InstanceUpdate{PlanID: planID, Quotas: QuotasOf(plan), Context: d.RawContext})
	var qe *store.QuotaError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return domain.UpdateServiceSpec{}, apiresponses.ErrInstanceNotFound
	case errors.As(err, &qe):
		log.Info("plan change refused: current use exceeds the plan", "plan_id", planID, "limit", qe.Limit, "max", qe.Max, "current", qe.Current)
		return domain.UpdateServiceSpec{}, unprocessable("plan-change-exceeds-use",
			"Cannot change to plan %q: it allows at most %d %s (%s) and the instance has %d now; cancel or wait for some, then retry",
			plan.Name, qe.Max, quotaNoun(qe.Limit), qe.Limit, qe.Current)
	case err != nil:
		return domain.UpdateServiceSpec{}, b.internal(ctx, "update", err)
	}
	if planID != current.PlanID {
		log.Info("plan changed", "project_id", current.ProjectID, "from_plan_id", current.PlanID, "plan_id", planID, "plan", plan.Name)
	} else {
		log.Info("instance updated", "project_id", current.ProjectID, "plan_id", planID)
	}
	return domain.UpdateServiceSpec{}, nil
}

func quotaNoun(limit string) string {
	switch limit {
	case "max_queued_tasks":
		return "queued tasks"
	case "max_schedules":
		return "schedules"
	}
	return limit
}

// Deprovision cancels the project's tasks and schedules, revokes its tokens and removes
// the instance and its bindings, all in one transaction (410 when unknown).
func (b *Broker) Deprovision(ctx context.Context, instanceID string, d domain.DeprovisionDetails, _ bool) (domain.DeprovisionServiceSpec, error) {
	if err := b.checkIDs(d.ServiceID, d.PlanID); err != nil {
		return domain.DeprovisionServiceSpec{}, err
	}
	res, err := b.store.DeprovisionInstance(ctx, instanceID)
	if errors.Is(err, store.ErrNotFound) {
		return domain.DeprovisionServiceSpec{}, apiresponses.ErrInstanceDoesNotExist
	}
	if err != nil {
		return domain.DeprovisionServiceSpec{}, b.internal(ctx, "deprovision", err)
	}
	b.logger(ctx).Info("deprovisioned", "instance_id", instanceID, "project_id", res.ProjectID,
		"cancelled_queued_tasks", res.CancelledQueued, "cancelled_running_tasks", res.CancelledRunning,
		"cancelled_schedules", res.CancelledSchedules, "revoked_tokens", res.RevokedTokens)
	return domain.DeprovisionServiceSpec{}, nil
}

// LastOperation: every operation is synchronous, so an instance that exists has
// succeeded.
func (b *Broker) LastOperation(ctx context.Context, instanceID string, d domain.PollDetails) (domain.LastOperation, error) {
	if err := b.checkIDs(d.ServiceID, d.PlanID); err != nil {
		return domain.LastOperation{}, err
	}
	_, err := b.store.GetInstance(ctx, instanceID)
	if errors.Is(err, store.ErrNotFound) {
		return domain.LastOperation{}, apiresponses.ErrInstanceNotFound
	}
	if err != nil {
		return domain.LastOperation{}, b.internal(ctx, "last-operation", err)
	}
	return domain.LastOperation{State: domain.Succeeded}, nil
}

// ---- bindings ----

// credentials is what a binding hands the app: everything an IronWorker client's
// iron.json holds, plus url, the project's API base URL.
type credentials struct {
	ProjectID  string `json:"project_id"`
	Token      string `json:"token"`
	Host       string `json:"host"`
	Port       int    `json:"port"`
	Scheme     string `json:"scheme"`
	Protocol   string `json:"protocol"`
	APIVersion int    `json:"api_version"`
	URL        string `json:"url"`
}

func (b *Broker) credentials(projectID, token string) ([]byte, error) {
	e := b.cfg.ExternalAPI
	hostPort := e.Host
	if !(e.Scheme == "https" && e.Port == 443 || e.Scheme == "http" && e.Port == 80) {
		hostPort += ":" + strconv.Itoa(e.Port)
	}
	return json.Marshal(credentials{ProjectID: projectID, Token: token, Host: e.Host, Port: e.Port, Scheme: e.Scheme,
		Protocol: e.Scheme, APIVersion: 2, URL: e.Scheme + "://" + hostPort + "/2/projects/" + projectID})
}

// Bind makes a token for the instance's project (201); an identical repeat answers 200
// with the same credentials, a conflicting one 409.
func (b *Broker) Bind(ctx context.Context, instanceID, bindingID string, d domain.BindDetails, _ bool) (domain.Binding, error) {
	log := b.logger(ctx).With("instance_id", instanceID, "binding_id", bindingID)
	if err := b.checkService(d.ServiceID); err != nil {
		return domain.Binding{}, err
	}
	if _, err := b.plan(d.PlanID); err != nil {
		return domain.Binding{}, err
	}
	if err := noParameters(d.RawParameters); err != nil {
		return domain.Binding{}, err
	}
	appGUID := d.AppGUID
	var resource json.RawMessage
	if d.BindResource != nil {
		if d.BindResource.AppGuid != "" {
			appGUID = d.BindResource.AppGuid
		}
		resource, _ = json.Marshal(d.BindResource)
	}
	creds, created, err := b.store.CreateBinding(ctx, store.NewBinding{ID: bindingID, InstanceID: instanceID,
		ServiceID: d.ServiceID, PlanID: d.PlanID, AppGUID: appGUID, BindResource: resource, Parameters: d.RawParameters},
		b.credentials)
	switch {
	case errors.Is(err, store.ErrInstanceNotFound):
		return domain.Binding{}, apiresponses.NewFailureResponse(errors.New("instance does not exist"), http.StatusNotFound, "instance-missing")
	case errors.Is(err, store.ErrConflict):
		log.Info("bind refused: the binding exists with other attributes")
		return domain.Binding{}, apiresponses.ErrBindingAlreadyExists
	case err != nil:
		return domain.Binding{}, b.internal(ctx, "bind", err)
	}
	if created {
		log.Info("bound", "app_guid", appGUID)
	} else {
		log.Info("bind repeated: identical binding exists", "app_guid", appGUID)
	}
	return domain.Binding{AlreadyExists: !created, Credentials: json.RawMessage(creds)}, nil
}

// Unbind revokes the binding's token at once (410 when unknown).
func (b *Broker) Unbind(ctx context.Context, instanceID, bindingID string, d domain.UnbindDetails, _ bool) (domain.UnbindSpec, error) {
	if err := b.checkIDs(d.ServiceID, d.PlanID); err != nil {
		return domain.UnbindSpec{}, err
	}
	err := b.store.DeleteBinding(ctx, instanceID, bindingID)
	if errors.Is(err, store.ErrNotFound) {
		return domain.UnbindSpec{}, apiresponses.ErrBindingDoesNotExist
	}
	if err != nil {
		return domain.UnbindSpec{}, b.internal(ctx, "unbind", err)
	}
	b.logger(ctx).Info("unbound: token revoked", "instance_id", instanceID, "binding_id", bindingID)
	return domain.UnbindSpec{}, nil
}

// GetBinding returns the binding's credentials (404 when unknown).
func (b *Broker) GetBinding(ctx context.Context, instanceID, bindingID string, d domain.FetchBindingDetails) (domain.GetBindingSpec, error) {
	if err := b.checkIDs(d.ServiceID, d.PlanID); err != nil {
		return domain.GetBindingSpec{}, err
	}
	bd, err := b.store.GetBinding(ctx, instanceID, bindingID)
	if errors.Is(err, store.ErrNotFound) {
		return domain.GetBindingSpec{}, apiresponses.ErrBindingNotFound
	}
	if err != nil {
		return domain.GetBindingSpec{}, b.internal(ctx, "get-binding", err)
	}
	return domain.GetBindingSpec{Credentials: json.RawMessage(bd.Credentials), Parameters: json.RawMessage(bd.Parameters)}, nil
}

// LastBindingOperation: bindings are synchronous; one that exists has succeeded.
func (b *Broker) LastBindingOperation(ctx context.Context, instanceID, bindingID string, d domain.PollDetails) (domain.LastOperation, error) {
	if err := b.checkIDs(d.ServiceID, d.PlanID); err != nil {
		return domain.LastOperation{}, err
	}
	_, err := b.store.GetBinding(ctx, instanceID, bindingID)
	if errors.Is(err, store.ErrNotFound) {
		return domain.LastOperation{}, apiresponses.ErrBindingNotFound
	}
	if err != nil {
		return domain.LastOperation{}, b.internal(ctx, "last-binding-operation", err)
	}
	return domain.LastOperation{State: domain.Succeeded}, nil
}
