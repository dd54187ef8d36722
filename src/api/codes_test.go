package api_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"mime/multipart"
	"net/http"
	"sort"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/config"
	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

// ---- helpers (prefixed cp… to stay clear of other specs in this package) ----

const cpTimeRE = `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`

// cpClient talks to one project of a harness with that project's token.
type cpClient struct {
	api   *testsupport.API
	pid   string
	token string
}

func cpNewClient(api *testsupport.API) cpClient {
	pid, token, err := api.NewProject("codes spec")
	Expect(err).NotTo(HaveOccurred())
	return cpClient{api: api, pid: pid, token: token}
}

func (cc cpClient) path(p string) string { return "/2/projects/" + cc.pid + p }

func (cc cpClient) do(method, p string, body any) testsupport.Response {
	return cc.api.DoAs(cc.token, method, cc.path(p), body, nil)
}

// cpPart is one multipart part; a filename makes it a file part.
type cpPart struct {
	name, filename, contentType string
	body                        []byte
}

func cpData(v any) cpPart {
	raw, err := json.Marshal(v)
	Expect(err).NotTo(HaveOccurred())
	return cpPart{name: "data", body: raw}
}

func cpFile(zipBytes []byte) cpPart {
	return cpPart{name: "file", filename: "worker.zip", contentType: "application/octet-stream", body: zipBytes}
}

// upload streams a multipart body from a pipe, as iron_go3 does: the request has no
// Content-Length and goes out chunked.
func (cc cpClient) upload(parts ...cpPart) testsupport.Response {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		defer GinkgoRecover()
		var err error
		for _, p := range parts {
			h := make(map[string][]string)
			disp := fmt.Sprintf(`form-data; name=%q`, p.name)
			if p.filename != "" {
				disp += fmt.Sprintf(`; filename=%q`, p.filename)
			}
			h["Content-Disposition"] = []string{disp}
			if p.contentType != "" {
				h["Content-Type"] = []string{p.contentType}
			}
			var w io.Writer
			if w, err = mw.CreatePart(h); err != nil {
				break
			}
			if _, err = w.Write(p.body); err != nil {
				break
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequest("POST", cc.api.Server.URL+cc.path("/codes"), pr)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "OAuth "+cc.token)
	Expect(req.ContentLength).To(BeZero(), "a pipe body has no known length: the request goes out chunked")
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return testsupport.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// uploadOK uploads and returns the code id.
func (cc cpClient) uploadOK(parts ...cpPart) string {
	r := cc.upload(parts...)
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusOK), string(r.Body))
	return r.JSON()["id"].(string)
}

func (cc cpClient) get(codeID string) map[string]any {
	r := cc.do("GET", "/codes/"+codeID, nil)
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusOK), string(r.Body))
	return r.JSON()
}

// cpZip builds a zip with the given files (stored, not deflated, so sizes are exact).
func cpZip(files map[string][]byte) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Store})
		Expect(err).NotTo(HaveOccurred())
		_, err = w.Write(files[n])
		Expect(err).NotTo(HaveOccurred())
	}
	Expect(zw.Close()).To(Succeed())
	return buf.Bytes()
}

func cpRunnerZip(script string) []byte {
	return cpZip(map[string][]byte{"__runner__.sh": []byte(script)})
}

func cpRandom(n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(int64(n))).Read(b)
	return b
}

func cpKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// expectInt asserts a JSON integer (json.Number without fraction or exponent).
func expectInt(v any, want ...int64) {
	n, ok := v.(json.Number)
	ExpectWithOffset(1, ok).To(BeTrue(), "%#v is not a JSON number", v)
	ExpectWithOffset(1, string(n)).To(MatchRegexp(`^-?\d+$`), "not an integer")
	if len(want) > 0 {
		i, err := n.Int64()
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		ExpectWithOffset(1, i).To(Equal(want[0]))
	}
}

func cpQueryInt(api *testsupport.API, query string, args ...any) int {
	db, err := api.DB.SQL()
	Expect(err).NotTo(HaveOccurred())
	defer db.Close()
	var n int
	Expect(db.QueryRow(query, args...).Scan(&n)).To(Succeed())
	return n
}

func cpExec(api *testsupport.API, query string, args ...any) {
	db, err := api.DB.SQL()
	Expect(err).NotTo(HaveOccurred())
	defer db.Close()
	_, err = db.Exec(query, args...)
	Expect(err).NotTo(HaveOccurred())
}

