package store_test

import (
	"testing"
	"time"

	"github.com/ironcf/ironworker-release/src/store"
)

// FuzzParseCron: no cron expression panics the parser or yields a schedule whose Next
// panics or goes back in time. Seeds in testdata/fuzz/FuzzParseCron.
func FuzzParseCron(f *testing.F) {
	for _, s := range []string{"*/5 * * * *", "0 0 * * *", "@hourly", "@every 1s", "TZ=UTC 0 0 * * *",
		"CRON_TZ=Europe/Berlin 0 0 * * *", "60 25 32 13 8", "0 0 30 2 *", "1-59/0 * * * *", "", " ", "* * * * * *",
		"0-1000000000 * * * *", "@yearly", "@reboot", "*/3-2 * * * *", "? ? ? ? ?", "0 0 * * MON-FRI"} {
		f.Add(s)
	}
	from := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		sched, err := store.ParseCron(expr)
		if err != nil {
			return
		}
		next := sched.Next(from)
		if !next.IsZero() && !next.After(from) {
			t.Fatalf("%q: next run %v is not after %v", expr, next, from)
		}
	})
}
