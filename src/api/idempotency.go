package api

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

// Idempotency keys on POST /tasks and POST /schedules (store/idempotency.go): a client
// that sends `Idempotency-Key: <key>` and repeats the request (same body) gets the same
// answer and no second copy, for 24 hours; the answer to a repeat carries
// `Idempotent-Replayed: true`. The same key with another body (or on the other route)
// answers 422 {"msg"}. Keys are per project.

const (
	idempotencyHeader = "Idempotency-Key"
	replayedHeader    = "Idempotent-Replayed"
	maxIdempotencyKey = 255
)

// idempotencyKey reads the header: nil without one; 400 for a key that is too long or
// not printable ASCII.
func idempotencyKey(c *gin.Context, route string, body []byte) (*store.Idempotency, bool) {
	key := strings.TrimSpace(c.GetHeader(idempotencyHeader))
	if key == "" {
		return nil, true
	}
	if len(key) > maxIdempotencyKey || strings.IndexFunc(key, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
		abortMsg(c, http.StatusBadRequest, "Idempotency-Key must be 1 to 255 printable ASCII characters")
		return nil, false
	}
	sum := sha256.Sum256(body)
	return &store.Idempotency{Key: key, Route: route, RequestHash: sum[:]}, true
}

func idempotencyMismatch(c *gin.Context, err error) bool {
	if errors.Is(err, store.ErrIdempotencyMismatch) {
		abortMsg(c, http.StatusUnprocessableEntity, "Idempotency-Key was already used for a different request; use a new key for a new request")
		return true
	}
	return false
}

func markReplay(c *gin.Context, replay bool) {
	if replay {
		c.Header(replayedHeader, "true")
	}
}