func cpQueue(api *testsupport.API, pid, codeName string, n int) []string {
	batch := make([]store.NewTask, n)
	for i := range batch {
		batch[i] = store.NewTask{CodeName: codeName, Payload: "{}", Timeout: 60}
	}
	ids, err := api.Store.QueueTasks(context.Background(), pid, batch)
	Expect(err).NotTo(HaveOccurred())
	return ids
}

func cpTaskStatus(api *testsupport.API, taskID string) (string, bool) {
	db, err := api.DB.SQL()
	Expect(err).NotTo(HaveOccurred())
	defer db.Close()
	var status string
	var ended bool
	Expect(db.QueryRow(`SELECT status, end_time IS NOT NULL FROM tasks WHERE id = $1`, taskID).Scan(&status, &ended)).To(Succeed())
	return status, ended
}

// ---- specs ----

var _ = Describe("code packages: /2/projects/:project_id/codes", func() {
	var cc cpClient
	BeforeEach(func() { cc = cpNewClient(iron) })

	Describe("POST /codes", func() {
		It("accepts a streamed multipart upload without Content-Length and answers id and msg", func() {
			r := cc.upload(cpData(map[string]any{"name": "hello", "runtime": "sh", "file_name": "__runner__.sh"}),
				cpFile(cpRunnerZip("echo hi")))
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			body := r.JSON()
			Expect(cpKeys(body)).To(ConsistOf("id", "msg"))
			Expect(body["msg"]).To(Equal("Upload successful."))
			Expect(body["id"]).To(MatchRegexp(`^[0-9a-f]{24}$`))
		})

		It("makes revision 2 of the same code id when the same name is uploaded again", func() {
			id1 := cc.uploadOK(cpData(map[string]any{"name": "twice"}), cpFile(cpRunnerZip("v1")))
			first := cc.get(id1)
			id2 := cc.uploadOK(cpData(map[string]any{"name": "twice"}), cpFile(cpRunnerZip("v2")))
			Expect(id2).To(Equal(id1))
			second := cc.get(id1)
			expectInt(second["rev"], 2)
			Expect(second["latest_history_id"]).NotTo(Equal(first["latest_history_id"]))
			Expect(second["latest_checksum"]).NotTo(Equal(first["latest_checksum"]))
		})

		It("accepts the file part before the data part", func() {
			zipBytes := cpRunnerZip("file first")
			id := cc.uploadOK(cpFile(zipBytes), cpData(map[string]any{"name": "file-first"}))
			sum := md5.Sum(zipBytes)
			Expect(cc.get(id)["latest_checksum"]).To(Equal(hex.EncodeToString(sum[:])))
		})

		It("registers a docker image without a file (multipart and plain JSON)", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "acme/img", "image": "acme/img:1.0", "command": "run.sh"}))
			code := cc.get(id)
			Expect(code).To(HaveKeyWithValue("image", "acme/img:1.0"))
			Expect(code).To(HaveKeyWithValue("command", "run.sh"))
			Expect(code).NotTo(HaveKey("latest_checksum"))
			Expect(code).NotTo(HaveKey("code_size"))

			r := cc.do("POST", "/codes", map[string]any{"name": "json/img", "image": "acme/other"})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			Expect(r.JSON()).To(HaveKeyWithValue("msg", "Upload successful."))
		})

		It("reads ironcli's sentinels: max_concurrency -1 is unlimited, default_priority -1000 unset, nulls ok", func() {
			id := cc.uploadOK(cpData(map[string]any{
				"name": "user/img", "runtime": "", "file_name": "", "config": "", "max_concurrency": -1,
				"retries": 0, "retries_delay": 0, "stack": "", "image": "user/img:latest", "command": "",
				"env_vars": nil, "default_priority": -1000, "host": "", "content_type": "x",
			}))
			code := cc.get(id)
			Expect(code).NotTo(HaveKey("max_concurrency"))
			Expect(code).NotTo(HaveKey("default_priority"))
			Expect(code).NotTo(HaveKey("config"))
			Expect(code).NotTo(HaveKey("env_vars"))
			Expect(code).To(HaveKeyWithValue("paused", false))
		})

		It("accepts numbers sent as floats or strings", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "floats", "image": "x", "max_concurrency": 3.0,
				"retries": "2", "retries_delay": 5.0, "default_priority": 1}))
			code := cc.get(id)
			expectInt(code["max_concurrency"], 3)
			expectInt(code["retries"], 2)
			expectInt(code["retries_delay"], 5)
			expectInt(code["default_priority"], 1)
		})

		It("accepts a 10 MB archive and serves the same bytes back", func() {
			zipBytes := cpZip(map[string][]byte{"__runner__.sh": []byte("echo big"), "blob.bin": cpRandom(10 << 20)})
			Expect(len(zipBytes)).To(BeNumerically(">", 10<<20))
			id := cc.uploadOK(cpData(map[string]any{"name": "big"}), cpFile(zipBytes))
			code := cc.get(id)
			expectInt(code["code_size"], int64(len(zipBytes)))

			r := cc.do("GET", "/codes/"+id+"/download", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.Header.Get("Content-Type")).To(Equal("application/zip"))
			Expect(r.Header.Get("Content-Length")).To(Equal(fmt.Sprint(len(zipBytes))))
			Expect(bytes.Equal(r.Body, zipBytes)).To(BeTrue(), "downloaded bytes differ from the upload")
			sum := md5.Sum(r.Body)
			Expect(code["latest_checksum"]).To(Equal(hex.EncodeToString(sum[:])))
		})

		It("answers 413 for config over 64 KiB and stores nothing", func() {
			r := cc.upload(cpData(map[string]any{"name": "bigconfig", "image": "x", "config": strings.Repeat("c", 64<<10+1)}))
			Expect(r.Status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(cpKeys(r.JSON())).To(ConsistOf("msg"))
			Expect(cpQueryInt(iron, `SELECT count(*) FROM codes WHERE project_id = $1`, cc.pid)).To(BeZero())
		})

		It("accepts config of exactly 64 KiB and config sent as a JSON object", func() {
			cc.uploadOK(cpData(map[string]any{"name": "maxconfig", "image": "x", "config": strings.Repeat("c", 64<<10)}))
			id := cc.uploadOK(cpData(map[string]any{"name": "objconfig", "image": "x", "config": map[string]any{"a": 1}}))
			Expect(cc.get(id)).To(HaveKeyWithValue("config", `{"a":1}`))
		})

		DescribeTable("answers 400 with a msg for bad input",
			func(parts func() []cpPart, wantMsg string) {
				r := cc.upload(parts()...)
				Expect(r.Status).To(Equal(http.StatusBadRequest), string(r.Body))
				body := r.JSON()
				Expect(cpKeys(body)).To(ConsistOf("msg"))
				Expect(body["msg"]).To(ContainSubstring(wantMsg))
				Expect(cpQueryInt(iron, `SELECT count(*) FROM codes WHERE project_id = $1`, cc.pid)).To(BeZero())
			},
			Entry("malformed data JSON", func() []cpPart {
				return []cpPart{{name: "data", body: []byte(`{"name": "x",`)}, cpFile(cpRunnerZip("x"))}
			}, "not valid JSON"),
			Entry("data that is not an object", func() []cpPart {
				return []cpPart{{name: "data", body: []byte(`["x"]`)}, cpFile(cpRunnerZip("x"))}
			}, "not valid JSON"),
			Entry("missing name", func() []cpPart {
				return []cpPart{cpData(map[string]any{"image": "x"})}
			}, `"name" is required`),
			Entry("empty name", func() []cpPart {
				return []cpPart{cpData(map[string]any{"name": "  ", "image": "x"})}
			}, `"name" is required`),
			Entry("neither image nor file", func() []cpPart {
				return []cpPart{cpData(map[string]any{"name": "nothing"})}
			}, `"image"`),
			Entry("an empty file and no image", func() []cpPart {
				return []cpPart{cpData(map[string]any{"name": "empty"}), cpFile(nil)}
			}, `"image"`),
			Entry("no data part", func() []cpPart {
				return []cpPart{cpFile(cpRunnerZip("x"))}
			}, `"data" part is required`),
			Entry("retries over the limit", func() []cpPart {
				return []cpPart{cpData(map[string]any{"name": "r", "image": "x", "retries": 11})}
			}, "retries"),
			Entry("negative retries_delay", func() []cpPart {
				return []cpPart{cpData(map[string]any{"name": "r", "image": "x", "retries_delay": -1})}
			}, "retries_delay"),
			Entry("env_vars not an object", func() []cpPart {
				return []cpPart{cpData(map[string]any{"name": "r", "image": "x", "env_vars": "A=1"})}
			}, "env_vars"),
		)

		It("answers 400 for a body that is neither multipart nor JSON", func() {
			r := cc.api.DoAs(cc.token, "POST", cc.path("/codes"), nil, http.Header{"Content-Type": {"text/plain"}})
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(HaveKey("msg"))
		})

		It("stores config and env_vars encrypted", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "secret", "image": "x",
				"config": "plaintext-config-marker", "env_vars": map[string]any{"DB_PASSWORD": "plaintext-env-marker"}}))
			db, err := iron.DB.SQL()
			Expect(err).NotTo(HaveOccurred())
			defer db.Close()
			var cfg, env []byte
			Expect(db.QueryRow(`SELECT config_sealed, env_vars_sealed FROM code_revisions WHERE code_id = $1`, id).Scan(&cfg, &env)).To(Succeed())
			Expect(cfg).NotTo(BeEmpty())
			Expect(env).NotTo(BeEmpty())
			Expect(string(cfg)).NotTo(ContainSubstring("plaintext-config-marker"))
			Expect(string(env)).NotTo(ContainSubstring("plaintext-env-marker"))
			Expect(string(env)).NotTo(ContainSubstring("DB_PASSWORD"))
			code := cc.get(id)
			Expect(code).To(HaveKeyWithValue("config", "plaintext-config-marker"))
			Expect(code).To(HaveKeyWithValue("env_vars", map[string]any{"DB_PASSWORD": "plaintext-env-marker"}))
		})
	})

	Describe("size limit", func() {
		var small *testsupport.API
		var sc cpClient
		BeforeEach(func() {
			var err error
			small, err = testsupport.StartAPI(config.Limits{MaxCodeSizeBytes: 1024})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(small.Stop)
			sc = cpNewClient(small)
		})

		expectNothingStored := func() {
			Expect(cpQueryInt(small, `SELECT count(*) FROM codes`)).To(BeZero())
			Expect(cpQueryInt(small, `SELECT count(*) FROM code_revisions`)).To(BeZero())
			Expect(cpQueryInt(small, `SELECT count(*) FROM code_archive_chunks`)).To(BeZero())
		}

		It("answers 413 for a streamed archive over max_code_size_bytes and writes nothing", func() {
			r := sc.upload(cpData(map[string]any{"name": "too-big"}), cpFile(cpRandom(4096)))
			Expect(r.Status).To(Equal(http.StatusRequestEntityTooLarge), string(r.Body))
			Expect(cpKeys(r.JSON())).To(ConsistOf("msg"))
			expectNothingStored()
		})

		It("answers 413 when the oversized file comes before data", func() {
			r := sc.upload(cpFile(cpRandom(4096)), cpData(map[string]any{"name": "too-big"}))
			Expect(r.Status).To(Equal(http.StatusRequestEntityTooLarge), string(r.Body))
			expectNothingStored()
		})

		It("accepts an archive of exactly the limit", func() {
			sc.uploadOK(cpData(map[string]any{"name": "fits"}), cpFile(cpRandom(1024)))
		})
	})

	It("answers 400 and stores nothing for a multipart body cut off inside the file", func() {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		w, err := mw.CreateFormField("data")
		Expect(err).NotTo(HaveOccurred())
		_, _ = w.Write([]byte(`{"name":"cut-off"}`))
		w, err = mw.CreateFormFile("file", "worker.zip")
		Expect(err).NotTo(HaveOccurred())
		_, _ = w.Write(cpRandom(2 << 20)) // no closing boundary follows
		r := cc.api.DoAs(cc.token, "POST", cc.path("/codes"), body.Bytes(),
			http.Header{"Content-Type": {mw.FormDataContentType()}})
		Expect(r.Status).To(Equal(http.StatusBadRequest), string(r.Body))
		Expect(r.JSON()["msg"]).To(ContainSubstring("Could not read the uploaded file"))
		Expect(cpQueryInt(iron, `SELECT count(*) FROM codes WHERE project_id = $1`, cc.pid)).To(BeZero())
		Expect(cpQueryInt(iron, `SELECT count(*) FROM code_revisions WHERE project_id = $1`, cc.pid)).To(BeZero())
	})

	It("stores nothing when the archive stream breaks off", func() {
		broken := io.MultiReader(bytes.NewReader(cpRandom(3<<20)), iotestErrReader{io.ErrUnexpectedEOF})
		_, err := iron.Store.SaveCode(context.Background(), cc.pid, store.CodeUpload{
			Settings: store.CodeSettings{Name: "broken"}, Archive: broken, MaxArchiveSz: 100 << 20})
		Expect(err).To(HaveOccurred())
		_, err = iron.Store.GetCodeByName(context.Background(), cc.pid, "broken")
		Expect(errors.Is(err, store.ErrNotFound)).To(BeTrue())
		Expect(cpQueryInt(iron, `SELECT count(*) FROM code_revisions WHERE project_id = $1`, cc.pid)).To(BeZero())
	})

	Describe("GET /codes/:code_id", func() {
		It("returns every field with the right JSON types", func() {
			zipBytes := cpRunnerZip("echo full")
			id := cc.uploadOK(cpData(map[string]any{
				"name": "full", "image": "acme/full:2", "command": "./run", "runtime": "sh", "file_name": "__runner__.sh",
				"stack": "ruby-2.1", "config": "a: 1", "env_vars": map[string]any{"A": "1", "N": 2},
				"max_concurrency": 5, "retries": 3, "retries_delay": 30, "default_priority": 2,
			}), cpFile(zipBytes))
			code := cc.get(id)
			Expect(cpKeys(code)).To(ConsistOf("id", "project_id", "name", "created_at", "updated_at", "rev",
				"latest_history_id", "latest_change", "latest_checksum", "code_size", "image", "command", "runtime",
				"stack", "file_name", "config", "env_vars", "max_concurrency", "retries", "retries_delay",
				"default_priority", "paused"))
			Expect(code["id"]).To(Equal(id))
			Expect(code["project_id"]).To(Equal(cc.pid))
			Expect(code["name"]).To(Equal("full"))
			for _, k := range []string{"created_at", "updated_at", "latest_change"} {
				Expect(code[k]).To(MatchRegexp(cpTimeRE), k)
			}
			Expect(code["latest_change"]).To(Equal(code["updated_at"]))
			expectInt(code["rev"], 1)
			Expect(code["latest_history_id"]).To(MatchRegexp(`^[0-9a-f]{24}$`))
			sum := md5.Sum(zipBytes)
			Expect(code["latest_checksum"]).To(Equal(hex.EncodeToString(sum[:])))
			expectInt(code["code_size"], int64(len(zipBytes)))
			Expect(code["image"]).To(Equal("acme/full:2"))
			Expect(code["command"]).To(Equal("./run"))
			Expect(code["runtime"]).To(Equal("sh"))
			Expect(code["file_name"]).To(Equal("__runner__.sh"))
			Expect(code["stack"]).To(Equal("ruby-2.1"))
			Expect(code["config"]).To(Equal("a: 1"))
			Expect(code["env_vars"]).To(Equal(map[string]any{"A": "1", "N": "2"}))
			expectInt(code["max_concurrency"], 5)
			expectInt(code["retries"], 3)
			expectInt(code["retries_delay"], 30)
			expectInt(code["default_priority"], 2)
			Expect(code["paused"]).To(BeFalse())
		})

		It("has only the always-present fields for a minimal image code", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "minimal", "image": "x"}))
			Expect(cpKeys(cc.get(id))).To(ConsistOf("id", "project_id", "name", "created_at", "updated_at", "rev",
				"latest_history_id", "latest_change", "image", "retries", "retries_delay", "paused"))
		})

		It("answers 404 Code not found for unknown, malformed and other projects' ids on every route", func() {
			other := cpNewClient(iron)
			otherID := other.uploadOK(cpData(map[string]any{"name": "theirs", "image": "x"}), cpFile(cpRunnerZip("x")))
			for _, id := range []string{otherID, store.NewID(), "not-an-id", "ZZZZZZZZZZZZZZZZZZZZZZZZ"} {
				for _, call := range [][2]string{
					{"GET", ""}, {"DELETE", ""}, {"GET", "/revisions"}, {"GET", "/download"}, {"GET", "/stats"},
					{"POST", "/pause_task_queue"}, {"POST", "/resume_task_queue"}, {"POST", "/cancel_all"},
				} {
					r := cc.do(call[0], "/codes/"+id+call[1], nil)
					Expect(r.Status).To(Equal(http.StatusNotFound), "%s %s %s", call[0], id, call[1])
					Expect(r.JSON()).To(Equal(map[string]any{"msg": "Code not found"}))
				}
			}
			// and theirs is untouched
			Expect(other.get(otherID)).To(HaveKeyWithValue("paused", false))
		})
	})

	Describe("GET /codes", func() {
		It("lists the project's codes ordered by name, with paging", func() {
			for _, n := range []string{"charlie", "alpha", "bravo"} {
				cc.uploadOK(cpData(map[string]any{"name": n, "image": "x"}))
			}
			r := cc.do("GET", "/codes", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			body := r.JSON()
			Expect(cpKeys(body)).To(ConsistOf("codes"))
			codes := body["codes"].([]any)
			Expect(codes).To(HaveLen(3))
			var names []string
			for _, c := range codes {
				m := c.(map[string]any)
				names = append(names, m["name"].(string))
				expectInt(m["rev"], 1)
				Expect(m["created_at"]).To(MatchRegexp(cpTimeRE))
			}
			Expect(names).To(Equal([]string{"alpha", "bravo", "charlie"}))

			page := cc.do("GET", "/codes?page=1&per_page=1", nil).JSON()["codes"].([]any)
			Expect(page).To(HaveLen(1))
			Expect(page[0].(map[string]any)["name"]).To(Equal("bravo"))
		})

		It("returns an empty array, not null, for a project without codes", func() {
			r := cc.do("GET", "/codes", "{}")
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(string(r.Body)).To(MatchJSON(`{"codes":[]}`))
		})

		It("answers 400 for bad paging", func() {
			Expect(cc.do("GET", "/codes?per_page=101", nil).Status).To(Equal(http.StatusBadRequest))
		})
	})

	Describe("GET /codes/:code_id/revisions", func() {
		It("lists revisions newest first with integer revs", func() {
			zip1 := cpRunnerZip("one")
			id := cc.uploadOK(cpData(map[string]any{"name": "revs", "runtime": "sh", "file_name": "__runner__.sh",
				"config": "cfg1", "max_concurrency": 2}), cpFile(zip1))
			cc.uploadOK(cpData(map[string]any{"name": "revs", "image": "acme/revs", "command": "go"}))
			r := cc.do("GET", "/codes/"+id+"/revisions", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			body := r.JSON()
			Expect(cpKeys(body)).To(ConsistOf("revisions"))
			revs := body["revisions"].([]any)
			Expect(revs).To(HaveLen(2))

			newest := revs[0].(map[string]any)
			Expect(cpKeys(newest)).To(ConsistOf("id", "code_id", "project_id", "name", "created_at", "rev",
				"image", "command", "retries", "retries_delay"))
			expectInt(newest["rev"], 2)
			Expect(newest["image"]).To(Equal("acme/revs"))
			Expect(newest["id"]).To(Equal(cc.get(id)["latest_history_id"]))

			oldest := revs[1].(map[string]any)
			Expect(cpKeys(oldest)).To(ConsistOf("id", "code_id", "project_id", "name", "created_at", "rev",
				"checksum", "code_size", "runtime", "file_name", "config", "max_concurrency", "retries", "retries_delay"))
			expectInt(oldest["rev"], 1)
			Expect(oldest["code_id"]).To(Equal(id))
			Expect(oldest["project_id"]).To(Equal(cc.pid))
			Expect(oldest["name"]).To(Equal("revs"))
			Expect(oldest["created_at"]).To(MatchRegexp(cpTimeRE))
			sum := md5.Sum(zip1)
			Expect(oldest["checksum"]).To(Equal(hex.EncodeToString(sum[:])))
			expectInt(oldest["code_size"], int64(len(zip1)))
			expectInt(oldest["max_concurrency"], 2)
			Expect(oldest["config"]).To(Equal("cfg1"))

			paged := cc.do("GET", "/codes/"+id+"/revisions?page=1&per_page=1", nil).JSON()["revisions"].([]any)
			Expect(paged).To(HaveLen(1))
			expectInt(paged[0].(map[string]any)["rev"], 1)
		})
	})

	Describe("GET /codes/:code_id/download", func() {
		It("serves the latest or the requested revision with a safe file name", func() {
			zip1, zip2 := cpRunnerZip("first"), cpRunnerZip("second")
			id := cc.uploadOK(cpData(map[string]any{"name": "acme/worker:tag"}), cpFile(zip1))
			cc.uploadOK(cpData(map[string]any{"name": "acme/worker:tag"}), cpFile(zip2))

			r := cc.do("GET", "/codes/"+id+"/download", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.Body).To(Equal(zip2))
			Expect(r.Header.Get("Content-Disposition")).To(Equal("attachment; filename=acme_worker_tag_2.zip"))

			r = cc.do("GET", "/codes/"+id+"/download?revision=1", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.Body).To(Equal(zip1))
			Expect(r.Header.Get("Content-Disposition")).To(Equal("attachment; filename=acme_worker_tag_1.zip"))
			Expect(r.Header.Get("Content-Length")).To(Equal(fmt.Sprint(len(zip1))))
		})

		It("answers 404 for an unknown revision and 400 for a malformed one", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "one-rev"}), cpFile(cpRunnerZip("x")))
			r := cc.do("GET", "/codes/"+id+"/download?revision=9", nil)
			Expect(r.Status).To(Equal(http.StatusNotFound))
			Expect(r.JSON()).To(HaveKey("msg"))
			Expect(cc.do("GET", "/codes/"+id+"/download?revision=abc", nil).Status).To(Equal(http.StatusBadRequest))
		})

		It("answers 404 Code has no archive for an image-only revision", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "img-only", "image": "x"}))
			r := cc.do("GET", "/codes/"+id+"/download", nil)
			Expect(r.Status).To(Equal(http.StatusNotFound))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Code has no archive"}))
		})
	})

	Describe("pause_task_queue and resume_task_queue", func() {
		It("shows max_concurrency -1 while paused and restores it on resume, with or without a body", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "pausable", "image": "x", "max_concurrency": 4}))
			r := cc.do("POST", "/codes/"+id+"/pause_task_queue", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Paused"}))
			code := cc.get(id)
			expectInt(code["max_concurrency"], -1)
			Expect(code["paused"]).To(BeTrue())

			// A new upload while paused keeps the queue paused.
			cc.uploadOK(cpData(map[string]any{"name": "pausable", "image": "y", "max_concurrency": 4}))
			expectInt(cc.get(id)["max_concurrency"], -1)

			r = cc.do("POST", "/codes/"+id+"/resume_task_queue", "{}")
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Resumed"}))
			code = cc.get(id)
			expectInt(code["max_concurrency"], 4)
			Expect(code["paused"]).To(BeFalse())
		})

		It("omits max_concurrency again after resuming an unlimited code", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "unlimited", "image": "x"}))
			Expect(cc.do("POST", "/codes/"+id+"/pause_task_queue", "").Status).To(Equal(http.StatusOK))
			expectInt(cc.get(id)["max_concurrency"], -1)
			Expect(cc.do("POST", "/codes/"+id+"/resume_task_queue", nil).Status).To(Equal(http.StatusOK))
			Expect(cc.get(id)).NotTo(HaveKey("max_concurrency"))
		})
	})

	Describe("DELETE /codes/:code_id", func() {
		It("hides the code, frees its name, cancels its queued tasks and keeps other codes", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "doomed", "image": "x"}))
			cc.uploadOK(cpData(map[string]any{"name": "survivor", "image": "x"}))
			doomedTasks := cpQueue(iron, cc.pid, "doomed", 2)
			survivorTasks := cpQueue(iron, cc.pid, "survivor", 1)

			r := cc.do("DELETE", "/codes/"+id, "{}")
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Deleted"}))

			Expect(cc.do("GET", "/codes/"+id, nil).Status).To(Equal(http.StatusNotFound))
			Expect(cc.do("DELETE", "/codes/"+id, nil).Status).To(Equal(http.StatusNotFound))
			names := []string{}
			for _, c := range cc.do("GET", "/codes", nil).JSON()["codes"].([]any) {
				names = append(names, c.(map[string]any)["name"].(string))
			}
			Expect(names).To(Equal([]string{"survivor"}))

			for _, t := range doomedTasks {
				status, ended := cpTaskStatus(iron, t)
				Expect(status).To(Equal("cancelled"))
				Expect(ended).To(BeTrue())
			}
			status, _ := cpTaskStatus(iron, survivorTasks[0])
			Expect(status).To(Equal("queued"))

			_, err := iron.Store.QueueTasks(context.Background(), cc.pid, []store.NewTask{{CodeName: "doomed", Timeout: 60}})
			var notFound *store.ErrCodeNotFound
			Expect(errors.As(err, &notFound)).To(BeTrue(), "queueing a deleted code must fail, got %v", err)

			newID := cc.uploadOK(cpData(map[string]any{"name": "doomed", "image": "x"}))
			Expect(newID).NotTo(Equal(id))
			expectInt(cc.get(newID)["rev"], 1)
		})
	})

	Describe("GET /codes/:code_id/stats", func() {
		It("counts the code's tasks by status with every status present as an integer", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "counted", "image": "x"}))
			cc.uploadOK(cpData(map[string]any{"name": "other", "image": "x"}))
			tasks := cpQueue(iron, cc.pid, "counted", 4)
			cpQueue(iron, cc.pid, "other", 3)
			cpExec(iron, `UPDATE tasks SET status = 'running' WHERE id = $1`, tasks[0])
			cpExec(iron, `UPDATE tasks SET status = 'complete' WHERE id = $1`, tasks[1])

			r := cc.do("GET", "/codes/"+id+"/stats", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			stats := r.JSON()
			Expect(cpKeys(stats)).To(ConsistOf("queued", "preparing", "running", "complete", "error", "cancelled", "timeout", "killed"))
			for _, v := range stats {
				expectInt(v)
			}
			expectInt(stats["queued"], 2)
			expectInt(stats["running"], 1)
			expectInt(stats["complete"], 1)
			expectInt(stats["error"], 0)

			now := time.Now().Unix()
			inWindow := cc.do("GET", fmt.Sprintf("/codes/%s/stats?start_date=%d&end_date=%d", id, now-60, now+60), nil).JSON()
			expectInt(inWindow["queued"], 2)
			past := cc.do("GET", fmt.Sprintf("/codes/%s/stats?start_date=%d&end_date=%d", id, now-7200, now-3600), nil).JSON()
			for _, v := range past {
				expectInt(v, 0)
			}
			cpExec(iron, `UPDATE tasks SET created_at = now() - interval '2 days' WHERE id = $1`, tasks[2])
			expectInt(cc.do("GET", "/codes/"+id+"/stats", nil).JSON()["queued"], 1)
		})

		It("answers 400 for malformed or reversed dates", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "dates", "image": "x"}))
			Expect(cc.do("GET", "/codes/"+id+"/stats?start_date=yesterday", nil).Status).To(Equal(http.StatusBadRequest))
			Expect(cc.do("GET", "/codes/"+id+"/stats?start_date=2000&end_date=1000", nil).Status).To(Equal(http.StatusBadRequest))
		})
	})

	Describe("POST /codes/:code_id/cancel_all", func() {
		It("cancels the queued and running tasks of that code only", func() {
			id := cc.uploadOK(cpData(map[string]any{"name": "cancel-me", "image": "x"}))
			cc.uploadOK(cpData(map[string]any{"name": "keep-me", "image": "x"}))
			mine := cpQueue(iron, cc.pid, "cancel-me", 3)
			theirs := cpQueue(iron, cc.pid, "keep-me", 2)
			cpExec(iron, `UPDATE tasks SET status = 'running', start_time = now() WHERE id = $1`, mine[0])
			cpExec(iron, `UPDATE tasks SET status = 'complete', end_time = now() WHERE id = $1`, mine[1])

			r := cc.do("POST", "/codes/"+id+"/cancel_all", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			body := r.JSON()
			Expect(body["msg"]).To(Equal("Cancelled 2 tasks"))
			expectInt(body["cancelled"], 2)

			for _, t := range []string{mine[0], mine[2]} {
				status, ended := cpTaskStatus(iron, t)
				Expect(status).To(Equal("cancelled"))
				Expect(ended).To(BeTrue())
			}
			status, _ := cpTaskStatus(iron, mine[1])
			Expect(status).To(Equal("complete"))
			for _, t := range theirs {
				status, _ := cpTaskStatus(iron, t)
				Expect(status).To(Equal("queued"))
			}
			Expect(cc.do("POST", "/codes/"+id+"/cancel_all", "{}").JSON()["msg"]).To(Equal("Cancelled 0 tasks"))
		})
	})
})

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }
