// soak runs a real iron-api process under many concurrent IronWorker clients for a long
// time and records its resident memory (issue 9, item 5: bounded memory of the API under
// a 10-minute soak with 100 concurrent clients). Each client loops over a realistic mix:
// queue a batch (with an Idempotency-Key, sometimes repeated), queue one task, read a
// task, list tasks, read a log, set progress, list codes. RSS (VmRSS of the API process)
// is sampled every -sample and written as CSV; the run fails when the API dies, when
// requests fail (5xx or transport errors above -max-error-rate), or when the RSS at the
// end exceeds the RSS after the warm-up (first quarter) by more than -max-growth.
// Run it through scripts/soak, which starts PostgreSQL and builds iron-api.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	apiBin       = flag.String("api-bin", "", "path of the iron-api binary (required)")
	databaseURL  = flag.String("database-url", os.Getenv("IRON_TEST_DATABASE_URL"), "PostgreSQL URL of an empty database")
	clients      = flag.Int("clients", 100, "concurrent clients")
	duration     = flag.Duration("duration", 10*time.Minute, "how long the clients run")
	sample       = flag.Duration("sample", 5*time.Second, "RSS sampling interval")
	out          = flag.String("out", "soak-rss.csv", "CSV of the RSS samples (seconds,rss_bytes,requests)")
	maxGrowth    = flag.Int64("max-growth", 128<<20, "most the RSS may grow (bytes) from the end of the warm-up to the end")
	maxErrorRate = flag.Float64("max-error-rate", 0.001, "largest share of requests that may fail (5xx or transport errors)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type stats struct {
	requests, failures atomic.Int64
	mu                 sync.Mutex
	byStatus           map[string]int64
}

func (s *stats) record(what string) {
	s.mu.Lock()
	s.byStatus[what]++
	s.mu.Unlock()
}

