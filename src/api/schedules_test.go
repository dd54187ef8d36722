package api_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/internal/testsupport"
	"github.com/ironcf/ironworker-release/src/store"
)

// Times in a response: RFC 3339 with a zone (here always UTC).
const schedRFC3339 = `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`

// schedInt asserts a decoded JSON value is an integer and returns it.
func schedInt(v any) int64 {
	GinkgoHelper()
	n, ok := v.(json.Number)
	Expect(ok).To(BeTrue(), "expected a JSON number, got %#v", v)
	Expect(n.String()).To(MatchRegexp(`^-?\d+$`), "expected an integer")
	i, err := n.Int64()
	Expect(err).NotTo(HaveOccurred())
	return i
}

func schedTime(v any) time.Time {
	GinkgoHelper()
	s, ok := v.(string)
	Expect(ok).To(BeTrue(), "expected a time string, got %#v", v)
	Expect(s).To(MatchRegexp(schedRFC3339))
	t, err := time.Parse(time.RFC3339Nano, s)
	Expect(err).NotTo(HaveOccurred())
	return t
}

func schedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var _ = Describe("Schedules API", func() {
	var (
		projectID, token string
		db               *sql.DB
		ctx              = context.Background()
	)

	// Each spec gets its own project with a code "hello", so row counts are its own.
	BeforeEach(func() {
		var err error
		projectID, token, err = iron.NewProject("schedules")
		Expect(err).NotTo(HaveOccurred())
		_, err = iron.Store.SaveCode(ctx, projectID, store.CodeUpload{Settings: store.CodeSettings{Name: "hello", Image: "busybox"}})
		Expect(err).NotTo(HaveOccurred())
		db, err = iron.DB.SQL()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(db.Close)
	})

	base := func() string { return "/2/projects/" + projectID + "/schedules" }
	do := func(method, path string, body any) testsupport.Response {
		return iron.DoAs(token, method, path, body, nil)
	}
	countSchedules := func() int {
		var n int
		Expect(db.QueryRow(`SELECT count(*) FROM schedules WHERE project_id = $1`, projectID).Scan(&n)).To(Succeed())
		return n
	}
	create := func(sched map[string]any) string {
		GinkgoHelper()
		r := do("POST", base(), map[string]any{"schedules": []any{sched}})
		Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
		list := r.JSON()["schedules"].([]any)
		Expect(list).To(HaveLen(1))
		return list[0].(map[string]any)["id"].(string)
	}
	get := func(id string) map[string]any {
		GinkgoHelper()
		r := do("GET", base()+"/"+id, nil)
		Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
		return r.JSON()
	}

	Describe("POST /schedules", func() {
		It("creates a batch in request order and answers msg Scheduled with 24-hex ids", func() {
			r := do("POST", base(), map[string]any{"schedules": []any{
				map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60, "name": "first"},
				map[string]any{"code_name": "hello", "payload": "{}", "run_every": 120, "name": "second"},
				map[string]any{"code_name": "hello", "payload": "{}", "run_every": 180, "name": "third"},
			}})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			body := r.JSON()
			Expect(schedKeys(body)).To(Equal([]string{"msg", "schedules"}))
			Expect(body["msg"]).To(Equal("Scheduled"))
			list := body["schedules"].([]any)
			Expect(list).To(HaveLen(3))
			for i, name := range []string{"first", "second", "third"} {
				item := list[i].(map[string]any)
				Expect(schedKeys(item)).To(Equal([]string{"id"}))
				id := item["id"].(string)
				Expect(id).To(MatchRegexp(`^[0-9a-f]{24}$`))
				got := get(id)
				Expect(got["name"]).To(Equal(name))
				Expect(schedInt(got["run_every"])).To(Equal(int64(60 * (i + 1))))
			}
		})

		It("accepts what ironcli sends and shows every field with the right JSON type", func() {
			id := create(map[string]any{"cluster": "", "code_name": "hello", "delay": 5, "end_at": "2030-02-01T00:00:00Z",
				"label": "", "name": "", "payload": `{"y":2}`, "priority": 2, "run_every": 120, "run_times": 5,
				"start_at": "2030-01-01T00:00:00Z", "timeout": 300, "max_concurrency": 3})
			s := get(id)
			Expect(schedKeys(s)).To(Equal([]string{"cluster", "code_name", "created_at", "end_at", "error_count", "id",
				"label", "name", "next_start", "payload", "priority", "project_id", "run_count", "run_every", "run_times",
				"start_at", "status", "task_delay", "timeout", "updated_at"}))
			Expect(s["id"]).To(Equal(id))
			Expect(s["project_id"]).To(Equal(projectID))
			Expect(s["code_name"]).To(Equal("hello"))
			Expect(s["payload"]).To(Equal(`{"y":2}`))
			Expect(s["status"]).To(Equal("scheduled"))
			Expect(s["cluster"]).To(Equal("default"))
			Expect(s["label"]).To(Equal(""))
			Expect(schedInt(s["run_every"])).To(Equal(int64(120)))
			Expect(schedInt(s["run_times"])).To(Equal(int64(5)))
			Expect(schedInt(s["run_count"])).To(Equal(int64(0)))
			Expect(schedInt(s["error_count"])).To(Equal(int64(0)))
			Expect(schedInt(s["priority"])).To(Equal(int64(2)))
			Expect(schedInt(s["timeout"])).To(Equal(int64(300)))
			Expect(schedInt(s["task_delay"])).To(Equal(int64(5)))
			Expect(schedTime(s["start_at"])).To(Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)))
			Expect(schedTime(s["end_at"])).To(Equal(time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)))
			Expect(schedTime(s["next_start"])).To(Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)))
			schedTime(s["created_at"])
			schedTime(s["updated_at"])
		})

		It("accepts Python isoformat times (microseconds, +hh:mm offsets) and null label and cluster", func() {
			id := create(map[string]any{"code_name": "hello", "payload": "{}", "run_every": 3600, "priority": 0,
				"timeout": 3600, "label": nil, "cluster": nil,
				"start_at": "2030-06-01T12:30:00.250000+02:00", "end_at": "2030-07-01T00:00:00"})
			s := get(id)
			Expect(schedTime(s["start_at"])).To(Equal(time.Date(2030, 6, 1, 10, 30, 0, 250_000_000, time.UTC)))
			Expect(schedTime(s["end_at"])).To(Equal(time.Date(2030, 7, 1, 0, 0, 0, 0, time.UTC)))
			Expect(schedInt(s["priority"])).To(Equal(int64(0)))
			Expect(s["cluster"]).To(Equal("default"))
		})

		It("starts now when start_at is missing, uses the default timeout and leaves out an unset priority", func() {
			before := time.Now().UTC().Add(-time.Second)
			id := create(map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60, "priority": -3})
			s := get(id)
			Expect(schedTime(s["start_at"])).To(BeTemporally(">=", before))
			Expect(schedTime(s["start_at"])).To(BeTemporally("<=", time.Now().Add(time.Second)))
			Expect(s["next_start"]).To(Equal(s["start_at"]))
			Expect(s).NotTo(HaveKey("priority"))
			Expect(s).NotTo(HaveKey("end_at"))
			Expect(schedInt(s["timeout"])).To(Equal(int64(iron.Limits.DefaultTaskTimeoutSeconds)))
			Expect(schedInt(s["run_times"])).To(Equal(int64(0)))
		})

		It("makes a schedule without run_every or cron a one-time schedule (run_times 1)", func() {
			id := create(map[string]any{"code_name": "hello", "payload": "{}", "start_at": "2031-01-01T00:00:00Z"})
			s := get(id)
			Expect(s).NotTo(HaveKey("run_every"))
			Expect(s).NotTo(HaveKey("cron"))
			Expect(schedInt(s["run_times"])).To(Equal(int64(1)))
			Expect(schedTime(s["next_start"])).To(Equal(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)))
		})

		It("takes a cron expression (UTC) instead of run_every", func() {
			id := create(map[string]any{"code_name": "hello", "payload": "{}", "cron": "*/15 * * * *"})
			s := get(id)
			Expect(s["cron"]).To(Equal("*/15 * * * *"))
			Expect(s).NotTo(HaveKey("run_every"))
			next := schedTime(s["next_start"])
			Expect(next).To(BeTemporally(">", time.Now()))
			Expect(next).To(BeTemporally("<=", time.Now().Add(15*time.Minute)))
			Expect(next.Minute() % 15).To(Equal(0))
			Expect(next.Second()).To(Equal(0))
		})

		DescribeTable("refuses bad input with 400 and a msg, writing nothing",
			func(sched map[string]any, msgPart string) {
				r := do("POST", base(), map[string]any{"schedules": []any{sched}})
				Expect(r.Status).To(Equal(http.StatusBadRequest), string(r.Body))
				body := r.JSON()
				Expect(schedKeys(body)).To(Equal([]string{"msg"}))
				Expect(body["msg"]).To(ContainSubstring(msgPart))
				Expect(countSchedules()).To(Equal(0))
			},
			Entry("run_every under 60", map[string]any{"code_name": "hello", "payload": "{}", "run_every": 30}, "run_every must be at least 60"),
			Entry("negative run_every", map[string]any{"code_name": "hello", "payload": "{}", "run_every": -60}, "run_every"),
			Entry("invalid cron", map[string]any{"code_name": "hello", "payload": "{}", "cron": "every tuesday"}, "invalid cron"),
			Entry("cron with six fields", map[string]any{"code_name": "hello", "payload": "{}", "cron": "0 */5 * * * *"}, "invalid cron"),
			Entry("cron that never fires", map[string]any{"code_name": "hello", "payload": "{}", "cron": "0 0 30 2 *"}, "invalid cron"),
			Entry("cron with a time zone", map[string]any{"code_name": "hello", "payload": "{}", "cron": "CRON_TZ=Asia/Tokyo 0 * * * *"}, "invalid cron"),
			Entry("both run_every and cron", map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60, "cron": "* * * * *"}, "either run_every or cron"),
			Entry("no code_name", map[string]any{"payload": "{}", "run_every": 60}, "code_name"),
			Entry("bad start_at", map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60, "start_at": "tomorrow"}, "start_at"),
			Entry("end_at before start_at", map[string]any{"code_name": "hello", "run_every": 60,
				"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}, "end_at"),
			Entry("negative run_times", map[string]any{"code_name": "hello", "run_every": 60, "run_times": -1}, "run_times"),
			Entry("run_times without a cadence", map[string]any{"code_name": "hello", "run_times": 3}, "run_every or cron"),
			Entry("timeout over the maximum", map[string]any{"code_name": "hello", "run_every": 60, "timeout": 999999}, "timeout"),
			Entry("negative delay", map[string]any{"code_name": "hello", "run_every": 60, "delay": -1}, "delay"),
			Entry("run_every of the wrong type", map[string]any{"code_name": "hello", "run_every": []int{1}}, "Invalid JSON"),
		)

		It("refuses a whole batch when one item is bad, naming the item", func() {
			r := do("POST", base(), map[string]any{"schedules": []any{
				map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60},
				map[string]any{"code_name": "hello", "payload": "{}", "run_every": 30},
			}})
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()["msg"]).To(HavePrefix("schedules[1]: run_every"))
			Expect(countSchedules()).To(Equal(0))
		})

		It("answers 404 for an unknown code and writes nothing of the batch", func() {
			r := do("POST", base(), map[string]any{"schedules": []any{
				map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60},
				map[string]any{"code_name": "nope", "payload": "{}", "run_every": 60},
			}})
			Expect(r.Status).To(Equal(http.StatusNotFound))
			Expect(r.JSON()).To(HaveKeyWithValue("msg", ContainSubstring(`"nope" not found`)))
			Expect(countSchedules()).To(Equal(0))
		})

		It("answers 400 for malformed JSON and for a body without schedules", func() {
			r := do("POST", base(), `{"schedules": [`)
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(HaveKey("msg"))
			r = do("POST", base(), `{"schedules": []}`)
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(HaveKey("msg"))
			r = do("POST", base(), `{"schedules": {"code_name": "hello"}}`)
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()["msg"]).To(ContainSubstring("schedules"))
			Expect(countSchedules()).To(Equal(0))
		})

		It("answers 413 for a payload over the limit", func() {
			big := strings.Repeat("x", iron.Limits.MaxPayloadBytes+1)
			r := do("POST", base(), map[string]any{"schedules": []any{map[string]any{"code_name": "hello", "payload": big, "run_every": 60}}})
			Expect(r.Status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(r.JSON()).To(HaveKey("msg"))
			Expect(countSchedules()).To(Equal(0))
		})
	})

	Describe("GET /schedules", func() {
		It("lists the project's schedules newest first, with paging", func() {
			// One batch: its order must survive in the list too.
			r := do("POST", base(), map[string]any{"schedules": []any{
				map[string]any{"code_name": "hello", "run_every": 60},
				map[string]any{"code_name": "hello", "run_every": 60},
				map[string]any{"code_name": "hello", "run_every": 60},
			}})
			Expect(r.Status).To(Equal(http.StatusOK))
			var ids []string
			for _, item := range r.JSON()["schedules"].([]any) {
				ids = append(ids, item.(map[string]any)["id"].(string))
			}
			otherID, otherToken, err := iron.NewProject("other")
			Expect(err).NotTo(HaveOccurred())
			_, err = iron.Store.SaveCode(ctx, otherID, store.CodeUpload{Settings: store.CodeSettings{Name: "hello", Image: "busybox"}})
			Expect(err).NotTo(HaveOccurred())
			Expect(iron.DoAs(otherToken, "POST", "/2/projects/"+otherID+"/schedules",
				map[string]any{"schedules": []any{map[string]any{"code_name": "hello", "run_every": 60}}}, nil).Status).To(Equal(http.StatusOK))

			r = do("GET", base(), "{}") // iron_go3 sends a body on GET
			Expect(r.Status).To(Equal(http.StatusOK))
			body := r.JSON()
			Expect(schedKeys(body)).To(Equal([]string{"schedules"}))
			list := body["schedules"].([]any)
			Expect(list).To(HaveLen(3))
			for i, item := range list {
				s := item.(map[string]any)
				Expect(s["id"]).To(Equal(ids[2-i]))
				Expect(s["project_id"]).To(Equal(projectID))
				schedInt(s["run_every"])
				schedTime(s["next_start"])
			}

			r = do("GET", base()+"?per_page=1&page=1", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			list = r.JSON()["schedules"].([]any)
			Expect(list).To(HaveLen(1))
			Expect(list[0].(map[string]any)["id"]).To(Equal(ids[1]))

			r = do("GET", base()+"?per_page=1000", nil)
			Expect(r.Status).To(Equal(http.StatusBadRequest))
		})

		It("answers an empty array, not null, when there are none", func() {
			r := do("GET", base(), nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(string(r.Body)).To(MatchJSON(`{"schedules":[]}`))
		})
	})

	Describe("GET /schedules/:id", func() {
		It("answers 404 Schedule not found for another project's, an unknown and a malformed id", func() {
			otherID, otherToken, err := iron.NewProject("other")
			Expect(err).NotTo(HaveOccurred())
			_, err = iron.Store.SaveCode(ctx, otherID, store.CodeUpload{Settings: store.CodeSettings{Name: "hello", Image: "busybox"}})
			Expect(err).NotTo(HaveOccurred())
			r := iron.DoAs(otherToken, "POST", "/2/projects/"+otherID+"/schedules",
				map[string]any{"schedules": []any{map[string]any{"code_name": "hello", "run_every": 60}}}, nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			foreign := r.JSON()["schedules"].([]any)[0].(map[string]any)["id"].(string)

			for _, id := range []string{foreign, store.NewID(), "not-an-id"} {
				for _, req := range []struct{ method, path string }{
					{"GET", base() + "/" + id}, {"POST", base() + "/" + id + "/cancel"}, {"PUT", base() + "/" + id},
				} {
					var body any
					if req.method == "PUT" {
						body = map[string]any{"label": "x"}
					}
					r := do(req.method, req.path, body)
					Expect(r.Status).To(Equal(http.StatusNotFound), req.method+" "+req.path)
					Expect(r.JSON()).To(Equal(map[string]any{"msg": "Schedule not found"}))
				}
			}
			var status string
			Expect(db.QueryRow(`SELECT status FROM schedules WHERE id = $1`, foreign).Scan(&status)).To(Succeed())
			Expect(status).To(Equal("scheduled"))
		})

		It("shows runs once fired: run_count, last_run_time and an advanced next_start", func() {
			start := time.Now().UTC().Add(-5 * time.Second).Truncate(time.Second)
			id := create(map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60, "start_at": start.Format(time.RFC3339)})
			_, err := iron.Store.FireDueSchedules(ctx, time.Now(), 100)
			Expect(err).NotTo(HaveOccurred())
			s := get(id)
			Expect(schedInt(s["run_count"])).To(Equal(int64(1)))
			schedTime(s["last_run_time"])
			Expect(schedTime(s["next_start"])).To(Equal(start.Add(60 * time.Second)))
			Expect(s["status"]).To(Equal("scheduled"))
			Expect(s).NotTo(HaveKey("msg"))
		})
	})

	Describe("POST /schedules/:id/cancel", func() {
		It("cancels with an empty body, clears next_start, and is idempotent", func() {
			id := create(map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60})
			r := iron.DoAs(token, "POST", base()+"/"+id+"/cancel", "", nil) // empty body, JSON content type
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Cancelled"}))
			s := get(id)
			Expect(s["status"]).To(Equal("cancelled"))
			Expect(s).NotTo(HaveKey("next_start"))

			r = iron.DoAs(token, "POST", base()+"/"+id+"/cancel", "{}", nil) // Ruby sends {}
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Cancelled"}))

			events, err := iron.Store.FireDueSchedules(ctx, time.Now().Add(time.Hour), 100)
			Expect(err).NotTo(HaveOccurred())
			for _, ev := range events {
				Expect(ev.ScheduleID).NotTo(Equal(id))
			}
		})
	})

	Describe("PUT /schedules/:id", func() {
		var id string
		BeforeEach(func() {
			id = create(map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60, "label": "a",
				"start_at": "2030-01-01T00:00:00Z", "timeout": 100})
		})

		It("updates the given fields from a bare object (as Ruby sends) and answers the schedule", func() {
			r := do("PUT", base()+"/"+id, map[string]any{"run_every": 120, "label": "b", "start_at": "2030-03-01T10:00:00Z",
				"payload": `{"z":1}`, "priority": 1})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			s := r.JSON()
			Expect(s["id"]).To(Equal(id))
			Expect(schedInt(s["run_every"])).To(Equal(int64(120)))
			Expect(s["label"]).To(Equal("b"))
			Expect(s["payload"]).To(Equal(`{"z":1}`))
			Expect(schedInt(s["priority"])).To(Equal(int64(1)))
			Expect(schedInt(s["timeout"])).To(Equal(int64(100))) // untouched
			Expect(schedTime(s["next_start"])).To(Equal(time.Date(2030, 3, 1, 10, 0, 0, 0, time.UTC)))
			Expect(get(id)).To(Equal(s))
		})

		It("accepts the {\"schedules\":[object]} shape too, and switches to cron", func() {
			r := do("PUT", base()+"/"+id, map[string]any{"schedules": []any{map[string]any{"cron": "0 3 * * *"}}})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			s := r.JSON()
			Expect(s["cron"]).To(Equal("0 3 * * *"))
			Expect(s).NotTo(HaveKey("run_every"))
			Expect(schedTime(s["next_start"])).To(Equal(time.Date(2030, 1, 1, 3, 0, 0, 0, time.UTC)))
		})

		It("validates like create and changes nothing on error", func() {
			before := get(id)
			for _, body := range []any{
				map[string]any{"run_every": 30},
				map[string]any{"cron": "nope"},
				map[string]any{"run_every": 60, "cron": "* * * * *"},
				map[string]any{"end_at": "2029-01-01T00:00:00Z"},
				map[string]any{"schedules": []any{}},
				`{"run_every": `,
			} {
				r := do("PUT", base()+"/"+id, body)
				Expect(r.Status).To(Equal(http.StatusBadRequest), "%v: %s", body, r.Body)
				Expect(r.JSON()).To(HaveKey("msg"))
			}
			r := do("PUT", base()+"/"+id, map[string]any{"code_name": "nope"})
			Expect(r.Status).To(Equal(http.StatusNotFound))
			Expect(r.JSON()["msg"]).To(ContainSubstring(`"nope"`))
			Expect(get(id)).To(Equal(before))
		})

		It("re-plans: run_times or end_at already reached complete it, lifting them schedules it again", func() {
			start := time.Now().UTC().Add(-5 * time.Second).Truncate(time.Second)
			id := create(map[string]any{"code_name": "hello", "payload": "{}", "run_every": 60, "start_at": start.Format(time.RFC3339)})
			_, err := iron.Store.FireDueSchedules(ctx, time.Now(), 100)
			Expect(err).NotTo(HaveOccurred())

			r := do("PUT", base()+"/"+id, map[string]any{"run_times": 1})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			s := r.JSON()
			Expect(s["status"]).To(Equal("complete"))
			Expect(s["msg"]).To(Equal("Ran max times."))
			Expect(s).NotTo(HaveKey("next_start"))

			r = do("PUT", base()+"/"+id, map[string]any{"run_times": 0})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			s = r.JSON()
			Expect(s["status"]).To(Equal("scheduled"))
			Expect(s).NotTo(HaveKey("msg"))
			Expect(schedTime(s["next_start"])).To(Equal(start.Add(60 * time.Second)))

			r = do("PUT", base()+"/"+id, map[string]any{"end_at": start.Add(time.Second).Format(time.RFC3339)})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			s = r.JSON()
			Expect(s["status"]).To(Equal("complete"))
			Expect(s["msg"]).To(Equal("Reached end_at."))

			r = do("PUT", base()+"/"+id, map[string]any{"end_at": nil})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			s = r.JSON()
			Expect(s["status"]).To(Equal("scheduled"))
			Expect(s).NotTo(HaveKey("end_at"))
			Expect(schedInt(s["run_count"])).To(Equal(int64(1)))
		})

		It("refuses to update a cancelled schedule with 400", func() {
			Expect(do("POST", base()+"/"+id+"/cancel", nil).Status).To(Equal(http.StatusOK))
			r := do("PUT", base()+"/"+id, map[string]any{"label": "c"})
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()["msg"]).To(ContainSubstring("cancelled"))
			Expect(get(id)["label"]).To(Equal("a"))
		})
	})
})
