package fakecf

import (
	"math"
	"time"
)

// Down makes Cloud Controller (everything under /v3) answer every request 502, as when
// CC is down behind the gorouter, for d; then it serves again. UAA and Log Cache stay
// up. Calling it again (or Outage) replaces the outage in progress.
func (s *Server) Down(d time.Duration) {
	s.Outage(math.MaxInt32)
	time.AfterFunc(d, func() { s.Outage(0) })
}
