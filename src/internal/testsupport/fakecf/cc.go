package fakecf

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

type org struct {
	meta
	name string
}

type space struct {
	meta
	name string
	org  string
}

type app struct {
	meta
	name       string
	space      string
	lifecycle  string // buildpack or docker
	buildpacks []string
	stack      string
	env        map[string]string
	droplet    string // current droplet
	metadata   *metadataReq
}

type pkg struct {
	meta
	app      string
	typ      string // bits or docker
	image    string
	username string
	password string
	state    string
	bits     []byte
	sha      string
}

type build struct {
	meta
	app     string
	pkg     string
	state   string
	droplet string
	err     string
}

type droplet struct {
	meta
	app   string
	pkg   string
	state string
	bits  []byte
	image string
	typ   string
}

type flag struct {
	name    string
	enabled bool
	updated time.Time
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /{$}", s.root)
	m.HandleFunc("GET /v3", s.v3root)
	m.HandleFunc("GET /v3/{$}", s.v3root)
	m.HandleFunc("POST /oauth/token", s.token)

	m.HandleFunc("GET /v3/organizations", s.listOrgs)
	m.HandleFunc("POST /v3/organizations", s.createOrg)
	m.HandleFunc("GET /v3/organizations/{guid}", s.getOrg)
	m.HandleFunc("GET /v3/spaces", s.listSpaces)
	m.HandleFunc("POST /v3/spaces", s.createSpace)
	m.HandleFunc("GET /v3/spaces/{guid}", s.getSpace)

	m.HandleFunc("GET /v3/apps", s.listApps)
	m.HandleFunc("POST /v3/apps", s.createApp)
	m.HandleFunc("GET /v3/apps/{guid}", s.getApp)
	m.HandleFunc("DELETE /v3/apps/{guid}", s.deleteApp)
	m.HandleFunc("GET /v3/apps/{guid}/relationships/current_droplet", s.getCurrentDropletRel)
	m.HandleFunc("PATCH /v3/apps/{guid}/relationships/current_droplet", s.setCurrentDroplet)
	m.HandleFunc("GET /v3/apps/{guid}/droplets/current", s.getCurrentDroplet)

	m.HandleFunc("POST /v3/packages", s.createPackage)
	m.HandleFunc("GET /v3/packages/{guid}", s.getPackage)
	m.HandleFunc("POST /v3/packages/{guid}/upload", s.uploadPackage)

	m.HandleFunc("POST /v3/builds", s.createBuild)
	m.HandleFunc("GET /v3/builds/{guid}", s.getBuild)
	m.HandleFunc("GET /v3/droplets/{guid}", s.getDroplet)

	m.HandleFunc("GET /v3/feature_flags", s.listFlags)
	m.HandleFunc("GET /v3/feature_flags/{name}", s.getFlag)
	m.HandleFunc("PATCH /v3/feature_flags/{name}", s.updateFlag)

	m.HandleFunc("POST /v3/apps/{guid}/tasks", s.createTask)
	m.HandleFunc("GET /v3/apps/{guid}/tasks", s.listAppTasks)
	m.HandleFunc("GET /v3/tasks", s.listTasks)
	m.HandleFunc("GET /v3/tasks/{guid}", s.getTask)
	m.HandleFunc("POST /v3/tasks/{guid}/actions/cancel", s.cancelTask)
	m.HandleFunc("PUT /v3/tasks/{guid}/cancel", s.cancelTask)

	m.HandleFunc("GET /v3/jobs/{guid}", s.getJob)
	m.HandleFunc("GET /v3/service_brokers", s.listBrokers)
	m.HandleFunc("POST /v3/service_brokers", s.createBroker)
	m.HandleFunc("GET /v3/service_brokers/{guid}", s.getBroker)
	m.HandleFunc("PATCH /v3/service_brokers/{guid}", s.updateBroker)
	m.HandleFunc("DELETE /v3/service_brokers/{guid}", s.deleteBroker)
	m.HandleFunc("GET /v3/service_offerings", s.listOfferings)
	m.HandleFunc("GET /v3/service_plans", s.listPlans)
	m.HandleFunc("GET /v3/service_plans/{guid}", s.getPlan)
	m.HandleFunc("GET /v3/service_plans/{guid}/visibility", s.getVisibility)
	m.HandleFunc("PATCH /v3/service_plans/{guid}/visibility", s.replaceVisibility)
	m.HandleFunc("POST /v3/service_plans/{guid}/visibility", s.appendVisibility)
	m.HandleFunc("DELETE /v3/service_plans/{guid}/visibility/{org}", s.deleteVisibility)

	m.HandleFunc("GET /api/v1/info", s.logCacheInfo)
	m.HandleFunc("GET /api/v1/read/{source}", s.logCacheRead)

	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		cfError(w, http.StatusNotFound, 10000, "CF-NotFound", "Unknown request")
	})
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) {
	l := func(p string) map[string]any { return map[string]any{"href": s.URL + p} }
	writeJSON(w, http.StatusOK, map[string]any{"links": map[string]any{
		"self":                l(""),
		"bits_service":        nil,
		"cloud_controller_v2": map[string]any{"href": s.URL + "/v2", "meta": map[string]any{"version": "2.260.0"}},
		"cloud_controller_v3": map[string]any{"href": s.URL + "/v3", "meta": map[string]any{"version": "3.195.0"}},
		"network_policy_v0":   l("/networking/v0/external"),
		"network_policy_v1":   l("/networking/v1/external"),
		"login":               l(""),
		"uaa":                 l(""),
		"credhub":             nil,
		"routing":             l("/routing"),
		"logging":             map[string]any{"href": strings.Replace(s.URL, "http", "ws", 1)},
		"log_cache":           l(""),
		"log_stream":          l(""),
		"app_ssh":             map[string]any{"href": "ssh.fake.example:2222", "meta": map[string]any{"host_key_fingerprint": "00", "oauth_client": "ssh-proxy"}},
	}})
}

