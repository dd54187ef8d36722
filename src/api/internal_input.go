package api

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

// Task input for the diego backend. A Cloud Foundry task takes no environment and a
// command of at most 4096 characters, so its container fetches its payload and config
// from here at start, with a credential scoped to that one task:
//
//	POST /internal/v1/tasks/:id/input-token  {lease_id}     (runner credential)
//	  → 200 {"url": "<external url>/internal/v1/tasks/<id>/input", "token": "…",
//	         "broker_instance": bool}
//	  409 lease lost, task cancelled or finished
//	GET  /internal/v1/tasks/:id/input/payload              (Authorization: Bearer <token>)
//	GET  /internal/v1/tasks/:id/input/config
//	  → 200 application/octet-stream, exactly the stored bytes
//	  401 no, a wrong or another task's token; 410 the task has finished
//
// The token is printed into the CF task command (readable by the space's developers),
// so it grants nothing but these two reads, for this task, until it finishes. Only its
// SHA-256 is stored. The fetch routes take no runner credential and are mounted outside
// the runner protocol's authenticated group.
func (s *Server) mountTaskInput(r *gin.Engine, opts RunnerOptions) {
	ia := &internalAPI{s: s, cfg: opts.Config}
	for _, c := range opts.Config.Credentials {
		ia.creds = append(ia.creds, hashedCredential{name: c.Name, nameH: sha256.Sum256([]byte(c.Name)), secret: sha256.Sum256([]byte(c.Secret))})
	}
	auth := ia.authenticate()
	r.POST("/internal/v1/tasks/:task_id/input-token", auth, ia.inputToken)
	r.POST("/internal/v1/tasks/:task_id/log-cursor", auth, ia.setLogCursor)
	r.GET("/internal/v1/tasks/:task_id/log-cursor", auth, ia.getLogCursor)
	r.GET("/internal/v1/tasks/:task_id/input/:part", ia.taskInput)
}

// Log cursors (runner credential): how far a backend's own log of the task (Log Cache)
// has been appended to the task log, so that an adopting runner resumes there.
//
//	POST /internal/v1/tasks/:id/log-cursor  {lease_id, cursor} → 200; 409 lease lost
//	GET  /internal/v1/tasks/:id/log-cursor?lease_id=…  → 200 {"cursor": "…" or ""}

func (ia *internalAPI) setLogCursor(c *gin.Context) {
	id, ok := leasedTaskID(c)
	if !ok {
		return
	}
	var body struct {
		LeaseID string `json:"lease_id"`
		Cursor  string `json:"cursor"`
	}
	if !ia.s.decodeJSON(c, &body) || !requireLease(c, body.LeaseID) {
		return
	}
	err := ia.s.store.SetLogCursor(c.Request.Context(), id, body.LeaseID, body.Cursor)
	if errors.Is(err, store.ErrBadLogCursor) {
		abortMsg(c, http.StatusBadRequest, err.Error())
		return
	}
	ia.answerCancel(c, err)
}

func (ia *internalAPI) getLogCursor(c *gin.Context) {
	id, ok := leasedTaskID(c)
	if !ok {
		return
	}
	leaseID := c.Query("lease_id")
	if !requireLease(c, leaseID) {
		return
	}
	cursor, err := ia.s.store.LogCursor(c.Request.Context(), id, leaseID)
	if ia.leaseError(c, err) {
		return
	}
	c.JSON(http.StatusOK, gin.H{"cursor": cursor})
}

// inputToken is POST /internal/v1/tasks/:id/input-token {lease_id}.
func (ia *internalAPI) inputToken(c *gin.Context) {
	id, ok := leasedTaskID(c)
	if !ok {
		return
	}
	var body struct {
		LeaseID string `json:"lease_id"`
	}
	if !ia.s.decodeJSON(c, &body) || !requireLease(c, body.LeaseID) {
		return
	}
	ctx := c.Request.Context()
	token, err := ia.s.store.IssueInputToken(ctx, id, body.LeaseID)
	if errors.Is(err, store.ErrTaskCancelled) {
		c.AbortWithStatusJSON(http.StatusConflict, conflictBody{Msg: "Task was cancelled", Status: "cancelled"})
		return
	}
	if ia.leaseError(c, err) {
		return
	}
	// Projects made by the service broker may run in a CF space of their own (runner
	// config); tell the runner without making it ask.
	inst, err := ia.s.store.TaskHasBrokerInstance(ctx, id)
	if err != nil {
		ia.s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"url": ia.externalBase(c) + "/internal/v1/tasks/" + id + "/input", "token": token, "broker_instance": inst})
}

// externalBase is the API's base URL for CF containers: runner.external_url, else the
// scheme and host the runner used.
func (ia *internalAPI) externalBase(c *gin.Context) string {
	if u := strings.TrimRight(ia.cfg.ExternalURL, "/"); u != "" {
		return u
	}
	scheme := "http"
	if c.Request.TLS != nil {
		scheme = "https"
	} else if p := c.Request.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	return scheme + "://" + c.Request.Host
}

// taskInput is GET /internal/v1/tasks/:id/input/payload|config with the task's bearer token.
func (ia *internalAPI) taskInput(c *gin.Context) {
	part := c.Param("part")
	if part != "payload" && part != "config" {
		abortMsg(c, http.StatusNotFound, "Not found")
		return
	}
	c.Header("Cache-Control", "no-store")
	token := ""
	if scheme, tok, ok := strings.Cut(strings.TrimSpace(c.Request.Header.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
		token = strings.TrimSpace(tok)
	}
	id := c.Param("task_id")
	unauthorized := func() {
		c.Header("WWW-Authenticate", `Bearer realm="iron task input"`)
		abortMsg(c, http.StatusUnauthorized, "A valid task input token for this task is required")
	}
	if token == "" || !store.ValidID(id) {
		unauthorized()
		return
	}
	in, err := ia.s.store.TaskInputByToken(c.Request.Context(), id, token)
	switch {
	case errors.Is(err, store.ErrInputUnauthorized):
		unauthorized()
		return
	case errors.Is(err, store.ErrInputExpired):
		abortMsg(c, http.StatusGone, "The task has finished; its input is no longer available")
		return
	case err != nil:
		ia.s.fail(c, err)
		return
	}
	data := in.Payload
	if part == "config" {
		data = in.Config
	}
	c.Header("Content-Length", strconv.Itoa(len(data)))
	c.Data(http.StatusOK, "application/octet-stream", []byte(data))
}
