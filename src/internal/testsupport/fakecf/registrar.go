package fakecf

// The endpoints the registrar needs beyond the rest of the fake: service instances (read,
// and made by tests), DELETE /v3/service_offerings/:guid (with ?purge=true, as `cf
// purge-service-offering`) and space quotas. They are added to a running fake by
// EnableRegistrarAPI, so that nothing changes for tests that do not call it.

import (
	"net/http"
	"sync"
	"time"
)

type serviceInstance struct {
	meta
	name  string
	plan  string
	space string
}

type spaceQuota struct {
	meta
	name   string
	org    string
	spaces []string
	apps   quotaApps
}

type quotaApps struct {
	TotalMemoryInMB              *int `json:"total_memory_in_mb"`
	PerProcessMemoryInMB         *int `json:"per_process_memory_in_mb"`
	TotalInstances               *int `json:"total_instances"`
	PerAppTasks                  *int `json:"per_app_tasks"`
	LogRateLimitInBytesPerSecond *int `json:"log_rate_limit_in_bytes_per_second"`
}

// registrarState is kept beside the Server (guarded by its mu).
type registrarState struct {
	once      sync.Once
	instances map[string]*serviceInstance
	quotas    map[string]*spaceQuota
}

var (
	registrarMu     sync.Mutex
	registrarStates = map[*Server]*registrarState{}
)

func (s *Server) reg() *registrarState {
	registrarMu.Lock()
	defer registrarMu.Unlock()
	st := registrarStates[s]
	if st == nil {
		st = &registrarState{instances: map[string]*serviceInstance{}, quotas: map[string]*spaceQuota{}}
		registrarStates[s] = st
	}
	return st
}

// EnableRegistrarAPI adds the service instance, service offering delete and space quota
// endpoints. It is idempotent.
func (s *Server) EnableRegistrarAPI() {
	st := s.reg()
	st.once.Do(func() {
		m := s.mux
		m.HandleFunc("GET /v3/service_instances", s.listServiceInstances)
		m.HandleFunc("DELETE /v3/service_offerings/{guid}", s.deleteOffering)
		m.HandleFunc("GET /v3/space_quotas", s.listSpaceQuotas)
		m.HandleFunc("POST /v3/space_quotas", s.createSpaceQuota)
		m.HandleFunc("GET /v3/space_quotas/{guid}", s.getSpaceQuota)
		m.HandleFunc("PATCH /v3/space_quotas/{guid}", s.updateSpaceQuota)
		m.HandleFunc("POST /v3/space_quotas/{guid}/relationships/spaces", s.applySpaceQuota)
	})
}

// CreateServiceInstance records a managed service instance of a plan in a space, as
// `cf create-service` would once the broker provisioned it; it returns its guid.
func (s *Server) CreateServiceInstance(name, planGUID, spaceGUID string) string {
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	si := &serviceInstance{meta: s.newMeta(), name: name, plan: planGUID, space: spaceGUID}
	st.instances[si.guid] = si
	return si.guid
}

// ServiceInstanceCount is how many service instances exist.
func (s *Server) ServiceInstanceCount() int {
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(st.instances)
}

// Marketplace is what `cf marketplace` would show a member of org (guid; empty: a user
// in no org): "offering/plan" for every plan visible to them.
func (s *Server) Marketplace(orgGUID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	var list []*plan
	for _, p := range s.plans {
		list = append(list, p)
	}
	sortByCreated(list, func(p *plan) meta { return p.meta })
	for _, p := range list {
		visible := p.visibility == "public"
		if p.visibility == "organization" && orgGUID != "" {
			for _, g := range p.orgs {
				visible = visible || g == orgGUID
			}
		}
		if s.brokers[p.broker] == nil {
			visible = false
		}
		if visible {
			name := ""
			if o := s.offerings[p.offering]; o != nil {
				name = o.name
			}
			out = append(out, name+"/"+p.name)
		}
	}
	return out
}

// SpaceQuota tells the space quota of a space: its name and app limits (nil: none).
func (s *Server) SpaceQuota(spaceGUID string) (string, map[string]*int) {
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range st.quotas {
		for _, g := range q.spaces {
			if g == spaceGUID {
				return q.name, map[string]*int{"total_memory_in_mb": q.apps.TotalMemoryInMB, "per_process_memory_in_mb": q.apps.PerProcessMemoryInMB,
					"total_instances": q.apps.TotalInstances, "per_app_tasks": q.apps.PerAppTasks}
			}
		}
	}
	return "", nil
}

// ChangeSpaceQuota changes a quota's total memory behind the registrar's back.
func (s *Server) ChangeSpaceQuota(name string, totalMemoryMB int) {
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range st.quotas {
		if q.name == name {
			q.apps.TotalMemoryInMB = &totalMemoryMB
		}
	}
}