func (s *Server) v3root(w http.ResponseWriter, r *http.Request) {
	links := map[string]any{"self": s.link("/v3")}
	for _, n := range []string{"apps", "builds", "droplets", "feature_flags", "jobs", "organizations", "packages", "service_brokers", "service_offerings", "service_plans", "spaces", "tasks"} {
		links[n] = s.link("/v3/" + n)
	}
	writeJSON(w, http.StatusOK, map[string]any{"links": links})
}

// token is UAA's POST /oauth/token for the client_credentials grant, with the client
// authenticated by HTTP basic (or client_id/client_secret form fields).
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != s.opts.ClientID || secret != s.opts.ClientSecret {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "unauthorized", "error_description": "Bad credentials"})
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "unsupported_grant_type", "error_description": "Unsupported grant type: " + gt})
		return
	}
	tok := strings.ReplaceAll(newGUID(), "-", "")
	s.mu.Lock()
	s.tokens[tok] = time.Now().Add(s.opts.TokenTTL)
	s.issued++
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok, "token_type": "bearer", "expires_in": int(s.opts.TokenTTL.Seconds()),
		"scope": "cloud_controller.read cloud_controller.write", "jti": tok,
	})
}

// ---- orgs and spaces ----

func (s *Server) orgJSON(o *org) map[string]any {
	return map[string]any{
		"guid": o.guid, "created_at": ts(o.created), "updated_at": ts(o.updated), "name": o.name, "suspended": false,
		"relationships": map[string]any{"quota": relationship("")},
		"metadata":      metadataOut(nil),
		"links":         map[string]any{"self": s.link("/v3/organizations/" + o.guid)},
	}
}

