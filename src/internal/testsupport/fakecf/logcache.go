package fakecf

import (
	"net/http"
	"strconv"
	"time"

	"code.cloudfoundry.org/go-log-cache/v3/rpc/logcache_v1"
	"code.cloudfoundry.org/go-loggregator/v10/rpc/loggregator_v2"
	"google.golang.org/protobuf/encoding/protojson"
)

type envelope = *loggregator_v2.Envelope

func (s *Server) appendLog(sourceID, sourceType string, line []byte, stderr bool) {
	typ := loggregator_v2.Log_OUT
	if stderr {
		typ = loggregator_v2.Log_ERR
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixNano()
	if now <= s.lastEnvTime {
		now = s.lastEnvTime + 1
	}
	s.lastEnvTime = now
	s.envelopes[sourceID] = append(s.envelopes[sourceID], &loggregator_v2.Envelope{
		Timestamp:  now,
		SourceId:   sourceID,
		InstanceId: "0",
		Tags:       map[string]string{"source_type": sourceType},
		Message: &loggregator_v2.Envelope_Log{Log: &loggregator_v2.Log{
			Payload: append([]byte(nil), line...),
			Type:    typ,
		}},
	})
}

// LogLines returns the payloads of the log envelopes of an app with this source type.
func (s *Server) LogLines(appGUID, sourceType string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.envelopes[appGUID] {
		if e.GetTags()["source_type"] == sourceType {
			out = append(out, string(e.GetLog().GetPayload()))
		}
	}
	return out
}

func (s *Server) logCacheInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"version": "3.0.10", "vm_uptime": "1000"})
}

// logCacheRead is GET /api/v1/read/:source_id with start_time (inclusive, ns),
// end_time (exclusive, ns, default now), envelope_types, limit (default 100, at most
// 1000) and descending.
func (s *Server) logCacheRead(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bad := func(msg string) { writeJSON(w, http.StatusBadRequest, map[string]any{"code": 3, "message": msg}) }
	start := int64(0)
	end := time.Now().UnixNano() + 1
	if v := q.Get("start_time"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			bad("start_time must be an integer")
			return
		}
		start = n
	}
	if v := q.Get("end_time"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			bad("end_time must be an integer")
			return
		}
		end = n
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			bad("limit must be from 1 to 1000")
			return
		}
		limit = n
	}
	types := map[string]bool{}
	for _, t := range q["envelope_types"] {
		if _, ok := logcache_v1.EnvelopeType_value[t]; !ok {
			bad("unknown envelope type " + t)
			return
		}
		types[t] = true
	}
	descending := q.Get("descending") == "true"
	s.mu.Lock()
	var batch []*loggregator_v2.Envelope
	all := s.envelopes[r.PathValue("source")]
	if descending {
		for i := len(all) - 1; i >= 0 && len(batch) < limit; i-- {
			if e := all[i]; e.Timestamp >= start && e.Timestamp < end && typeMatch(types, e) {
				batch = append(batch, e)
			}
		}
	} else {
		for _, e := range all {
			if len(batch) >= limit {
				break
			}
			if e.Timestamp >= start && e.Timestamp < end && typeMatch(types, e) {
				batch = append(batch, e)
			}
		}
	}
	// Log Cache's gateway marshals with proto field names and emits defaults.
	body, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(&logcache_v1.ReadResponse{Envelopes: &loggregator_v2.EnvelopeBatch{Batch: batch}})
	s.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func typeMatch(types map[string]bool, e *loggregator_v2.Envelope) bool {
	if len(types) == 0 || types["ANY"] {
		return true
	}
	switch e.Message.(type) {
	case *loggregator_v2.Envelope_Log:
		return types["LOG"]
	case *loggregator_v2.Envelope_Counter:
		return types["COUNTER"]
	case *loggregator_v2.Envelope_Gauge:
		return types["GAUGE"]
	case *loggregator_v2.Envelope_Timer:
		return types["TIMER"]
	case *loggregator_v2.Envelope_Event:
		return types["EVENT"]
	}
	return false
}