func run() error {
	if *apiBin == "" || *databaseURL == "" {
		return errors.New("-api-bin and -database-url (or IRON_TEST_DATABASE_URL) are required")
	}
	dir, err := os.MkdirTemp("", "iron-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "iron-api.yml")
	cfg := fmt.Sprintf(`listen_address: 127.0.0.1:%d
database:
  url: %s
  max_open_conns: 40
encryption:
  active_key: k1
  keys:
    - label: k1
      secret: %s
log_level: warn
shutdown_timeout: 5s
`, port, *databaseURL, base64.StdEncoding.EncodeToString(key))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}

	api := exec.Command(*apiBin, "--config", cfgPath)
	api.Stdout, api.Stderr = os.Stderr, os.Stderr
	if err := api.Start(); err != nil {
		return fmt.Errorf("start iron-api: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- api.Wait() }()
	defer func() {
		_ = api.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = api.Process.Kill()
		}
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitHealthy(base, exited); err != nil {
		return err
	}
	raw, err := exec.Command(*apiBin, "admin", "create-project", "--config", cfgPath, "--name", "soak").Output()
	if err != nil {
		return fmt.Errorf("create project: %w", err)
	}
	var project struct {
		ProjectID string `json:"project_id"`
		Token     string `json:"token"`
	}
	if err := json.Unmarshal(raw, &project); err != nil {
		return fmt.Errorf("create project printed %s: %w", raw, err)
	}
	httpc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *clients}}
	c := &soakClient{http: httpc, base: base + "/2/projects/" + project.ProjectID, token: project.Token}
	if st, body, err := c.do("POST", "/codes", `{"name":"soak","image":"iron/soak"}`, ""); err != nil || st != 200 {
		return fmt.Errorf("register code: %d %s %v", st, body, err)
	}

	st := &stats{byStatus: map[string]int64{}}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c.loop(ctx, i, st)
		}(i)
	}

	csv, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer csv.Close()
	w := bufio.NewWriter(csv)
	fmt.Fprintln(w, "seconds,rss_bytes,requests")
	start := time.Now()
	var samples []int64
	tick := time.NewTicker(*sample)
	defer tick.Stop()
	record := func() error {
		rss, err := rssOf(api.Process.Pid)
		if err != nil {
			return err
		}
		samples = append(samples, rss)
		fmt.Fprintf(w, "%.0f,%d,%d\n", time.Since(start).Seconds(), rss, st.requests.Load())
		fmt.Fprintf(os.Stderr, "soak: %5.0fs rss %6.1f MiB, %d requests, %d failed\n",
			time.Since(start).Seconds(), float64(rss)/(1<<20), st.requests.Load(), st.failures.Load())
		return w.Flush()
	}
	if err := record(); err != nil {
		return err
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-exited:
			return fmt.Errorf("iron-api exited during the soak: %v", err)
		case <-tick.C:
			if err := record(); err != nil {
				return err
			}
		}
	}
	wg.Wait()
	if err := record(); err != nil {
		return err
	}

	n, failed := st.requests.Load(), st.failures.Load()
	var kinds []string
	for k, v := range st.byStatus {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(kinds)
	warm := samples[len(samples)/4]
	last := samples[len(samples)-1]
	peak := int64(0)
	for _, s := range samples {
		peak = max(peak, s)
	}
	fmt.Printf("soak: %d clients, %s, %d requests (%s), %d failed; RSS after warm-up %.1f MiB, peak %.1f MiB, end %.1f MiB (samples in %s)\n",
		*clients, *duration, n, strings.Join(kinds, " "), failed, mib(warm), mib(peak), mib(last), *out)
	if n == 0 || float64(failed)/float64(n) > *maxErrorRate {
		return fmt.Errorf("%d of %d requests failed (more than %.2f%%)", failed, n, *maxErrorRate*100)
	}
	if last-warm > *maxGrowth {
		return fmt.Errorf("RSS grew by %.1f MiB after the warm-up (limit %.1f MiB)", mib(last-warm), mib(*maxGrowth))
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

type soakClient struct {
	http  *http.Client
	base  string
	token string
}

func (c *soakClient) do(method, path, body, idemKey string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "OAuth "+c.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, raw, err
}

// loop is one client: the request mix until ctx ends.
func (c *soakClient) loop(ctx context.Context, id int, st *stats) {
	var lastTask string
	for n := 0; ctx.Err() == nil; n++ {
		var status int
		var body []byte
		var err error
		switch n % 8 {
		case 0, 4:
			key := fmt.Sprintf("soak-%d-%d", id, n/8)
			var b strings.Builder
			b.WriteString(`{"tasks":[`)
			for i := 0; i < 20; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"code_name":"soak","payload":"%s-%d-%s"}`, key, i, strings.Repeat("p", 200))
			}
			b.WriteString(`]}`)
			status, body, err = c.do("POST", "/tasks", b.String(), key) // n%8==4 repeats the key: a replay
		case 1:
			status, body, err = c.do("POST", "/tasks", `{"tasks":[{"code_name":"soak","payload":"single"}]}`, "")
			var out struct {
				Tasks []struct {
					ID string `json:"id"`
				} `json:"tasks"`
			}
			if err == nil && status == 200 && json.Unmarshal(body, &out) == nil && len(out.Tasks) == 1 {
				lastTask = out.Tasks[0].ID
			}
		case 2:
			if lastTask != "" {
				status, body, err = c.do("GET", "/tasks/"+lastTask, "", "")
			}
		case 3:
			status, body, err = c.do("GET", "/tasks?per_page=30", "", "")
		case 5:
			if lastTask != "" {
				status, body, err = c.do("GET", "/tasks/"+lastTask+"/log", "", "")
			}
		case 6:
			if lastTask != "" {
				status, body, err = c.do("POST", "/tasks/"+lastTask+"/progress", `{"percent":50,"msg":"soak"}`, "")
			}
		case 7:
			status, body, err = c.do("GET", "/codes", "", "")
		}
		if status == 0 && err == nil {
			continue // nothing to read yet
		}
		if ctx.Err() != nil && err != nil {
			return // the run ended under this request
		}
		st.requests.Add(1)
		switch {
		case err != nil:
			st.failures.Add(1)
			st.record("transport-error")
		case status >= 500:
			st.failures.Add(1)
			st.record(strconv.Itoa(status))
			fmt.Fprintf(os.Stderr, "soak: %d %s\n", status, body)
		default:
			st.record(strconv.Itoa(status))
		}
	}
}

func waitHealthy(base string, exited <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("iron-api exited during startup: %v", err)
		default:
		}
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("iron-api did not become healthy within 60s")
}

// rssOf reads VmRSS of a process (Linux).
func rssOf(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
