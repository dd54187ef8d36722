// Package smoketest is the smoke-tests errand: against a running deployment it provisions
// a service instance through iron-api's Open Service Broker, binds it, uploads a tiny zip
// code with the binding's token, queues a task, waits for it to complete, reads its log,
// and cleans up (code, binding, instance), whatever happened before. Every failure names
// the step that failed.
package smoketest

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ironcf/ironworker-release/src/config"
)

// brokerAPIVersion is what Cloud Controller sends.
const brokerAPIVersion = "2.15"

// Run runs the smoke test, reporting progress to out. It returns nil when every step
// passed and cleanup succeeded.
func Run(ctx context.Context, cfg config.SmokeTests, out io.Writer) (err error) {
	t := &test{cfg: cfg, out: out, http: &http.Client{Timeout: cfg.RequestTimeout.Std()}}
	if cfg.SkipSSLValidation {
		t.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // operator's choice
	}
	nonce := randomHex(8)
	instanceID, bindingID := uuid(), uuid()

	t.step("reading the broker catalog at %s", cfg.Broker.URL)
	serviceID, planID, err := t.catalog(ctx)
	if err != nil {
		return fmt.Errorf("broker catalog: %w", err)
	}

	t.step("provisioning service instance %s (plan %s)", instanceID, planID)
	if err := t.provision(ctx, instanceID, serviceID, planID, nonce); err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	defer func() {
		t.step("deprovisioning service instance %s", instanceID)
		if derr := t.deprovision(context.WithoutCancel(ctx), instanceID, serviceID, planID); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: deprovision: %w", derr))
		}
	}()

	t.step("binding %s", bindingID)
	creds, err := t.bind(ctx, instanceID, bindingID, serviceID, planID)
	if err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	defer func() {
		t.step("unbinding %s", bindingID)
		if uerr := t.unbind(context.WithoutCancel(ctx), instanceID, bindingID, serviceID, planID); uerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: unbind: %w", uerr))
		}
	}()

	base := strings.TrimRight(creds.URL, "/")
	if cfg.APIURL != "" {
		base = strings.TrimRight(cfg.APIURL, "/") + "/2/projects/" + url.PathEscape(creds.ProjectID)
	}
	if base == "" {
		return errors.New("bind: the binding's credentials have no url (and api_url is not set)")
	}
	t.api, t.token = base, creds.Token

	codeName := cfg.CodeName + "-" + nonce
	t.step("uploading code %s to %s", codeName, base)
	codeID, err := t.uploadCode(ctx, codeName)
	if err != nil {
		return fmt.Errorf("upload code: %w", err)
	}
	defer func() {
		if derr := t.do(context.WithoutCancel(ctx), http.MethodDelete, t.api+"/codes/"+url.PathEscape(codeID), "", nil, nil, http.StatusOK); derr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: delete code: %w", derr))
		}
	}()

	t.step("queueing a task of %s", codeName)
	taskID, err := t.queue(ctx, codeName, nonce)
	if err != nil {
		return fmt.Errorf("queue task: %w", err)
	}

	t.step("waiting up to %s for task %s to complete", cfg.TaskTimeout.Std(), taskID)
	if err := t.wait(ctx, taskID); err != nil {
		return fmt.Errorf("task %s: %w", taskID, err)
	}

	t.step("reading the log of task %s", taskID)
	var log []byte
	if err := t.do(ctx, http.MethodGet, t.api+"/tasks/"+url.PathEscape(taskID)+"/log", "", nil, &log, http.StatusOK); err != nil {
		return fmt.Errorf("task log: %w", err)
	}
	want := "ironworker smoke test " + nonce
	if !strings.Contains(string(log), want) {
		return fmt.Errorf("task log: want a line %q, got:\n%s", want, log)
	}
	t.step("task log has %q", want)
	return nil
}

type test struct {
	cfg   config.SmokeTests
	out   io.Writer
	http  *http.Client
	api   string // project base URL
	token string
}

