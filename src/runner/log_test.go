package runner_test

import (
	"io"
	"log/slog"

	. "github.com/onsi/ginkgo/v2"
)

func testLogger() *slog.Logger {
	var w io.Writer = io.Discard
	if _, cfg := GinkgoConfiguration(); cfg.Verbose || cfg.VeryVerbose {
		w = GinkgoWriter
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
