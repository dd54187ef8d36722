package api

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

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
		projectID, err := s.projectForToken(c, token)
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

// tokenCacheTTL is how long an API instance trusts a token it has looked up. A token
// revoked through this process (unbind, deprovision, store.RevokeToken) is refused at
// once: every revocation bumps Store.TokenRevocations, and an entry looked up before the
// latest bump is not trusted (it is dropped when next read). A token
// revoked through another API instance (or the admin command) may still be accepted
// here for up to this long; the project's own checks (a deprovisioned project takes no
// task, see store.QueueTasksOnce) do not depend on the cache.
const tokenCacheTTL = 2 * time.Second

// maxCachedTokens bounds the cache; when full, it starts over.
const maxCachedTokens = 10000

// tokenCache remembers token digest → project id for tokenCacheTTL, so that the
// requests of a busy client cost no token lookup each. Only live tokens are cached.
type tokenCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]tokenEntry
}

type tokenEntry struct {
	projectID string
	expires   time.Time
	// epoch is Store.TokenRevocations() from before the lookup: an entry taken before
	// the latest revocation of this process is not trusted.
	epoch uint64
}

func newTokenCache(ttl time.Duration, now func() time.Time) *tokenCache {
	return &tokenCache{ttl: ttl, now: now, entries: map[string]tokenEntry{}}
}

func (tc *tokenCache) get(key string, epoch uint64) (string, bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	e, ok := tc.entries[key]
	if !ok {
		return "", false
	}
	if e.epoch != epoch || !tc.now().Before(e.expires) {
		delete(tc.entries, key)
		return "", false
	}
	return e.projectID, true
}

func (tc *tokenCache) put(key, projectID string, epoch uint64) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if len(tc.entries) >= maxCachedTokens {
		clear(tc.entries)
	}
	tc.entries[key] = tokenEntry{projectID: projectID, expires: tc.now().Add(tc.ttl), epoch: epoch}
}

// projectForToken is store.ProjectForToken through the token cache.
func (s *Server) projectForToken(c *gin.Context, token string) (string, error) {
	key := string(store.HashToken(token))
	// The epoch is read before the lookup: a revocation that commits while the lookup
	// runs bumps it, and the entry stored below is then already stale.
	epoch := s.store.TokenRevocations()
	if id, ok := s.tokens.get(key, epoch); ok {
		return id, nil
	}
	id, err := s.store.ProjectForToken(c.Request.Context(), token)
	if err != nil {
		return "", err
	}
	s.tokens.put(key, id, epoch)
	return id, nil
}