func (t *test) step(format string, args ...any) {
	fmt.Fprintf(t.out, "%s %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

type bindingCredentials struct {
	ProjectID string `json:"project_id"`
	Token     string `json:"token"`
	URL       string `json:"url"`
}

func (t *test) broker(path string) string {
	return strings.TrimRight(t.cfg.Broker.URL, "/") + "/v2" + path
}

// do sends a request and checks the status; result, when not nil, gets the JSON body
// (or the raw body for a *[]byte).
func (t *test) do(ctx context.Context, method, u, contentType string, body io.Reader, result any, want ...int) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.RequestTimeout.Std())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if strings.Contains(u, "/v2/") && strings.HasPrefix(u, strings.TrimRight(t.cfg.Broker.URL, "/")) {
		req.SetBasicAuth(t.cfg.Broker.Username, t.cfg.Broker.Password)
		req.Header.Set("X-Broker-API-Version", brokerAPIVersion)
	} else if t.token != "" {
		req.Header.Set("Authorization", "OAuth "+t.token)
	}
	resp, err := t.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, redact(u), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the response: %w", method, redact(u), err)
	}
	ok := false
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized {
			hint = " (check the credentials)"
		}
		return fmt.Errorf("%s %s: status %d%s, want %v: %s", method, redact(u), resp.StatusCode, hint, want, truncate(raw, 500))
	}
	switch r := result.(type) {
	case nil:
	case *[]byte:
		*r = raw
	default:
		if err := json.Unmarshal(raw, result); err != nil {
			return fmt.Errorf("%s %s: unexpected response %s: %w", method, redact(u), truncate(raw, 200), err)
		}
	}
	return nil
}