func (s *Server) listOrgs(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r, "names", "guids")
	if !ok {
		return
	}
	s.mu.Lock()
	var list []*org
	for _, o := range s.orgs {
		if lq.in("names", o.name, false) && lq.in("guids", o.guid, false) {
			list = append(list, o)
		}
	}
	sortByCreated(list, func(o *org) meta { return o.meta })
	out := make([]map[string]any, 0, len(list))
	for _, o := range list {
		out = append(out, s.orgJSON(o))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) createOrg(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name      string       `json:"name"`
		Suspended *bool        `json:"suspended,omitempty"`
		Metadata  *metadataReq `json:"metadata,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Name == "" {
		unprocessable(w, "Name can't be blank")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.orgs {
		if o.name == req.Name {
			unprocessable(w, "Organization '"+req.Name+"' already exists.")
			return
		}
	}
	o := &org{meta: s.newMeta(), name: req.Name}
	s.orgs[o.guid] = o
	writeJSON(w, http.StatusCreated, s.orgJSON(o))
}

func (s *Server) getOrg(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.orgs[r.PathValue("guid")]
	if o == nil {
		notFound(w, "Organization")
		return
	}
	writeJSON(w, http.StatusOK, s.orgJSON(o))
}

func (s *Server) spaceJSON(sp *space) map[string]any {
	return map[string]any{
		"guid": sp.guid, "created_at": ts(sp.created), "updated_at": ts(sp.updated), "name": sp.name,
		"relationships": map[string]any{"organization": relationship(sp.org), "quota": relationship("")},
		"metadata":      metadataOut(nil),
		"links":         map[string]any{"self": s.link("/v3/spaces/" + sp.guid), "organization": s.link("/v3/organizations/" + sp.org)},
	}
}

func (s *Server) listSpaces(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r, "names", "guids", "organization_guids")
	if !ok {
		return
	}
	s.mu.Lock()
	var list []*space
	for _, sp := range s.spaces {
		if lq.in("names", sp.name, false) && lq.in("guids", sp.guid, false) && lq.in("organization_guids", sp.org, false) {
			list = append(list, sp)
		}
	}
	sortByCreated(list, func(x *space) meta { return x.meta })
	out := make([]map[string]any, 0, len(list))
	for _, sp := range list {
		out = append(out, s.spaceJSON(sp))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) createSpace(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name          string `json:"name"`
		Relationships struct {
			Organization toOne `json:"organization"`
		} `json:"relationships"`
		Metadata *metadataReq `json:"metadata,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Name == "" {
		unprocessable(w, "Name can't be blank")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	orgGUID := req.Relationships.Organization.guid()
	if s.orgs[orgGUID] == nil {
		unprocessable(w, "Invalid organization. Ensure the organization exists and you have access to it.")
		return
	}
	for _, sp := range s.spaces {
		if sp.name == req.Name && sp.org == orgGUID {
			unprocessable(w, "Name must be unique per organization")
			return
		}
	}
	sp := &space{meta: s.newMeta(), name: req.Name, org: orgGUID}
	s.spaces[sp.guid] = sp
	writeJSON(w, http.StatusCreated, s.spaceJSON(sp))
}

func (s *Server) getSpace(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sp := s.spaces[r.PathValue("guid")]
	if sp == nil {
		notFound(w, "Space")
		return
	}
	writeJSON(w, http.StatusOK, s.spaceJSON(sp))
}

// ---- apps ----

