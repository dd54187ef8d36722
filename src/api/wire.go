package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// errTooLarge marks a body over the request limit (413).
var errTooLarge = errors.New("request body too large")

// readBody reads at most limit bytes of the request body.
func readBody(c *gin.Context, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(c.Request.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read request body: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, errTooLarge
	}
	return body, nil
}

// decodeJSON reads a JSON body into out, leniently as real clients need: an empty body
// (or only whitespace) leaves out untouched, unknown keys are ignored. It answers the
// client itself and returns false when the body is unusable.
func (s *Server) decodeJSON(c *gin.Context, out any) bool {
	_, ok := s.decodeJSONRaw(c, out)
	return ok
}

// decodeJSONRaw is decodeJSON that also returns the raw body (for idempotency hashes).
func (s *Server) decodeJSONRaw(c *gin.Context, out any) ([]byte, bool) {
	body, err := readBody(c, s.limits.MaxRequestBytes)
	if errors.Is(err, errTooLarge) {
		abortMsg(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body is larger than %d bytes", s.limits.MaxRequestBytes))
		return nil, false
	}
	if err != nil {
		abortMsg(c, http.StatusBadRequest, "Could not read the request body")
		return nil, false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return body, true
	}
	if err := json.Unmarshal(body, out); err != nil {
		abortMsg(c, http.StatusBadRequest, "Invalid JSON: "+jsonErrorText(err))
		return nil, false
	}
	return body, true
}

// jsonErrorText turns a decoding error into a message that names the field.
func jsonErrorText(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field != "" {
			return fmt.Sprintf("field %q must be %s, not %s", typeErr.Field, jsonTypeName(typeErr.Type.Kind().String()), typeErr.Value)
		}
		return fmt.Sprintf("expected %s, not %s", jsonTypeName(typeErr.Type.Kind().String()), typeErr.Value)
	}
	var fieldErr *flexError
	if errors.As(err, &fieldErr) {
		return fieldErr.Error()
	}
	return err.Error()
}

func jsonTypeName(kind string) string {
	switch kind {
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	default:
		return "a number"
	}
}

type flexError struct{ msg string }

func (e *flexError) Error() string { return e.msg }

// flexInt accepts a JSON number with or without a fraction (truncated) or a numeric
// string, as clients send timeouts and delays as floats.
type flexInt struct {
	Value int
	Set   bool
}

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		*f = flexInt{}
		return nil
	}
	if unq, err := strconv.Unquote(s); err == nil {
		s = strings.TrimSpace(unq)
		if s == "" {
			*f = flexInt{}
			return nil
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return &flexError{msg: fmt.Sprintf("expected a number, got %s", string(b))}
	}
	if v > math.MaxInt32 {
		v = math.MaxInt32
	}
	if v < math.MinInt32 {
		v = math.MinInt32
	}
	*f = flexInt{Value: int(v), Set: true}
	return nil
}

// jsonString decodes b when it is a JSON string: plainJSONString's fast path, else
// encoding/json.
func jsonString(b []byte) (string, bool) {
	if s, ok := plainJSONString(b); ok {
		return s, true
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return "", false
	}
	return s, true
}

// flexString accepts a string, null, a number or a boolean (stringified), since
// clients disagree on the types of labels and clusters.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	if s, ok := jsonString(b); ok {
		*f = flexString(s)
		return nil
	}
	trimmed := strings.TrimSpace(string(b))
	if trimmed == "null" {
		*f = ""
		return nil
	}
	if strings.HasPrefix(trimmed, "{") || strings.HasPrefix(trimmed, "[") {
		return &flexError{msg: fmt.Sprintf("expected a string, got %s", trimmed)}
	}
	*f = flexString(trimmed)
	return nil
}

// plainJSONString decodes a JSON string literal without escapes (the common case of
// code names, labels and payloads) without a second pass of encoding/json: ok false
// means b is something else (or has escapes), for json.Unmarshal to read.
func plainJSONString(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	inner := b[1 : len(b)-1]
	for _, c := range inner {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(inner) {
		return "", false
	}
	return string(inner), true
}

// timeJSON renders a time as RFC 3339 in UTC, or null.
func timeJSON(t *time.Time) *string {
	if t == nil || t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

func timeString(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// paging reads page and per_page (page from 0, per_page ≤ 100, default 30).
func paging(c *gin.Context) (offset, limit int, ok bool) {
	page, perPage := 0, 30
	if v := c.Query("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			abortMsg(c, http.StatusBadRequest, "page must be an integer from 0 to 100")
			return 0, 0, false
		}
		page = n
	}
	if v := c.Query("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			abortMsg(c, http.StatusBadRequest, "per_page must be an integer from 1 to 100")
			return 0, 0, false
		}
		perPage = n
	}
	return page * perPage, perPage, true
}

// truthy reads a query flag the way iron_go3 sends it: any non-empty value except "0"
// and "false" is true (iron_go3 sends `complete=%!d(bool=true)`).
func truthy(v string) bool {
	v = strings.TrimSpace(strings.ToLower(v))
	return v != "" && v != "0" && v != "false"
}

// epochQuery reads a Unix-seconds query parameter.
func epochQuery(c *gin.Context, name string) (*time.Time, bool) {
	v := c.Query(name)
	if v == "" {
		return nil, true
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		abortMsg(c, http.StatusBadRequest, name+" must be Unix epoch seconds")
		return nil, false
	}
	t := time.Unix(int64(f), 0).UTC()
	return &t, true
}
