package api

import (
	"fmt"
	"net/http"
)

// What tasks, webhooks, retries and schedules share: the lenient reading of priority,
// timeout and delay that real clients need, and the limits.

// priorityOf maps a client's priority to 0-2, or nil for "the code's default": clients
// send -3 (ironcli's unset), -1000 and other sentinels.
func priorityOf(v flexInt) *int {
	if !v.Set || v.Value < 0 || v.Value > 2 {
		return nil
	}
	p := v.Value
	return &p
}

// inputError is a client mistake: a status and the msg to answer with.
type inputError struct {
	status int
	msg    string
}

func (e *inputError) Error() string { return e.msg }

func badRequest(format string, args ...any) *inputError {
	return &inputError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// taskTimeout resolves a timeout in seconds: unset or 0 means the default.
func (s *Server) taskTimeout(v flexInt) (int, *inputError) {
	if !v.Set || v.Value == 0 {
		return s.limits.DefaultTaskTimeoutSeconds, nil
	}
	if v.Value < 0 {
		return 0, badRequest("timeout must not be negative")
	}
	if v.Value > s.limits.MaxTaskTimeoutSeconds {
		return 0, badRequest("timeout must be at most %d seconds", s.limits.MaxTaskTimeoutSeconds)
	}
	return v.Value, nil
}

// taskDelay resolves a delay in seconds: unset means 0.
func (s *Server) taskDelay(v flexInt) (int, *inputError) {
	if !v.Set {
		return 0, nil
	}
	if v.Value < 0 {
		return 0, badRequest("delay must not be negative")
	}
	if v.Value > s.limits.MaxDelaySeconds {
		return 0, badRequest("delay must be at most %d seconds", s.limits.MaxDelaySeconds)
	}
	return v.Value, nil
}

// checkPayload enforces the payload limit (413).
func (s *Server) checkPayload(payload string) *inputError {
	if len(payload) > s.limits.MaxPayloadBytes {
		return &inputError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("payload is %d bytes; the limit is %d bytes", len(payload), s.limits.MaxPayloadBytes)}
	}
	return nil
}

// abortInput answers a client mistake.
func abortInput(c interface{ AbortWithStatusJSON(int, any) }, e *inputError) {
	c.AbortWithStatusJSON(e.status, msgBody{Msg: e.msg})
}
