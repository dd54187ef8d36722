// Package cli is what every binary's main shares: exit codes and the JSON logger.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
)

// Main runs run with the command-line arguments: `-h` exits 0 after the usage text, an
// error is printed as "<name>: <error>" and exits 1.
func Main(name string, run func(args []string) error) {
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
