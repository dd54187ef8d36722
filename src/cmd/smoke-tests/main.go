// smoke-tests is the BOSH errand that checks a running IronWorker deployment end to end:
// broker provision and bind, code upload, a task queued, run to `complete` and its log
// read, then unbind and deprovision (see src/smoketest).
//
//	smoke-tests --config FILE
//
// It exits 0 when everything passed, 1 with a message naming the failed step otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/smoketest"
)

func main() {
	if err := run(os.Args[1:]); errors.Is(err, flag.ErrHelp) {
		return
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "smoke-tests: FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("smoke-tests: PASSED")
}

func run(args []string) error {
	fs := flag.NewFlagSet("smoke-tests", flag.ContinueOnError)
	configPath := fs.String("config", "", "path to the smoke-tests config file (YAML or JSON)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v (usage: smoke-tests --config FILE)", fs.Args())
	}
	if *configPath == "" {
		return errors.New("--config is required")
	}
	cfg, err := config.LoadSmokeTests(*configPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return smoketest.Run(ctx, cfg, os.Stdout)
}
