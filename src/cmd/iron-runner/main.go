// iron-runner long-polls iron-api for task leases and runs the tasks on a backend (local
// processes, Cloud Foundry tasks on Diego, or no-op for benchmarks).
//
//	iron-runner --config FILE
//
// SIGTERM or SIGINT drains: leasing stops, running tasks get drain_timeout to finish,
// then the rest are handed back (see src/runner).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/ironcf/ironworker-release/src/backend"
	"github.com/ironcf/ironworker-release/src/backend/diego"
	"github.com/ironcf/ironworker-release/src/backend/local"
	"github.com/ironcf/ironworker-release/src/backend/noop"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/cli"
	"github.com/ironcf/ironworker-release/src/runner"
)

func main() { cli.Main("iron-runner", run) }

func run(args []string) error {
	fs := flag.NewFlagSet("iron-runner", flag.ContinueOnError)
	configPath := fs.String("config", "", "path to the iron-runner config file (YAML or JSON)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		return errors.New("--config is required")
	}
	cfg, err := config.LoadRunner(*configPath)
	if err != nil {
		return err
	}
	log := cli.Logger("iron-runner", cfg.LogLevel)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	be, closeBackend, err := newBackend(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeBackend()
	cl, err := client.NewRunnerClient(cfg.APIURL, cfg.Credential.Name, cfg.Credential.Secret,
		client.RunnerOptions{Timeout: cfg.RequestTimeout.Std()})
	if err != nil {
		return err
	}
	r, err := runner.New(runner.Options{
		Client: cl, Backend: be, RunnerID: cfg.RunnerID, Slots: cfg.Slots, LeaseBatch: cfg.LeaseBatch,
		LeaseWait: cfg.LeaseWait.Std(), HeartbeatInterval: cfg.HeartbeatInterval.Std(), DrainTimeout: drainTimeout(cfg),
		LogFlushInterval: cfg.Logs.FlushInterval.Std(), LogBatchBytes: cfg.Logs.BatchBytes, LogBufferBytes: cfg.Logs.BufferBytes,
		Logger: log, SpaceFor: spaceFor(cfg),
	})
	if err != nil {
		return err
	}

	var srv *http.Server
	if cfg.ListenAddress != "" {
		ln, err := net.Listen("tcp", cfg.ListenAddress)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.ListenAddress, err)
		}
		srv = &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
		log.Info("serving /healthz and /metrics", "address", ln.Addr().String())
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("health server stopped", "error", err.Error())
			}
		}()
	}
	err = r.Run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(sctx)
		cancel()
	}
	log.Info("stopped")
	return err
}

// drainTimeout: a configured 0 means "hand back at once", which runner.Options spells
// as a negative value.
func drainTimeout(cfg config.Runner) time.Duration {
	if d := cfg.DrainTimeout.Std(); d > 0 {
		return d
	}
	return -1
}

// spaceFor is the diego backend's per-project space policy (backend.diego.project_space_prefix).
func spaceFor(cfg config.Runner) func(projectID string, brokerInstance bool) string {
	if cfg.Backend.Type != "diego" || cfg.Backend.Diego == nil || cfg.Backend.Diego.ProjectSpacePrefix == "" {
		return nil
	}
	prefix := cfg.Backend.Diego.ProjectSpacePrefix
	return func(projectID string, brokerInstance bool) string {
		if !brokerInstance || projectID == "" {
			return ""
		}
		return prefix + projectID
	}
}

func newBackend(ctx context.Context, cfg config.Runner, log *slog.Logger) (backend.Backend, func(), error) {
	switch cfg.Backend.Type {
	case "local":
		l := cfg.Backend.Local
		b, err := local.New(local.Config{WorkRoot: l.WorkDir, MaxLogBytes: l.MaxLogBytes, DefaultMemoryMB: l.MemoryMB,
			MemoryLimiter: l.MemoryLimiter, CgroupParent: l.CgroupParent, KeepDirs: l.KeepDirs, KillGrace: l.KillGrace.Std(),
			MaxUnpackedBytes: l.MaxUnpackedBytes, MaxFiles: l.MaxFiles, Path: l.Path})
		if err != nil {
			return nil, nil, err
		}
		log.Info("local backend ready", "work_dir", l.WorkDir, "memory_limiter", b.Limiter())
		return b, func() {}, nil
	case "noop":
		return noop.New(), func() {}, nil
	case "diego":
		// The app cache is per process, in memory: the runner has no database, and a cold
		// cache costs one app lookup by name (plus one droplet check) per code revision,
		// since apps are named after their revision (diego's appName) and re-found in CF.
		b, err := diego.New(ctx, *cfg.Backend.Diego, diego.Options{Logger: log.With("component", "diego"), AppCache: diego.NewMemoryAppCache()})
		if err != nil {
			return nil, nil, err
		}
		return b, b.Close, nil
	}
	return nil, nil, fmt.Errorf("unknown backend type %q", cfg.Backend.Type)
}