func (s *Server) instanceJSON(si *serviceInstance) map[string]any {
	return map[string]any{"guid": si.guid, "created_at": ts(si.created), "updated_at": ts(si.updated), "name": si.name, "type": "managed",
		"tags": []string{}, "maintenance_info": map[string]any{}, "upgrade_available": false, "dashboard_url": nil,
		"last_operation": map[string]any{"type": "create", "state": "succeeded", "description": "", "created_at": ts(si.created), "updated_at": ts(si.updated)},
		"relationships":  map[string]any{"service_plan": relationship(si.plan), "space": relationship(si.space)},
		"metadata":       metadataOut(nil),
		"links": map[string]any{"self": s.link("/v3/service_instances/" + si.guid), "service_plan": s.link("/v3/service_plans/" + si.plan),
			"space": s.link("/v3/spaces/" + si.space)}}
}

func (s *Server) listServiceInstances(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r, "names", "guids", "type", "space_guids", "organization_guids", "service_plan_guids", "service_plan_names", "fields")
	if !ok {
		return
	}
	st := s.reg()
	s.mu.Lock()
	var list []*serviceInstance
	for _, si := range st.instances {
		org, planName := "", ""
		if sp := s.spaces[si.space]; sp != nil {
			org = sp.org
		}
		if p := s.plans[si.plan]; p != nil {
			planName = p.name
		}
		if lq.in("names", si.name, false) && lq.in("guids", si.guid, false) && lq.in("type", "managed", false) &&
			lq.in("space_guids", si.space, false) && lq.in("organization_guids", org, false) &&
			lq.in("service_plan_guids", si.plan, false) && lq.in("service_plan_names", planName, false) {
			list = append(list, si)
		}
	}
	sortByCreated(list, func(x *serviceInstance) meta { return x.meta })
	out := make([]map[string]any, 0, len(list))
	for _, si := range list {
		out = append(out, s.instanceJSON(si))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

// deleteOffering is DELETE /v3/service_offerings/:guid: refused (422
// CF-AssociationNotEmpty) while instances of its plans exist, unless purge=true, which
// removes the offering, its plans and their instances without asking the broker.
func (s *Server) deleteOffering(w http.ResponseWriter, r *http.Request) {
	for k := range r.URL.Query() {
		if k != "purge" {
			cfError(w, http.StatusBadRequest, 10005, "CF-BadQueryParameter", "The query parameter is invalid: Unknown query parameter(s): '"+k+"'")
			return
		}
	}
	purge := r.URL.Query().Get("purge") == "true"
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.offerings[r.PathValue("guid")]
	if o == nil {
		notFound(w, "Service offering")
		return
	}
	var insts []string
	for g, si := range st.instances {
		if p := s.plans[si.plan]; p != nil && p.offering == o.guid {
			insts = append(insts, g)
		}
	}
	if len(insts) > 0 && !purge {
		cfError(w, http.StatusUnprocessableEntity, 10006, "CF-AssociationNotEmpty", "Please delete the service_instances associations for your service_offerings.")
		return
	}
	for _, g := range insts {
		delete(st.instances, g)
	}
	for g, p := range s.plans {
		if p.offering == o.guid {
			delete(s.plans, g)
		}
	}
	delete(s.offerings, o.guid)
	w.WriteHeader(http.StatusNoContent)
}

// ---- space quotas ----

func (s *Server) spaceQuotaJSON(q *spaceQuota) map[string]any {
	spaces := []map[string]any{}
	for _, g := range q.spaces {
		spaces = append(spaces, map[string]any{"guid": g})
	}
	return map[string]any{"guid": q.guid, "created_at": ts(q.created), "updated_at": ts(q.updated), "name": q.name,
		"apps":          q.apps,
		"services":      map[string]any{"paid_services_allowed": true, "total_service_instances": nil, "total_service_keys": nil},
		"routes":        map[string]any{"total_routes": nil, "total_reserved_ports": nil},
		"relationships": map[string]any{"organization": relationship(q.org), "spaces": map[string]any{"data": spaces}},
		"links":         map[string]any{"self": s.link("/v3/space_quotas/" + q.guid), "organization": s.link("/v3/organizations/" + q.org)}}
}

func (s *Server) listSpaceQuotas(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r, "names", "guids", "organization_guids", "space_guids")
	if !ok {
		return
	}
	st := s.reg()
	s.mu.Lock()
	var list []*spaceQuota
	for _, q := range st.quotas {
		inSpace := !lq.v.Has("space_guids")
		for _, g := range q.spaces {
			inSpace = inSpace || lq.in("space_guids", g, false)
		}
		if inSpace && lq.in("names", q.name, false) && lq.in("guids", q.guid, false) && lq.in("organization_guids", q.org, false) {
			list = append(list, q)
		}
	}
	sortByCreated(list, func(x *spaceQuota) meta { return x.meta })
	out := make([]map[string]any, 0, len(list))
	for _, q := range list {
		out = append(out, s.spaceQuotaJSON(q))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) getSpaceQuota(w http.ResponseWriter, r *http.Request) {
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	q := st.quotas[r.PathValue("guid")]
	if q == nil {
		notFound(w, "Space quota")
		return
	}
	writeJSON(w, http.StatusOK, s.spaceQuotaJSON(q))
}

type toMany struct {
	Data []struct {
		GUID string `json:"guid"`
	} `json:"data"`
}

type spaceQuotaReq struct {
	Name     *string         `json:"name,omitempty"`
	Apps     map[string]*int `json:"apps,omitempty"`
	Services *struct {
		PaidServicesAllowed   *bool `json:"paid_services_allowed,omitempty"`
		TotalServiceInstances *int  `json:"total_service_instances,omitempty"`
		TotalServiceKeys      *int  `json:"total_service_keys,omitempty"`
	} `json:"services,omitempty"`
	Routes *struct {
		TotalRoutes        *int `json:"total_routes,omitempty"`
		TotalReservedPorts *int `json:"total_reserved_ports,omitempty"`
	} `json:"routes,omitempty"`
	Relationships *struct {
		Organization *toOne  `json:"organization,omitempty"`
		Spaces       *toMany `json:"spaces,omitempty"`
	} `json:"relationships,omitempty"`
}

func (s *Server) createSpaceQuota(w http.ResponseWriter, r *http.Request) {
	var req spaceQuotaReq
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Name == nil || *req.Name == "" {
		unprocessable(w, "Name can't be blank")
		return
	}
	if req.Relationships == nil || req.Relationships.Organization == nil {
		unprocessable(w, "Relationships Organization must be an object")
		return
	}
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	org := req.Relationships.Organization.guid()
	if s.orgs[org] == nil {
		unprocessable(w, "Organization with guid '"+org+"' does not exist, or you do not have access to it.")
		return
	}
	for _, q := range st.quotas {
		if q.org == org && q.name == *req.Name {
			unprocessable(w, "Space Quota '"+*req.Name+"' already exists.")
			return
		}
	}
	q := &spaceQuota{meta: s.newMeta(), name: *req.Name, org: org}
	if !setQuotaApps(w, &q.apps, req.Apps) {
		return
	}
	if sp := req.Relationships.Spaces; sp != nil {
		for _, d := range sp.Data {
			if !s.takeSpaceLocked(st, q, d.GUID) {
				unprocessable(w, "Spaces with guids [\""+d.GUID+"\"] do not exist within the organization specified, or you do not have access to them.")
				return
			}
		}
	}
	st.quotas[q.guid] = q
	writeJSON(w, http.StatusCreated, s.spaceQuotaJSON(q))
}

// takeSpaceLocked applies q to a space of q's org (a space has one space quota).
func (s *Server) takeSpaceLocked(st *registrarState, q *spaceQuota, spaceGUID string) bool {
	sp := s.spaces[spaceGUID]
	if sp == nil || sp.org != q.org {
		return false
	}
	for _, other := range st.quotas {
		kept := other.spaces[:0]
		for _, g := range other.spaces {
			if g != spaceGUID {
				kept = append(kept, g)
			}
		}
		other.spaces = kept
	}
	q.spaces = append(q.spaces, spaceGUID)
	return true
}

func (s *Server) updateSpaceQuota(w http.ResponseWriter, r *http.Request) {
	var req spaceQuotaReq
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Relationships != nil {
		unprocessable(w, "Unknown field(s): 'relationships'")
		return
	}
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	q := st.quotas[r.PathValue("guid")]
	if q == nil {
		notFound(w, "Space quota")
		return
	}
	if req.Name != nil {
		q.name = *req.Name
	}
	if !setQuotaApps(w, &q.apps, req.Apps) {
		return
	}
	q.updated = time.Now().UTC()
	writeJSON(w, http.StatusOK, s.spaceQuotaJSON(q))
}

func (s *Server) applySpaceQuota(w http.ResponseWriter, r *http.Request) {
	var req toMany
	if !decodeStrict(w, r, &req) {
		return
	}
	st := s.reg()
	s.mu.Lock()
	defer s.mu.Unlock()
	q := st.quotas[r.PathValue("guid")]
	if q == nil {
		notFound(w, "Space quota")
		return
	}
	for _, d := range req.Data {
		if !s.takeSpaceLocked(st, q, d.GUID) {
			unprocessable(w, "Spaces with guids [\""+d.GUID+"\"] do not exist within the organization for this space quota, or you do not have access to them.")
			return
		}
	}
	data := []map[string]any{}
	for _, g := range q.spaces {
		data = append(data, map[string]any{"guid": g})
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data, "links": map[string]any{"self": s.link("/v3/space_quotas/" + q.guid + "/relationships/spaces")}})
}

// setQuotaApps applies the apps limits of a request: a key present with null is
// unlimited, an absent key keeps its value; unknown keys are 422.
func setQuotaApps(w http.ResponseWriter, a *quotaApps, req map[string]*int) bool {
	fields := map[string]**int{"total_memory_in_mb": &a.TotalMemoryInMB, "per_process_memory_in_mb": &a.PerProcessMemoryInMB,
		"total_instances": &a.TotalInstances, "per_app_tasks": &a.PerAppTasks, "log_rate_limit_in_bytes_per_second": &a.LogRateLimitInBytesPerSecond}
	for k := range req {
		if fields[k] == nil {
			unprocessable(w, "Apps Unknown field(s): '"+k+"'")
			return false
		}
	}
	for k, v := range req {
		*fields[k] = v
	}
	return true
}