func (s *Server) appJSON(a *app) map[string]any {
	var data map[string]any
	if a.lifecycle == "docker" {
		data = map[string]any{}
	} else {
		bps := a.buildpacks
		if bps == nil {
			bps = []string{}
		}
		data = map[string]any{"buildpacks": bps, "stack": a.stack}
	}
	return map[string]any{
		"guid": a.guid, "created_at": ts(a.created), "updated_at": ts(a.updated), "name": a.name, "state": "STOPPED",
		"lifecycle":     map[string]any{"type": a.lifecycle, "data": data},
		"relationships": map[string]any{"space": relationship(a.space)},
		"metadata":      metadataOut(a.metadata),
		"links": map[string]any{
			"self": s.link("/v3/apps/" + a.guid), "space": s.link("/v3/spaces/" + a.space),
			"packages": s.link("/v3/apps/" + a.guid + "/packages"), "tasks": s.link("/v3/apps/" + a.guid + "/tasks"),
			"current_droplet": s.link("/v3/apps/" + a.guid + "/droplets/current"),
			"droplets":        s.link("/v3/apps/" + a.guid + "/droplets"),
		},
	}
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r, "names", "guids", "space_guids", "organization_guids", "stacks", "lifecycle_type", "include")
	if !ok {
		return
	}
	s.mu.Lock()
	var list []*app
	for _, a := range s.apps {
		if lq.in("names", a.name, false) && lq.in("guids", a.guid, false) && lq.in("space_guids", a.space, false) &&
			lq.in("organization_guids", s.spaces[a.space].org, false) && lq.in("lifecycle_type", a.lifecycle, false) {
			list = append(list, a)
		}
	}
	sortByCreated(list, func(x *app) meta { return x.meta })
	out := make([]map[string]any, 0, len(list))
	for _, a := range list {
		out = append(out, s.appJSON(a))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name          string `json:"name"`
		Relationships struct {
			Space toOne `json:"space"`
		} `json:"relationships"`
		EnvironmentVariables map[string]string `json:"environment_variables,omitempty"`
		Lifecycle            *struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		} `json:"lifecycle,omitempty"`
		Metadata *metadataReq `json:"metadata,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	if req.Name == "" {
		unprocessable(w, "Name can't be blank")
		return
	}
	for k := range req.EnvironmentVariables {
		if strings.HasPrefix(strings.ToUpper(k), "VCAP_") {
			unprocessable(w, "Environment variables cannot start with VCAP_")
			return
		}
		if strings.ToUpper(k) == "PORT" {
			unprocessable(w, "Environment variables cannot set PORT")
			return
		}
	}
	a := &app{meta: s.newMeta(), name: req.Name, lifecycle: "buildpack", stack: "cflinuxfs4", env: req.EnvironmentVariables, metadata: req.Metadata}
	if l := req.Lifecycle; l != nil {
		switch l.Type {
		case "docker":
			if len(l.Data) != 0 {
				unprocessable(w, "Lifecycle data must be an empty object for docker")
				return
			}
			a.lifecycle = "docker"
			a.stack = ""
		case "buildpack":
			for k, v := range l.Data {
				switch k {
				case "buildpacks":
					list, ok := v.([]any)
					if !ok {
						unprocessable(w, "Buildpacks must be an array")
						return
					}
					for _, b := range list {
						bs, ok := b.(string)
						if !ok {
							unprocessable(w, "Buildpacks can only contain strings")
							return
						}
						a.buildpacks = append(a.buildpacks, bs)
					}
				case "stack":
					st, ok := v.(string)
					if !ok {
						unprocessable(w, "Stack must be a string")
						return
					}
					a.stack = st
				default:
					unprocessable(w, "Lifecycle Unknown field(s): '"+k+"'")
					return
				}
			}
		default:
			unprocessable(w, "Lifecycle type is not included in the list: buildpack, docker, cnb")
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	spaceGUID := req.Relationships.Space.guid()
	if s.spaces[spaceGUID] == nil {
		unprocessable(w, "Invalid space. Ensure that the space exists and you have access to it.")
		return
	}
	if a.lifecycle == "docker" && !s.flags["diego_docker"].enabled {
		cfError(w, http.StatusForbidden, 330002, "CF-FeatureDisabled", "Feature Disabled: diego_docker")
		return
	}
	for _, x := range s.apps {
		if x.space == spaceGUID && strings.EqualFold(x.name, req.Name) {
			unprocessable(w, "App with the name '"+req.Name+"' already exists.")
			return
		}
	}
	a.space = spaceGUID
	s.apps[a.guid] = a
	writeJSON(w, http.StatusCreated, s.appJSON(a))
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[r.PathValue("guid")]
	if a == nil {
		notFound(w, "App")
		return
	}
	writeJSON(w, http.StatusOK, s.appJSON(a))
}

func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	guid := r.PathValue("guid")
	if s.apps[guid] == nil {
		notFound(w, "App")
		return
	}
	s.deleteAppLocked(guid)
	j := s.newJob("app.delete", nil)
	w.Header().Set("Location", s.URL+"/v3/jobs/"+j.guid)
	w.WriteHeader(http.StatusAccepted)
}

func (s *Server) deleteAppLocked(guid string) {
	delete(s.apps, guid)
	for g, p := range s.packages {
		if p.app == guid {
			delete(s.packages, g)
		}
	}
	for g, b := range s.builds {
		if b.app == guid {
			delete(s.builds, g)
		}
	}
	for g, d := range s.droplets {
		if d.app == guid {
			delete(s.droplets, g)
		}
	}
	for g, t := range s.tasks {
		if t.app == guid {
			if t.proc != nil {
				t.proc.kill()
			}
			delete(s.tasks, g)
		}
	}
}

func (s *Server) getCurrentDropletRel(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[r.PathValue("guid")]
	if a == nil {
		notFound(w, "App")
		return
	}
	if a.droplet == "" {
		notFound(w, "Droplet")
		return
	}
	writeJSON(w, http.StatusOK, s.currentDropletJSON(a))
}

func (s *Server) currentDropletJSON(a *app) map[string]any {
	return map[string]any{"data": map[string]any{"guid": a.droplet}, "links": map[string]any{
		"self":    s.link("/v3/apps/" + a.guid + "/relationships/current_droplet"),
		"related": s.link("/v3/apps/" + a.guid + "/droplets/current"),
	}}
}

func (s *Server) setCurrentDroplet(w http.ResponseWriter, r *http.Request) {
	var req toOne
	if !decodeStrict(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[r.PathValue("guid")]
	if a == nil {
		notFound(w, "App")
		return
	}
	d := s.droplets[req.guid()]
	if d == nil || d.app != a.guid || d.state != "STAGED" {
		unprocessable(w, "Unable to assign current droplet. Ensure the droplet exists and belongs to this app.")
		return
	}
	a.droplet = d.guid
	a.updated = time.Now().UTC()
	writeJSON(w, http.StatusOK, s.currentDropletJSON(a))
}

func (s *Server) getCurrentDroplet(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[r.PathValue("guid")]
	if a == nil {
		notFound(w, "App")
		return
	}
	d := s.droplets[a.droplet]
	if d == nil {
		notFound(w, "Droplet")
		return
	}
	writeJSON(w, http.StatusOK, s.dropletJSON(d))
}

// ---- packages ----

func (s *Server) packageJSON(p *pkg) map[string]any {
	var data map[string]any
	if p.typ == "docker" {
		data = map[string]any{"image": p.image}
		if p.username != "" {
			data["username"] = p.username
			data["password"] = "***"
		}
	} else {
		var sum any
		if p.sha != "" {
			sum = p.sha
		}
		data = map[string]any{"error": nil, "checksum": map[string]any{"type": "sha256", "value": sum}}
	}
	return map[string]any{
		"guid": p.guid, "created_at": ts(p.created), "updated_at": ts(p.updated), "type": p.typ, "data": data, "state": p.state,
		"relationships": map[string]any{"app": relationship(p.app)},
		"metadata":      metadataOut(nil),
		"links": map[string]any{
			"self": s.link("/v3/packages/" + p.guid), "app": s.link("/v3/apps/" + p.app),
			"upload":   map[string]any{"href": s.URL + "/v3/packages/" + p.guid + "/upload", "method": "POST"},
			"download": map[string]any{"href": s.URL + "/v3/packages/" + p.guid + "/download", "method": "GET"},
		},
	}
}

func (s *Server) createPackage(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Type          string `json:"type"`
		Relationships struct {
			App toOne `json:"app"`
		} `json:"relationships"`
		Data *struct {
			Image    string `json:"image"`
			Username string `json:"username,omitempty"`
			Password string `json:"password,omitempty"`
		} `json:"data,omitempty"`
		Metadata *metadataReq `json:"metadata,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[req.Relationships.App.guid()]
	if a == nil {
		unprocessable(w, "App must exist")
		return
	}
	p := &pkg{meta: s.newMeta(), app: a.guid, typ: req.Type}
	switch req.Type {
	case "docker":
		if a.lifecycle != "docker" {
			unprocessable(w, "Cannot create a docker package for a buildpack app")
			return
		}
		if req.Data == nil || req.Data.Image == "" {
			unprocessable(w, "Data Image required")
			return
		}
		p.image, p.username, p.password, p.state = req.Data.Image, req.Data.Username, req.Data.Password, "READY"
	case "bits":
		if req.Data != nil {
			unprocessable(w, "Data must be empty if type is bits")
			return
		}
		if a.lifecycle == "docker" {
			unprocessable(w, "Cannot create bits package for a Docker app")
			return
		}
		p.state = "AWAITING_UPLOAD"
	default:
		unprocessable(w, "Type must be one of 'bits, docker'")
		return
	}
	s.packages[p.guid] = p
	writeJSON(w, http.StatusCreated, s.packageJSON(p))
}

