package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

func (s *Server) healthz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 3*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("health check failed", "error", err.Error())
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "unavailable", "database": "unreachable"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok", "database": "ok"})
}

type projectJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
}

func (s *Server) getProject(c *gin.Context) {
	p, err := s.store.GetProject(c.Request.Context(), projectID(c))
	if errors.Is(err, store.ErrNotFound) {
		abortMsg(c, http.StatusNotFound, "Project not found")
		return
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, projectJSON{ID: p.ID, Name: p.Name, CreatedAt: timeString(p.CreatedAt), UpdatedAt: timeString(p.UpdatedAt)})
}

// setCredentials stores private registry credentials as `iron docker login` sends
// them: {"auth": base64(json{email, username, password, serveraddress})}.
func (s *Server) setCredentials(c *gin.Context) {
	var body struct {
		Auth string `json:"auth"`
	}
	if !s.decodeJSON(c, &body) {
		return
	}
	if body.Auth == "" {
		abortMsg(c, http.StatusBadRequest, `"auth" is required: base64 of {"username","password","serveraddress"}`)
		return
	}
	raw, err := base64.StdEncoding.DecodeString(body.Auth)
	if err != nil {
		if raw, err = base64.URLEncoding.DecodeString(body.Auth); err != nil {
			abortMsg(c, http.StatusBadRequest, `"auth" must be base64-encoded JSON`)
			return
		}
	}
	var creds struct {
		Email         string `json:"email"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		ServerAddress string `json:"serveraddress"`
	}
	if err := json.Unmarshal(raw, &creds); err != nil {
		abortMsg(c, http.StatusBadRequest, `"auth" must decode to a JSON object with username, password and serveraddress`)
		return
	}
	if creds.Username == "" || creds.Password == "" {
		abortMsg(c, http.StatusBadRequest, `"auth" must hold a username and a password`)
		return
	}
	server := strings.TrimSpace(creds.ServerAddress)
	if server == "" {
		server = "https://index.docker.io/v1/"
	}
	if err := s.store.SaveRegistryCredentials(c.Request.Context(), projectID(c), server, raw); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, msgBody{Msg: "Credentials saved"})
}
