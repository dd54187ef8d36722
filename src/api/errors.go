package api

import (
	"context"
	"errors"
	"net/http"
	"runtime/debug"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

// msgBody is IronWorker's error (and simple success) body.
type msgBody struct {
	Msg string `json:"msg"`
}

func abortMsg(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, msgBody{Msg: msg})
}

// fail answers for an unexpected error: 503 when the database is unreachable (clients
// back off and retry on 503), 500 otherwise. The cause is logged, never sent.
func (s *Server) fail(c *gin.Context, err error) {
	if store.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("database unavailable", "route", c.FullPath(), "error", err.Error())
		abortMsg(c, http.StatusServiceUnavailable, "Service temporarily unavailable, retry later")
		return
	}
	if errors.Is(err, context.Canceled) && c.Request.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		c.Abort()
		return
	}
	s.log.Error("request failed", "route", c.FullPath(), "method", c.Request.Method, "error", err.Error())
	abortMsg(c, http.StatusInternalServerError, "Internal error")
}

func (s *Server) recoverJSON() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic in handler", "route", c.FullPath(), "panic", r, "stack", string(debug.Stack()))
				abortMsg(c, http.StatusInternalServerError, "Internal error")
			}
		}()
		c.Next()
	}
}