func (t *test) catalog(ctx context.Context) (serviceID, planID string, err error) {
	var cat struct {
		Services []struct {
			ID    string `json:"id"`
			Name  string `json:"name"`
			Plans []struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"plans"`
		} `json:"services"`
	}
	if err := t.do(ctx, http.MethodGet, t.broker("/catalog"), "", nil, &cat, http.StatusOK); err != nil {
		return "", "", err
	}
	for _, s := range cat.Services {
		if t.cfg.ServiceName != "" && s.Name != t.cfg.ServiceName {
			continue
		}
		for _, p := range s.Plans {
			if t.cfg.PlanName == "" || p.Name == t.cfg.PlanName {
				return s.ID, p.ID, nil
			}
		}
		return "", "", fmt.Errorf("service %q has no plan %q", s.Name, t.cfg.PlanName)
	}
	if t.cfg.ServiceName != "" {
		return "", "", fmt.Errorf("the catalog has no service %q", t.cfg.ServiceName)
	}
	return "", "", errors.New("the catalog has no services (is iron-api's broker.enabled true with plans?)")
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

func (t *test) provision(ctx context.Context, id, serviceID, planID, nonce string) error {
	body := map[string]any{
		"service_id": serviceID, "plan_id": planID,
		"organization_guid": t.cfg.OrganizationGUID, "space_guid": t.cfg.SpaceGUID,
		"context": map[string]any{"platform": "cloudfoundry", "organization_guid": t.cfg.OrganizationGUID,
			"space_guid": t.cfg.SpaceGUID, "instance_name": "ironworker-smoke-test-" + nonce},
	}
	return t.do(ctx, http.MethodPut, t.broker("/service_instances/"+id+"?accepts_incomplete=true"), "application/json", jsonBody(body), nil, http.StatusCreated)
}

func (t *test) deprovision(ctx context.Context, id, serviceID, planID string) error {
	q := url.Values{"service_id": {serviceID}, "plan_id": {planID}, "accepts_incomplete": {"true"}}
	return t.do(ctx, http.MethodDelete, t.broker("/service_instances/"+id+"?"+q.Encode()), "", nil, nil, http.StatusOK)
}

func (t *test) bind(ctx context.Context, instanceID, bindingID, serviceID, planID string) (bindingCredentials, error) {
	var resp struct {
		Credentials bindingCredentials `json:"credentials"`
	}
	body := map[string]any{"service_id": serviceID, "plan_id": planID,
		"bind_resource": map[string]any{"app_guid": "00000000-0000-4000-8000-5a0be7e57002"}}
	err := t.do(ctx, http.MethodPut, t.broker("/service_instances/"+instanceID+"/service_bindings/"+bindingID), "application/json",
		jsonBody(body), &resp, http.StatusCreated)
	if err == nil && (resp.Credentials.Token == "" || resp.Credentials.ProjectID == "") {
		err = errors.New("the binding's credentials lack project_id or token")
	}
	return resp.Credentials, err
}

func (t *test) unbind(ctx context.Context, instanceID, bindingID, serviceID, planID string) error {
	q := url.Values{"service_id": {serviceID}, "plan_id": {planID}}
	saved := t.token
	t.token = ""
	defer func() { t.token = saved }()
	return t.do(ctx, http.MethodDelete, t.broker("/service_instances/"+instanceID+"/service_bindings/"+bindingID+"?"+q.Encode()), "", nil, nil, http.StatusOK)
}

// worker is the smoke test's code: it prints a line with the payload's nonce.
const worker = `#!/bin/sh
set -e
echo "ironworker smoke test $(cat "$PAYLOAD_FILE")"
`

func (t *test) uploadCode(ctx context.Context, name string) (string, error) {
	var zipped bytes.Buffer
	zw := zip.NewWriter(&zipped)
	f, err := zw.CreateHeader(&zip.FileHeader{Name: "smoke.sh", Method: zip.Deflate})
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(f, worker); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	data := map[string]any{"name": name, "command": "sh smoke.sh", "file_name": "smoke.sh"}
	if t.cfg.Stack != "" {
		data["stack"] = t.cfg.Stack
	}
	raw, _ := json.Marshal(data)
	if err := mw.WriteField("data", string(raw)); err != nil {
		return "", err
	}
	part, err := mw.CreateFormFile("file", "smoke.zip")
	if err != nil {
		return "", err
	}
	if _, err := part.Write(zipped.Bytes()); err != nil {
		return "", err
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	var resp struct {
		ID string `json:"id"`
	}
	if err := t.do(ctx, http.MethodPost, t.api+"/codes", mw.FormDataContentType(), &body, &resp, http.StatusOK, http.StatusCreated); err != nil {
		return "", err
	}
	if resp.ID == "" {
		return "", errors.New("the upload answered no code id")
	}
	return resp.ID, nil
}

func (t *test) queue(ctx context.Context, codeName, nonce string) (string, error) {
	var resp struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	body := map[string]any{"tasks": []any{map[string]any{"code_name": codeName, "payload": nonce, "timeout": 300}}}
	if err := t.do(ctx, http.MethodPost, t.api+"/tasks", "application/json", jsonBody(body), &resp, http.StatusOK, http.StatusCreated); err != nil {
		return "", err
	}
	if len(resp.Tasks) != 1 || resp.Tasks[0].ID == "" {
		return "", fmt.Errorf("want one task id, got %d", len(resp.Tasks))
	}
	return resp.Tasks[0].ID, nil
}

func (t *test) wait(ctx context.Context, taskID string) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.TaskTimeout.Std())
	defer cancel()
	last := ""
	for {
		var task struct {
			Status string `json:"status"`
			Msg    string `json:"msg"`
		}
		err := t.do(ctx, http.MethodGet, t.api+"/tasks/"+url.PathEscape(taskID), "", nil, &task, http.StatusOK)
		switch {
		case err != nil && ctx.Err() == nil:
			return err
		case err == nil && task.Status != last:
			t.step("task %s is %s", taskID, task.Status)
			last = task.Status
		}
		switch task.Status {
		case "complete":
			return nil
		case "error", "killed", "timeout", "cancelled":
			msg := ""
			if task.Msg != "" {
				msg = ": " + task.Msg
			}
			return fmt.Errorf("ended %s%s (see its log: GET %s/tasks/%s/log)", task.Status, msg, redact(t.api), taskID)
		}
		select {
		case <-ctx.Done():
			if last == "" || last == "queued" {
				return fmt.Errorf("still %q after %s: no runner leased it (are iron-runner instances running and reaching the API?)", last, t.cfg.TaskTimeout.Std())
			}
			return fmt.Errorf("still %q after %s", last, t.cfg.TaskTimeout.Std())
		case <-time.After(t.cfg.PollInterval.Std()):
		}
	}
}

func redact(u string) string {
	if p, err := url.Parse(u); err == nil {
		p.User = nil
		return p.Redacted()
	}
	return u
}

func truncate(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
