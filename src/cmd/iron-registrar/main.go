// iron-registrar advertises IronWorker in Cloud Foundry: the service broker and its plan
// visibility in Cloud Controller (`cf marketplace`), and the API's route(s) in gorouter
// over NATS (see src/registrar).
//
//	iron-registrar --config FILE                       # long-running: both loops
//	iron-registrar deregister --config FILE [--purge]  # one-shot, for a BOSH errand
//
// SIGTERM or SIGINT publishes router.unregister before exit. deregister unregisters the
// routes, removes plan visibility and deletes the broker (waiting for the CC job); it
// refuses while service instances exist unless --purge.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/cli"
	"github.com/ironcf/ironworker-release/src/registrar"
)

func main() { cli.Main("iron-registrar", run) }

func run(args []string) error {
	deregister := len(args) > 0 && args[0] == "deregister"
	if deregister {
		args = args[1:]
	}
	fs := flag.NewFlagSet("iron-registrar", flag.ContinueOnError)
	configPath := fs.String("config", "", "path to the iron-registrar config file (YAML or JSON)")
	purge := fs.Bool("purge", false, "deregister: purge the service offerings (Cloud Controller forgets their service instances) instead of refusing while instances exist")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v (usage: iron-registrar [deregister] --config FILE [--purge])", fs.Args())
	}
	if *configPath == "" {
		return errors.New("--config is required")
	}
	if *purge && !deregister {
		return errors.New("--purge is only for deregister")
	}
	cfg, err := config.LoadRegistrar(*configPath)
	if err != nil {
		return err
	}
	log := cli.Logger("iron-registrar", cfg.LogLevel)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	r := registrar.New(cfg, registrar.Options{Logger: log})

	if deregister {
		log.Info("deregistering", "purge", *purge)
		if err := r.Deregister(ctx, *purge); err != nil {
			return err
		}
		log.Info("deregistered")
		return nil
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
	log.Info("started", "marketplace", cfg.Marketplace.IsEnabled(), "routes", cfg.Routes.IsEnabled())
	err = r.Run(ctx)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	log.Info("stopped")
	return err
}
