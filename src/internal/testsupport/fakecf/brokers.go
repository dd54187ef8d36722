package fakecf

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

type job struct {
	meta
	operation string
	state     string // PROCESSING, POLLING, COMPLETE, FAILED
	errors    []map[string]any
	resource  string // link name → path
	link      string
}

type broker struct {
	meta
	name     string
	url      string
	username string
	password string
	space    string
	metadata *metadataReq
	syncing  bool
}

type offering struct {
	meta
	broker      string
	catalogID   string
	name        string
	description string
}

type plan struct {
	meta
	offering    string
	broker      string
	catalogID   string
	name        string
	description string
	free        bool
	visibility  string // public, admin, organization, space
	orgs        []string
}

// JobFailure makes the next broker job (create/update/delete) fail with this detail
// instead of running; empty resets.
func (s *Server) JobFailure(detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNextJob = detail
}

func (s *Server) newJob(operation string, run func() error) *job {
	j := &job{meta: s.newMeta(), operation: operation, state: "PROCESSING"}
	s.jobs[j.guid] = j
	fail := s.failNextJob
	s.failNextJob = ""
	go func() {
		time.Sleep(s.opts.StagingTime)
		var err error
		if fail != "" {
			err = fmt.Errorf("%s", fail)
		} else if run != nil {
			err = run()
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		j.updated = time.Now().UTC()
		if err != nil {
			j.state = "FAILED"
			j.errors = []map[string]any{{"code": 10001, "title": "CF-ServiceBrokerCatalogInvalid", "detail": err.Error()}}
			return
		}
		j.state = "COMPLETE"
	}()
	return j
}

func (s *Server) jobJSON(j *job) map[string]any {
	errs := j.errors
	if errs == nil {
		errs = []map[string]any{}
	}
	links := map[string]any{"self": s.link("/v3/jobs/" + j.guid)}
	if j.link != "" {
		links[j.resource] = s.link(j.link)
	}
	return map[string]any{"guid": j.guid, "created_at": ts(j.created), "updated_at": ts(j.updated), "operation": j.operation,
		"state": j.state, "errors": errs, "warnings": []any{}, "links": links}
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[r.PathValue("guid")]
	if j == nil {
		notFound(w, "Job")
		return
	}
	writeJSON(w, http.StatusOK, s.jobJSON(j))
}

func (s *Server) brokerJSON(b *broker) map[string]any {
	links := map[string]any{"self": s.link("/v3/service_brokers/" + b.guid), "service_offerings": s.link("/v3/service_offerings?service_broker_guids=" + b.guid)}
	if b.space != "" {
		links["space"] = s.link("/v3/spaces/" + b.space)
	}
	return map[string]any{"guid": b.guid, "created_at": ts(b.created), "updated_at": ts(b.updated), "name": b.name, "url": b.url,
		"relationships": map[string]any{"space": relationship(b.space)}, "metadata": metadataOut(b.metadata), "links": links}
}

type brokerAuth struct {
	Type        string `json:"type"`
	Credentials struct {
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"credentials"`
}

func (s *Server) listBrokers(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r, "names", "space_guids")
	if !ok {
		return
	}
	s.mu.Lock()
	var list []*broker
	for _, b := range s.brokers {
		if lq.in("names", b.name, false) && lq.in("space_guids", b.space, false) {
			list = append(list, b)
		}
	}
	sortByCreated(list, func(b *broker) meta { return b.meta })
	out := make([]map[string]any, 0, len(list))
	for _, b := range list {
		out = append(out, s.brokerJSON(b))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) getBroker(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.brokers[r.PathValue("guid")]
	if b == nil {
		notFound(w, "Service broker")
		return
	}
	writeJSON(w, http.StatusOK, s.brokerJSON(b))
}

func (s *Server) createBroker(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name           string     `json:"name"`
		URL            string     `json:"url"`
		Authentication brokerAuth `json:"authentication"`
		Relationships  *struct {
			Space toOne `json:"space"`
		} `json:"relationships,omitempty"`
		Metadata *metadataReq `json:"metadata,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Name == "" || !strings.HasPrefix(req.URL, "http") || req.Authentication.Type != "basic" {
		unprocessable(w, "Name can't be blank, url must be a valid url, authentication type must be basic")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.brokers {
		if b.name == req.Name {
			unprocessable(w, "Name must be unique")
			return
		}
	}
	b := &broker{meta: s.newMeta(), name: req.Name, url: req.URL, username: req.Authentication.Credentials.Username,
		password: req.Authentication.Credentials.Password, metadata: req.Metadata, syncing: true}
	if req.Relationships != nil {
		b.space = req.Relationships.Space.guid()
		if s.spaces[b.space] == nil {
			unprocessable(w, "Invalid space. Ensure that the space exists and you have access to it.")
			return
		}
	}
	s.brokers[b.guid] = b
	j := s.newJob("service_broker.catalog.synchronize", func() error { return s.syncCatalog(b) })
	j.resource, j.link = "service_brokers", "/v3/service_brokers/"+b.guid
	w.Header().Set("Location", s.URL+"/v3/jobs/"+j.guid)
	w.WriteHeader(http.StatusAccepted)
}

// syncCatalog fetches the broker's /v2/catalog as Cloud Controller does and records
// its services and plans (new plans are visible to admins only).
func (s *Server) syncCatalog(b *broker) error {
	defer func() {
		s.mu.Lock()
		b.syncing = false
		s.mu.Unlock()
	}()
	s.mu.Lock()
	u, user, pass := b.url, b.username, b.password
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(u, "/")+"/v2/catalog", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, pass)
	req.Header.Set("X-Broker-API-Version", "2.15")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("The service broker could not be reached: %s", u)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("The service broker returned an invalid response: status code %d", resp.StatusCode)
	}
	var cat struct {
		Services []struct {
			ID          string `json:"id"`
			Name        string `json:"name"`
			Description string `json:"description"`
			Plans       []struct {
				ID          string `json:"id"`
				Name        string `json:"name"`
				Description string `json:"description"`
				Free        *bool  `json:"free"`
			} `json:"plans"`
		} `json:"services"`
	}
	if err := json.Unmarshal(body, &cat); err != nil || len(cat.Services) == 0 {
		return fmt.Errorf("Service broker catalog is invalid")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, svc := range cat.Services {
		var o *offering
		for _, x := range s.offerings {
			if x.broker == b.guid && x.catalogID == svc.ID {
				o = x
			}
		}
		if o == nil {
			o = &offering{meta: s.newMeta(), broker: b.guid, catalogID: svc.ID}
			s.offerings[o.guid] = o
		}
		o.name, o.description = svc.Name, svc.Description
		for _, pl := range svc.Plans {
			var p *plan
			for _, x := range s.plans {
				if x.offering == o.guid && x.catalogID == pl.ID {
					p = x
				}
			}
			if p == nil {
				p = &plan{meta: s.newMeta(), offering: o.guid, broker: b.guid, catalogID: pl.ID, visibility: "admin"}
				if b.space != "" {
					p.visibility = "space"
				}
				s.plans[p.guid] = p
			}
			p.name, p.description, p.free = pl.Name, pl.Description, pl.Free == nil || *pl.Free
		}
	}
	return nil
}

func (s *Server) updateBroker(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name           *string      `json:"name,omitempty"`
		URL            *string      `json:"url,omitempty"`
		Authentication *brokerAuth  `json:"authentication,omitempty"`
		Metadata       *metadataReq `json:"metadata,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.brokers[r.PathValue("guid")]
	if b == nil {
		notFound(w, "Service broker")
		return
	}
	if req.Metadata != nil {
		b.metadata = req.Metadata
	}
	if req.Name == nil && req.URL == nil && req.Authentication == nil {
		b.updated = time.Now().UTC()
		writeJSON(w, http.StatusOK, s.brokerJSON(b))
		return
	}
	if b.syncing {
		unprocessable(w, "Cannot update a broker when other operation is already in progress")
		return
	}
	if req.Name != nil {
		for _, x := range s.brokers {
			if x != b && x.name == *req.Name {
				unprocessable(w, "Name must be unique")
				return
			}
		}
		b.name = *req.Name
	}
	if req.URL != nil {
		b.url = *req.URL
	}
	if a := req.Authentication; a != nil {
		b.username, b.password = a.Credentials.Username, a.Credentials.Password
	}
	b.updated = time.Now().UTC()
	b.syncing = true
	j := s.newJob("service_broker.update", func() error { return s.syncCatalog(b) })
	j.resource, j.link = "service_brokers", "/v3/service_brokers/"+b.guid
	w.Header().Set("Location", s.URL+"/v3/jobs/"+j.guid)
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) deleteBroker(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.brokers[r.PathValue("guid")]
	if b == nil {
		notFound(w, "Service broker")
		return
	}
	j := s.newJob("service_broker.delete", func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.brokers, b.guid)
		for g, o := range s.offerings {
			if o.broker == b.guid {
				delete(s.offerings, g)
			}
		}
		for g, p := range s.plans {
			if p.broker == b.guid {
				delete(s.plans, g)
			}
		}
		return nil
	})
	w.Header().Set("Location", s.URL+"/v3/jobs/"+j.guid)
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) offeringJSON(o *offering) map[string]any {
	return map[string]any{"guid": o.guid, "created_at": ts(o.created), "updated_at": ts(o.updated), "name": o.name,
		"description": o.description, "available": true, "tags": []string{}, "requires": []string{}, "shareable": false,
		"documentation_url": "", "broker_catalog": map[string]any{"id": o.catalogID, "metadata": map[string]any{},
			"features": map[string]any{"plan_updateable": false, "bindable": true, "instances_retrievable": false, "bindings_retrievable": false, "allow_context_updates": false}},
		"relationships": map[string]any{"service_broker": relationship(o.broker)}, "metadata": metadataOut(nil),
		"links": map[string]any{"self": s.link("/v3/service_offerings/" + o.guid), "service_plans": s.link("/v3/service_plans?service_offering_guids=" + o.guid),
			"service_broker": s.link("/v3/service_brokers/" + o.broker)}}
}

func (s *Server) listOfferings(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r, "names", "service_broker_guids", "service_broker_names", "available")
	if !ok {
		return
	}
	s.mu.Lock()
	var list []*offering
	for _, o := range s.offerings {
		bn := ""
		if b := s.brokers[o.broker]; b != nil {
			bn = b.name
		}
		if lq.in("names", o.name, false) && lq.in("service_broker_guids", o.broker, false) && lq.in("service_broker_names", bn, false) {
			list = append(list, o)
		}
	}
	sortByCreated(list, func(o *offering) meta { return o.meta })
	out := make([]map[string]any, 0, len(list))
	for _, o := range list {
		out = append(out, s.offeringJSON(o))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) planJSON(p *plan) map[string]any {
	schema := map[string]any{"parameters": map[string]any{}}
	return map[string]any{"guid": p.guid, "created_at": ts(p.created), "updated_at": ts(p.updated), "name": p.name,
		"description": p.description, "visibility_type": p.visibility, "available": true, "free": p.free, "costs": []any{},
		"maintenance_info": map[string]any{}, "broker_catalog": map[string]any{"id": p.catalogID, "metadata": map[string]any{},
			"maximum_polling_duration": nil, "features": map[string]any{"plan_updateable": false, "bindable": true}},
		"schemas":       map[string]any{"service_instance": map[string]any{"create": schema, "update": schema}, "service_binding": map[string]any{"create": schema}},
		"relationships": map[string]any{"service_offering": relationship(p.offering)}, "metadata": metadataOut(nil),
		"links": map[string]any{"self": s.link("/v3/service_plans/" + p.guid), "service_offering": s.link("/v3/service_offerings/" + p.offering),
			"visibility": s.link("/v3/service_plans/" + p.guid + "/visibility")}}
}

func (s *Server) listPlans(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r, "names", "service_broker_guids", "service_broker_names", "service_offering_guids", "service_offering_names",
		"broker_catalog_ids", "space_guids", "organization_guids", "service_instance_guids", "available", "include")
	if !ok {
		return
	}
	s.mu.Lock()
	var list []*plan
	for _, p := range s.plans {
		bn, on := "", ""
		if b := s.brokers[p.broker]; b != nil {
			bn = b.name
		}
		if o := s.offerings[p.offering]; o != nil {
			on = o.name
		}
		if lq.in("names", p.name, false) && lq.in("service_broker_guids", p.broker, false) && lq.in("service_broker_names", bn, false) &&
			lq.in("service_offering_guids", p.offering, false) && lq.in("service_offering_names", on, false) &&
			lq.in("broker_catalog_ids", p.catalogID, false) {
			list = append(list, p)
		}
	}
	sortByCreated(list, func(p *plan) meta { return p.meta })
	out := make([]map[string]any, 0, len(list))
	for _, p := range list {
		out = append(out, s.planJSON(p))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) getPlan(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plans[r.PathValue("guid")]
	if p == nil {
		notFound(w, "Service plan")
		return
	}
	writeJSON(w, http.StatusOK, s.planJSON(p))
}

func (s *Server) visibilityJSON(p *plan) map[string]any {
	out := map[string]any{"type": p.visibility}
	if p.visibility == "organization" {
		orgs := []map[string]any{}
		for _, g := range p.orgs {
			name := ""
			if o := s.orgs[g]; o != nil {
				name = o.name
			}
			orgs = append(orgs, map[string]any{"guid": g, "name": name})
		}
		out["organizations"] = orgs
	}
	return out
}

// PlanVisibility tells a plan's visibility type and organizations, for tests.
func (s *Server) PlanVisibility(planGUID string) (string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plans[planGUID]
	if p == nil {
		return "", nil
	}
	return p.visibility, append([]string(nil), p.orgs...)
}

func (s *Server) getVisibility(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plans[r.PathValue("guid")]
	if p == nil {
		notFound(w, "Service plan")
		return
	}
	writeJSON(w, http.StatusOK, s.visibilityJSON(p))
}

type visibilityReq struct {
	Type          string `json:"type"`
	Organizations []struct {
		GUID string `json:"guid"`
	} `json:"organizations,omitempty"`
}

func (s *Server) setVisibility(w http.ResponseWriter, r *http.Request, appendOrgs bool) {
	var req visibilityReq
	if !decodeStrict(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plans[r.PathValue("guid")]
	if p == nil {
		notFound(w, "Service plan")
		return
	}
	switch req.Type {
	case "public", "admin":
		if len(req.Organizations) > 0 || appendOrgs {
			unprocessable(w, "Organizations can only be specified with type organization")
			return
		}
		p.visibility, p.orgs = req.Type, nil
	case "organization":
		if len(req.Organizations) == 0 {
			unprocessable(w, "Organizations must be specified with type organization")
			return
		}
		var orgs []string
		if appendOrgs && p.visibility == "organization" {
			orgs = p.orgs
		}
		for _, o := range req.Organizations {
			if s.orgs[o.GUID] == nil {
				unprocessable(w, "Could not find Organization with guid: "+o.GUID)
				return
			}
			dup := false
			for _, g := range orgs {
				dup = dup || g == o.GUID
			}
			if !dup {
				orgs = append(orgs, o.GUID)
			}
		}
		p.visibility, p.orgs = "organization", orgs
	case "space":
		unprocessable(w, "Type cannot be space")
		return
	default:
		unprocessable(w, "Type must be one of 'public', 'admin', 'organization'")
		return
	}
	p.updated = time.Now().UTC()
	writeJSON(w, http.StatusOK, s.visibilityJSON(p))
}

func (s *Server) replaceVisibility(w http.ResponseWriter, r *http.Request) {
	s.setVisibility(w, r, false)
}
func (s *Server) appendVisibility(w http.ResponseWriter, r *http.Request) {
	s.setVisibility(w, r, true)
}

func (s *Server) deleteVisibility(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plans[r.PathValue("guid")]
	if p == nil {
		notFound(w, "Service plan")
		return
	}
	org := r.PathValue("org")
	kept := p.orgs[:0]
	found := false
	for _, g := range p.orgs {
		if g == org {
			found = true
			continue
		}
		kept = append(kept, g)
	}
	if !found {
		notFound(w, "Organization")
		return
	}
	p.orgs = kept
	w.WriteHeader(http.StatusNoContent)
}
