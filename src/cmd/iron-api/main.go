// iron-api serves the IronWorker v2 API and the runner protocol, and runs the schedule
// firer and the lease reaper.
//
//	iron-api --config FILE                                   serve
//	iron-api admin create-project --config FILE --name NAME  print a new project id and token as JSON
//	iron-api admin rotate-keys --config FILE                 re-seal secrets with the active key
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ironcf/ironworker-release/src/api"
	"github.com/ironcf/ironworker-release/src/broker"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/cli"
	"github.com/ironcf/ironworker-release/src/reaper"
	"github.com/ironcf/ironworker-release/src/scheduler"
	"github.com/ironcf/ironworker-release/src/secrets"
	"github.com/ironcf/ironworker-release/src/store"
)

func main() { cli.Main("iron-api", run) }

func run(args []string) error {
	if len(args) >= 2 && args[0] == "admin" {
		return admin(args[1], args[2:])
	}
	fs := flag.NewFlagSet("iron-api", flag.ContinueOnError)
	configPath := fs.String("config", "", "path to the iron-api config file (YAML or JSON)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	return serve(cfg)
}

func loadConfig(path string) (config.API, error) {
	if path == "" {
		return config.API{}, errors.New("--config is required")
	}
	return config.LoadAPI(path)
}

func openStore(ctx context.Context, cfg config.API, log *slog.Logger) (*store.Store, error) {
	labelled := map[string]string{}
	for _, k := range cfg.Encryption.Keys {
		labelled[k.Label] = k.Secret
	}
	sealer, err := secrets.FromBase64(cfg.Encryption.ActiveKey, labelled)
	if err != nil {
		return nil, fmt.Errorf("encryption keys: %w", err)
	}
	st, err := store.Open(ctx, cfg.Database.DSN(), sealer, store.Options{MaxOpenConns: cfg.Database.MaxOpenConns, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

func serve(cfg config.API) error {
	log := cli.Logger("iron-api", cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()

	waker := store.NewQueueWaker(cfg.Database.DSN(), log)
	defer waker.Close()
	st.WakeLocally(waker) // this process's long-polls wake at commit, not on the NOTIFY's return
	var osb *broker.Broker
	var osbHandler http.Handler
	if cfg.Broker.Enabled {
		osb = broker.New(st, cfg.Broker, log)
		osbHandler = osb.Handler()
	}
	_, handler := api.NewServer(api.Options{Store: st, Limits: cfg.Limits, Logger: log, Broker: osbHandler,
		Runner: api.RunnerOptions{Config: cfg.Runner, Waker: waker, Draining: ctx.Done()}})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second}
	ln, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddress, err)
	}
	log.Info("iron-api listening", "address", ln.Addr().String())

	var wg sync.WaitGroup
	if cfg.Scheduler.IsEnabled() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := scheduler.Run(ctx, st, cfg.Scheduler, log); err != nil {
				log.Error("scheduler stopped", "error", err.Error())
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := reaper.Run(ctx, st, cfg.Runner, log); err != nil {
			log.Error("lease reaper stopped", "error", err.Error())
		}
	}()
	if osb != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			osb.Run(ctx)
		}()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		stop()
		wg.Wait()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.Std().String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Std())
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("shutdown did not finish cleanly", "error", err.Error())
	}
	wg.Wait()
	log.Info("stopped")
	return nil
}

func admin(cmd string, args []string) error {
	fs := flag.NewFlagSet("iron-api admin "+cmd, flag.ContinueOnError)
	configPath := fs.String("config", "", "path to the iron-api config file")
	name := fs.String("name", "", "project name (create-project)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := context.Background()
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	switch cmd {
	case "create-project":
		if *name == "" {
			return errors.New("create-project: --name is required")
		}
		p, token, err := st.CreateProject(ctx, *name)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]string{"project_id": p.ID, "name": p.Name, "token": token})
	case "rotate-keys":
		n, err := st.RotateKeys(ctx)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"resealed": n, "active_key": cfg.Encryption.ActiveKey})
	default:
		return fmt.Errorf("unknown admin command %q (create-project, rotate-keys)", cmd)
	}
}
