package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

const projectKey = "project_id"

// bearerToken reads `Authorization: OAuth <token>` (what every IronWorker client sends;
// "Bearer" is accepted too) or the `oauth` query parameter (webhooks, ironcli).
func bearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
		if ok && (strings.EqualFold(scheme, "OAuth") || strings.EqualFold(scheme, "Bearer")) {
			return strings.TrimSpace(token)
		}
	}
	return r.URL.Query().Get("oauth")
}

// authenticate resolves the token to its project and requires it to be the project of
// the path. Another project's id answers 404, exactly as an id that does not exist.
func (s *Server) authenticate() gin.HandlerFunc {
	return func(c *gin.Context) {
		token := bearerToken(c.Request)
		if token == "" {
			abortMsg(c, http.StatusUnauthorized, "Token required for authentication")
			return
		}
		projectID, err := s.store.ProjectForToken(c.Request.Context(), token)
		if errors.Is(err, store.ErrNotFound) {
			abortMsg(c, http.StatusUnauthorized, "Invalid token")
			return
		}
		if err != nil {
			s.fail(c, err)
			return
		}
		if c.Param("project_id") != projectID {
			abortMsg(c, http.StatusNotFound, "Project not found")
			return
		}
		c.Set(projectKey, projectID)
		c.Next()
	}
}

func projectID(c *gin.Context) string { return c.GetString(projectKey) }
