package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ironcf/ironworker-release/src/backend/diego"
	"github.com/ironcf/ironworker-release/src/client"
	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/internal/testsupport/fakecf"
	"github.com/ironcf/ironworker-release/src/runner"
)

// runDiego measures the Cloud Controller requests per IronWorker task of the diego
// backend: iron-api + one runner(diego) against the fake Cloud Foundry (whose tasks run
// as local processes), n tasks of one zip code, then n more of the same revision (warm
// app cache). Targets: one create per task, state polling amortised over the followed
// tasks (one list call per poll), no per-task app creation after the first task of a
// code revision.
func runDiego(n, slots int, poll time.Duration) error {
	a, err := testsupport.StartAPI(config.Limits{})
	if err != nil {
		return err
	}
	defer a.Stop()
	db, err := a.DB.SQL()
	if err != nil {
		return err
	}
	defer db.Close()
	fake := fakecf.New(fakecf.Options{})
	defer fake.Close()
	fake.CreateOrgAndSpace("ironworker", "tasks")
	if err := uploadZipCode(a, "cfworker", "#!/bin/sh\nhead -c 100 \"$PAYLOAD_FILE\"; echo; sleep 1\n"); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	be, err := diego.New(context.Background(), config.Diego{
		APIURL: fake.URL, ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), Org: "ironworker", Space: "tasks",
		Buildpacks: []string{"binary_buildpack"}, PollInterval: config.Duration(poll),
	}, diego.Options{Logger: log, LogGrace: 200 * time.Millisecond})
	if err != nil {
		return err
	}
	defer be.Close()
	cl, err := client.NewRunnerClient(a.Server.URL, a.RunnerName, a.RunnerSecret, client.RunnerOptions{})
	if err != nil {
		return err
	}
	r, err := runner.New(runner.Options{Client: cl, Backend: be, RunnerID: "bench-diego", Slots: slots, LeaseWait: 5 * time.Second, Logger: log})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	fmt.Printf("diego: iron-api + 1 runner(diego, %d slots, poll %s) + fake Cloud Foundry; tasks of one zip code that run ~1s\n", slots, poll)
	payload := strings.Repeat("p", 60<<10) // fetched by the container, not inlined
	for round, label := range []string{"cold (first task stages the app)", "warm (same code revision)"} {
		fake.ResetRequests()
		start := time.Now()
		for left := n; left > 0; {
			k := min(100, left)
			tasks := make([]map[string]any, k)
			for i := range tasks {
				tasks[i] = map[string]any{"code_name": "cfworker", "payload": payload}
			}
			resp := a.Do(http.MethodPost, a.Project()+"/tasks", map[string]any{"tasks": tasks})
			if resp.Status != http.StatusOK {
				return fmt.Errorf("queue: HTTP %d: %s", resp.Status, resp.Body)
			}
			left -= k
		}
		if err := waitComplete(db, (round+1)*n, 10*time.Minute); err != nil {
			return err
		}
		took := time.Since(start)
		counts := map[string]int{}
		total := 0
		for _, req := range fake.Requests() {
			c := ccCategory(req)
			counts[c]++
			if !strings.HasPrefix(c, "(") {
				total++
			}
		}
		fmt.Printf("  %s: %d tasks in %s; Cloud Controller requests: %d = %.2f per task\n", label, n, took.Round(time.Millisecond), total, float64(total)/float64(n))
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Printf("    %-44s %5d  (%.2f per task)\n", k, counts[k], float64(counts[k])/float64(n))
		}
	}
	return nil
}

// ccCategory names what a request to the fake foundation was for; names in parentheses
// are not Cloud Controller requests.
func ccCategory(r fakecf.Request) string {
	p := r.Path
	switch {
	case strings.HasPrefix(p, "/oauth/"):
		return "(UAA token)"
	case strings.HasPrefix(p, "/api/v1/"):
		return "(Log Cache read)"
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/v3/apps/") && strings.HasSuffix(p, "/tasks"):
		return "task create"
	case r.Method == http.MethodGet && p == "/v3/tasks" && strings.Contains(r.Query, "names="):
		return "task lookup by name (adoption)"
	case r.Method == http.MethodGet && p == "/v3/tasks":
		return "task state poll (one list for all tasks)"
	case strings.HasPrefix(p, "/v3/tasks/") && strings.HasSuffix(p, "/cancel"):
		return "task cancel"
	case strings.HasPrefix(p, "/v3/tasks/"):
		return "task get"
	case r.Method == http.MethodPost && p == "/v3/apps":
		return "app create"
	case r.Method == http.MethodGet && p == "/v3/apps":
		return "app lookup by name"
	case strings.HasPrefix(p, "/v3/packages"), strings.HasPrefix(p, "/v3/builds"), strings.HasPrefix(p, "/v3/droplets"),
		strings.Contains(p, "droplet"), strings.HasPrefix(p, "/v3/feature_flags"):
		return "staging (package, build, droplet, flags)"
	}
	return "other (" + r.Method + " " + p + ")"
}

func uploadZipCode(a *testsupport.API, name, script string) error {
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, err := zw.Create("worker.sh")
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(script)); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	raw, _ := json.Marshal(map[string]any{"name": name, "command": "sh worker.sh"})
	mw.WriteField("data", string(raw))
	fw, err := mw.CreateFormFile("file", "worker.zip")
	if err != nil {
		return err
	}
	fw.Write(zbuf.Bytes())
	mw.Close()
	resp := a.DoAs(a.Token, http.MethodPost, a.Project()+"/codes", body.Bytes(), http.Header{"Content-Type": {mw.FormDataContentType()}})
	if resp.Status != http.StatusOK {
		return fmt.Errorf("upload code: HTTP %d: %s", resp.Status, resp.Body)
	}
	return nil
}
