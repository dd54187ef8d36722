// Package cli is what every binary's main shares: exit codes and the JSON logger.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
)

// Main runs run with the command-line arguments: `-h` exits 0 after the usage text, an
// error is printed as "<name>: <error>" and exits 1.
func Main(name string, run func(args []string) error) {
	TuneGC()
	err := run(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Logger is the job's slog JSON logger on stdout (one event per line, as BOSH's log
// forwarding expects), at the config's level (debug, info, warn, error).
func Logger(job, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // the config loader already validated it
	return slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: l})).With("job", job)
}

// gcPercent is the GOGC of every binary run without one in its environment: the dev
// platform, the tools, iron-registrar. iron-api and iron-runner get theirs from their
// gc_percent property (bpm sets GOGC), whose default must stay this. Their live heaps are small (tens of MB) and what they
// allocate is short-lived request and row garbage, so the default (100) collects very
// often: about a fifth of iron-api's and iron-runner's CPU in scripts/bench, and ~17%
// more end-to-end throughput at 400. The cost is a peak heap of about five times the
// live one.
const gcPercent = 400

// TuneGC sets the garbage collector's target to gcPercent, unless the GOGC environment
// variable chooses (an operator's setting wins).
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}