func (s *Server) getPackage(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.packages[r.PathValue("guid")]
	if p == nil {
		notFound(w, "Package")
		return
	}
	writeJSON(w, http.StatusOK, s.packageJSON(p))
}

func (s *Server) uploadPackage(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseMultipartForm(64 << 20); err != nil {
		unprocessable(w, "Upload must include either resources or bits")
		return
	}
	for k := range r.MultipartForm.Value {
		if k != "resources" {
			unprocessable(w, "Unknown field(s): '"+k+"'")
			return
		}
	}
	var bits []byte
	if fh := r.MultipartForm.File["bits"]; len(fh) > 0 {
		f, err := fh[0].Open()
		if err == nil {
			bits, err = io.ReadAll(f)
			f.Close()
		}
		if err != nil {
			unprocessable(w, err.Error())
			return
		}
	}
	for k := range r.MultipartForm.File {
		if k != "bits" {
			unprocessable(w, "Unknown field(s): '"+k+"'")
			return
		}
	}
	if bits == nil {
		unprocessable(w, "Upload must include either resources or bits")
		return
	}
	if _, err := zip.NewReader(bytes.NewReader(bits), int64(len(bits))); err != nil {
		unprocessable(w, "Bits must be a zip file")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.packages[r.PathValue("guid")]
	if p == nil {
		notFound(w, "Package")
		return
	}
	if p.typ != "bits" {
		unprocessable(w, "Package type must be bits.")
		return
	}
	if p.state != "AWAITING_UPLOAD" {
		unprocessable(w, "Package has already been uploaded")
		return
	}
	sum := sha256.Sum256(bits)
	p.bits, p.sha, p.state, p.updated = bits, hex.EncodeToString(sum[:]), "READY", time.Now().UTC()
	writeJSON(w, http.StatusOK, s.packageJSON(p))
}

// ---- builds and droplets ----

func (s *Server) buildJSON(b *build) map[string]any {
	a := s.apps[b.app]
	var errv, drop any
	if b.err != "" {
		errv = b.err
	}
	if b.droplet != "" {
		drop = map[string]any{"guid": b.droplet}
	}
	lc := map[string]any{"type": "docker", "data": map[string]any{}}
	if a != nil && a.lifecycle == "buildpack" {
		bps := a.buildpacks
		if bps == nil {
			bps = []string{}
		}
		lc = map[string]any{"type": "buildpack", "data": map[string]any{"buildpacks": bps, "stack": a.stack}}
	}
	return map[string]any{
		"guid": b.guid, "created_at": ts(b.created), "updated_at": ts(b.updated), "state": b.state, "error": errv,
		"staging_memory_in_mb": 1024, "staging_disk_in_mb": 1024, "staging_log_rate_limit_bytes_per_second": -1,
		"lifecycle": lc, "package": map[string]any{"guid": b.pkg}, "droplet": drop,
		"created_by":    map[string]any{"guid": s.opts.ClientID, "name": s.opts.ClientID, "email": ""},
		"relationships": map[string]any{"app": relationship(b.app)},
		"metadata":      metadataOut(nil),
		"links":         map[string]any{"self": s.link("/v3/builds/" + b.guid), "app": s.link("/v3/apps/" + b.app)},
	}
}

func (s *Server) createBuild(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Package struct {
			GUID string `json:"guid"`
		} `json:"package"`
		Lifecycle                         map[string]any `json:"lifecycle,omitempty"`
		StagingMemoryInMB                 int            `json:"staging_memory_in_mb,omitempty"`
		StagingDiskInMB                   int            `json:"staging_disk_in_mb,omitempty"`
		StagingLogRateLimitBytesPerSecond int            `json:"staging_log_rate_limit_bytes_per_second,omitempty"`
		Metadata                          *metadataReq   `json:"metadata,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.packages[req.Package.GUID]
	if p == nil {
		unprocessable(w, "Unable to use package. Ensure that the package exists and you have access to it.")
		return
	}
	if p.state != "READY" {
		unprocessable(w, "Package state must be READY to stage")
		return
	}
	b := &build{meta: s.newMeta(), app: p.app, pkg: p.guid, state: "STAGING"}
	s.builds[b.guid] = b
	out := s.buildJSON(b)
	time.AfterFunc(s.opts.StagingTime, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.builds[b.guid] == nil {
			return
		}
		d := &droplet{meta: s.newMeta(), app: p.app, pkg: p.guid, state: "STAGED", bits: p.bits, image: p.image, typ: p.typ}
		s.droplets[d.guid] = d
		b.state, b.droplet, b.updated = "STAGED", d.guid, time.Now().UTC()
	})
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.builds[r.PathValue("guid")]
	if b == nil {
		notFound(w, "Build")
		return
	}
	writeJSON(w, http.StatusOK, s.buildJSON(b))
}

func (s *Server) dropletJSON(d *droplet) map[string]any {
	var image any
	lc := map[string]any{"type": "buildpack", "data": map[string]any{}}
	procTypes := map[string]any{"web": ""}
	if d.typ == "docker" {
		image = d.image
		lc = map[string]any{"type": "docker", "data": map[string]any{}}
	}
	return map[string]any{
		"guid": d.guid, "created_at": ts(d.created), "updated_at": ts(d.updated), "state": d.state, "error": nil,
		"lifecycle": lc, "execution_metadata": "", "process_types": procTypes, "image": image,
		"checksum": nil, "stack": "cflinuxfs4", "buildpacks": []any{},
		"relationships": map[string]any{"app": relationship(d.app)},
		"metadata":      metadataOut(nil),
		"links":         map[string]any{"self": s.link("/v3/droplets/" + d.guid), "app": s.link("/v3/apps/" + d.app), "package": s.link("/v3/packages/" + d.pkg)},
	}
}

func (s *Server) getDroplet(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.droplets[r.PathValue("guid")]
	if d == nil {
		notFound(w, "Droplet")
		return
	}
	writeJSON(w, http.StatusOK, s.dropletJSON(d))
}

// ---- feature flags ----

func (s *Server) flagJSON(f *flag) map[string]any {
	return map[string]any{"name": f.name, "enabled": f.enabled, "updated_at": ts(f.updated), "custom_error_message": nil,
		"links": map[string]any{"self": s.link("/v3/feature_flags/" + f.name)}}
}

func (s *Server) listFlags(w http.ResponseWriter, r *http.Request) {
	lq, ok := parseList(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	names := make([]string, 0, len(s.flags))
	for n := range s.flags {
		names = append(names, n)
	}
	sortStrings(names)
	out := make([]map[string]any, 0, len(names))
	for _, n := range names {
		out = append(out, s.flagJSON(s.flags[n]))
	}
	s.mu.Unlock()
	s.page(w, r, lq, out)
}

func (s *Server) getFlag(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flags[r.PathValue("name")]
	if f == nil {
		notFound(w, "Feature flag")
		return
	}
	writeJSON(w, http.StatusOK, s.flagJSON(f))
}

func (s *Server) updateFlag(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Enabled            *bool   `json:"enabled,omitempty"`
		CustomErrorMessage *string `json:"custom_error_message,omitempty"`
	}
	if !decodeStrict(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flags[r.PathValue("name")]
	if f == nil {
		notFound(w, "Feature flag")
		return
	}
	if req.Enabled != nil {
		f.enabled = *req.Enabled
		f.updated = time.Now().UTC()
	}
	writeJSON(w, http.StatusOK, s.flagJSON(f))
}

func sortStrings(v []string) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}

// commandLength is how Cloud Controller measures a command: Ruby String#length, in
// characters.
func commandLength(s string) int { return utf8.RuneCountInString(s) }
