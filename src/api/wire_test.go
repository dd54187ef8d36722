package api

import (
	"encoding/json"
	"testing"
)

// The fast path for plain JSON strings (flexString, payloadField) decodes exactly as
// encoding/json does, and leaves everything else to it.
func TestPlainJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, lit := range []string{`""`, `"noop"`, `"{}"`, `"ünïcode ✓"`, `"a\"b"`, `"tab\tx"`, `"\u00e9"`, `"back\\slash"`,
		"\"raw\x01ctl\"", "\"bad\xffutf8\"", `"x"`, `null`, `12`, `true`, `{"a":1}`, `["a"]`, `"`, `"unterminated`} {
		var want string
		wantErr := json.Unmarshal([]byte(lit), &want)
		got, ok := plainJSONString([]byte(lit))
		if ok && (wantErr != nil || got != want) {
			t.Errorf("plainJSONString(%q) = %q; encoding/json: %q, %v", lit, got, want, wantErr)
		}
		var fs flexString
		var fsWant string
		if err := json.Unmarshal([]byte(`{"v":`+lit+`}`), &struct {
			V *flexString `json:"v"`
		}{&fs}); err == nil && wantErr == nil {
			fsWant = want
			if string(fs) != fsWant {
				t.Errorf("flexString(%q) = %q, want %q", lit, fs, fsWant)
			}
		}
		var pf payloadField
		if err := json.Unmarshal([]byte(`{"v":`+lit+`}`), &struct {
			V *payloadField `json:"v"`
		}{&pf}); err == nil && wantErr == nil && string(pf) != want {
			t.Errorf("payloadField(%q) = %q, want %q", lit, pf, want)
		}
	}
	// The fast path is taken for what it exists for: strings without escapes.
	for _, lit := range []string{`""`, `"noop"`, `"{}"`, `"ünïcode ✓"`} {
		if _, ok := plainJSONString([]byte(lit)); !ok {
			t.Errorf("plainJSONString(%q) left a plain string to encoding/json", lit)
		}
	}
}
