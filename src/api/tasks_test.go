package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/store"
)

// rfc3339Z is how every time must look: RFC 3339 in UTC with a Z.
const rfc3339Z = `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$`

// newCode registers an image-only code with a unique name (specs stay independent).
func newCode(defaultPriority *int) store.Code {
	code, err := iron.Store.SaveCode(context.Background(), iron.ProjectID, store.CodeUpload{Settings: store.CodeSettings{
		Name: "tasks-spec/" + store.NewID(), Image: "img", DefaultPriority: defaultPriority,
	}})
	Expect(err).NotTo(HaveOccurred())
	return code
}

// queueTasks posts the tasks and returns their ids.
func queueTasks(tasks ...map[string]any) []string {
	r := iron.Do("POST", iron.Project()+"/tasks", map[string]any{"tasks": tasks})
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusOK), string(r.Body))
	body := r.JSON()
	ExpectWithOffset(1, body).To(HaveKeyWithValue("msg", "Queued up"))
	items := body["tasks"].([]any)
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.(map[string]any)["id"].(string)
	}
	return ids
}

func queueOne(codeName, payload string) string {
	return queueTasks(map[string]any{"code_name": codeName, "payload": payload})[0]
}

func getTask(id string) map[string]any {
	r := iron.Do("GET", iron.Project()+"/tasks/"+id, nil)
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusOK), string(r.Body))
	return r.JSON()
}

// sqlExec and sqlCount reach the database directly, to arrange states (a finished task)
// and to check what was (not) written.
func sqlExec(q string, args ...any) {
	db, err := iron.DB.SQL()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer db.Close()
	_, err = db.Exec(q, args...)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
}

func sqlCount(q string, args ...any) int {
	db, err := iron.DB.SQL()
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer db.Close()
	var n int
	ExpectWithOffset(1, db.QueryRow(q, args...).Scan(&n)).To(Succeed())
	return n
}

func tasksOfCode(name string) int {
	return sqlCount(`SELECT count(*) FROM tasks WHERE code_name = $1`, name)
}

// isInt tells whether a decoded JSON value is an integer number (no fraction, no exponent).
func isInt(v any) bool {
	n, ok := v.(json.Number)
	if !ok {
		return false
	}
	_, err := n.Int64()
	return err == nil && !strings.ContainsAny(n.String(), ".eE")
}

func intOf(v any) int64 {
	ExpectWithOffset(1, isInt(v)).To(BeTrue(), "%#v is not a JSON integer", v)
	n, _ := v.(json.Number).Int64()
	return n
}

func listIDs(query string) []string {
	r := iron.Do("GET", iron.Project()+"/tasks?"+query, nil)
	ExpectWithOffset(1, r.Status).To(Equal(http.StatusOK), string(r.Body))
	items := r.JSON()["tasks"].([]any)
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.(map[string]any)["id"].(string)
	}
	return ids
}

func finish(id, status string) {
	sqlExec(`UPDATE tasks SET status = $2, start_time = now() - interval '2.5 seconds', end_time = now() WHERE id = $1`, id, status)
}

var _ = Describe("Tasks API", func() {
	var code store.Code
	BeforeEach(func() {
		code = newCode(nil)
		// The suite shares one database: leave no codes or tasks behind for specs that
		// count globally (the queue metrics). Deleting a code cascades to its tasks.
		DeferCleanup(sqlExec, `DELETE FROM codes WHERE name LIKE 'tasks-spec/%'`)
	})

	Describe("POST /tasks and GET /tasks/:id", func() {
		It("queues a task and returns it with exactly the keys and types clients decode", func() {
			id := queueTasks(map[string]any{"code_name": code.Name, "payload": `{"x":1}`, "priority": 1,
				"timeout": 30, "delay": 5, "cluster": "", "label": "lbl"})[0]
			Expect(id).To(MatchRegexp(`^[0-9a-f]{24}$`))

			t := getTask(id)
			keys := make([]string, 0, len(t))
			for k := range t {
				keys = append(keys, k)
			}
			Expect(keys).To(ConsistOf("id", "project_id", "code_id", "code_history_id", "code_name", "code_rev",
				"status", "created_at", "updated_at", "priority", "timeout", "delay", "payload", "cluster", "label",
				"log_size", "retry_count"))
			Expect(t).To(HaveKeyWithValue("id", id))
			Expect(t).To(HaveKeyWithValue("project_id", iron.ProjectID))
			Expect(t).To(HaveKeyWithValue("code_id", code.ID))
			Expect(t).To(HaveKeyWithValue("code_history_id", code.LatestRevisionID))
			Expect(t).To(HaveKeyWithValue("code_name", code.Name))
			Expect(t).To(HaveKeyWithValue("code_rev", "1")) // a string
			Expect(t).To(HaveKeyWithValue("status", "queued"))
			Expect(t).To(HaveKeyWithValue("payload", `{"x":1}`))
			Expect(t).To(HaveKeyWithValue("cluster", "default"))
			Expect(t).To(HaveKeyWithValue("label", "lbl"))
			Expect(t["created_at"]).To(MatchRegexp(rfc3339Z))
			Expect(t["updated_at"]).To(MatchRegexp(rfc3339Z))
			Expect(intOf(t["priority"])).To(BeEquivalentTo(1))
			Expect(intOf(t["timeout"])).To(BeEquivalentTo(30))
			Expect(intOf(t["delay"])).To(BeEquivalentTo(5))
			Expect(intOf(t["log_size"])).To(BeEquivalentTo(0))
			Expect(intOf(t["retry_count"])).To(BeEquivalentTo(0))
		})

		It("shows start_time, end_time, duration (ms), percent and msg once set, all integers and RFC 3339", func() {
			id := queueOne(code.Name, "p")
			sqlExec(`UPDATE tasks SET status = 'error', start_time = '2030-01-01T00:00:00Z', end_time = '2030-01-01T00:00:02.5Z',
				percent = 40, msg = 'boom' WHERE id = $1`, id)
			t := getTask(id)
			Expect(t).To(HaveKeyWithValue("start_time", "2030-01-01T00:00:00Z"))
			Expect(t).To(HaveKeyWithValue("end_time", "2030-01-01T00:00:02.5Z"))
			Expect(intOf(t["duration"])).To(BeEquivalentTo(2500))
			Expect(intOf(t["percent"])).To(BeEquivalentTo(40))
			Expect(t).To(HaveKeyWithValue("msg", "boom"))
		})

		It("keeps request order in a batch of 5", func() {
			tasks := make([]map[string]any, 5)
			for i := range tasks {
				tasks[i] = map[string]any{"code_name": code.Name, "payload": fmt.Sprintf("payload-%d", i)}
			}
			ids := queueTasks(tasks...)
			Expect(ids).To(HaveLen(5))
			for i, id := range ids {
				Expect(getTask(id)).To(HaveKeyWithValue("payload", fmt.Sprintf("payload-%d", i)))
			}
		})

		It("rejects a batch naming an unknown code with 404 and writes nothing", func() {
			r := iron.Do("POST", iron.Project()+"/tasks", map[string]any{"tasks": []map[string]any{
				{"code_name": code.Name, "payload": "a"},
				{"code_name": code.Name + "-missing", "payload": "b"},
				{"code_name": code.Name, "payload": "c"},
			}})
			Expect(r.Status).To(Equal(http.StatusNotFound))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Code not found: " + code.Name + "-missing"}))
			Expect(tasksOfCode(code.Name)).To(Equal(0))
		})

		It("rejects a payload over the limit with 413 and writes nothing", func() {
			big := strings.Repeat("x", iron.Limits.MaxPayloadBytes+1)
			r := iron.Do("POST", iron.Project()+"/tasks", map[string]any{"tasks": []map[string]any{
				{"code_name": code.Name, "payload": "small"},
				{"code_name": code.Name, "payload": big},
			}})
			Expect(r.Status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(r.JSON()["msg"]).To(ContainSubstring("tasks[1]: payload is"))
			Expect(tasksOfCode(code.Name)).To(Equal(0))
		})

		It("accepts a payload of exactly the limit", func() {
			id := queueOne(code.Name, strings.Repeat("x", iron.Limits.MaxPayloadBytes))
			Expect(getTask(id)["payload"]).To(HaveLen(iron.Limits.MaxPayloadBytes))
		})

		DescribeTable("answers 400 with a msg for bad input, writing nothing",
			func(body func(name string) string, msg string) {
				r := iron.Do("POST", iron.Project()+"/tasks", body(code.Name))
				Expect(r.Status).To(Equal(http.StatusBadRequest), string(r.Body))
				Expect(r.JSON()["msg"]).To(ContainSubstring(msg))
				Expect(tasksOfCode(code.Name)).To(Equal(0))
			},
			Entry("malformed JSON", func(n string) string { return `{"tasks":[{"code_name":"` + n + `",` }, "Invalid JSON"),
			Entry("tasks not an array", func(string) string { return `{"tasks":{"code_name":"x"}}` }, "Invalid JSON"),
			Entry("no tasks key", func(string) string { return `{}` }, "No tasks given"),
			Entry("empty body", func(string) string { return `` }, "No tasks given"),
			Entry("empty tasks", func(string) string { return `{"tasks":[]}` }, "No tasks given"),
			Entry("missing code_name", func(n string) string {
				return `{"tasks":[{"code_name":"` + n + `","payload":""},{"payload":"x"}]}`
			}, "tasks[1]: code_name is required"),
			Entry("timeout over the max", func(n string) string {
				return `{"tasks":[{"code_name":"` + n + `","payload":"","timeout":3601}]}`
			}, "tasks[0]: timeout must be at most 3600 seconds"),
			Entry("negative timeout", func(n string) string {
				return `{"tasks":[{"code_name":"` + n + `","payload":"","timeout":-5}]}`
			}, "timeout must not be negative"),
			Entry("delay over 7 days", func(n string) string {
				return `{"tasks":[{"code_name":"` + n + `","payload":"","delay":604801}]}`
			}, "tasks[0]: delay must be at most 604800 seconds"),
			Entry("non-numeric priority", func(n string) string {
				return `{"tasks":[{"code_name":"` + n + `","payload":"","priority":"high"}]}`
			}, "Invalid JSON"),
		)

		It("answers 400 for more tasks than one request may hold", func() {
			tasks := make([]map[string]any, iron.Limits.MaxTasksPerRequest+1)
			for i := range tasks {
				tasks[i] = map[string]any{"code_name": code.Name, "payload": ""}
			}
			r := iron.Do("POST", iron.Project()+"/tasks", map[string]any{"tasks": tasks})
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()["msg"]).To(Equal(fmt.Sprintf("Too many tasks: at most %d per request", iron.Limits.MaxTasksPerRequest)))
			Expect(tasksOfCode(code.Name)).To(Equal(0))
		})

		It("answers 413 for a body over the request limit", func() {
			body := `{"tasks":[{"code_name":"x","payload":"` + strings.Repeat("x", int(iron.Limits.MaxRequestBytes)) + `"}]}`
			r := iron.Do("POST", iron.Project()+"/tasks", body)
			Expect(r.Status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(r.JSON()).To(HaveKey("msg"))
		})

		It("answers 401 for a wrong token and writes nothing", func() {
			r := iron.DoAs("wrong-token", "POST", iron.Project()+"/tasks",
				map[string]any{"tasks": []map[string]any{{"code_name": code.Name, "payload": ""}}}, nil)
			Expect(r.Status).To(Equal(http.StatusUnauthorized))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Invalid token"}))
			Expect(tasksOfCode(code.Name)).To(Equal(0))
		})

		It("reads what ironcli sends: priority -3 and timeout 0 mean the code's default priority and the default timeout", func() {
			two := 2
			prioCode := newCode(&two)
			id := queueTasks(map[string]any{"cluster": "", "code_name": prioCode.Name, "delay": 0, "label": "",
				"payload": "{}", "priority": -3, "timeout": 0})[0]
			t := getTask(id)
			Expect(intOf(t["priority"])).To(BeEquivalentTo(2))
			Expect(intOf(t["timeout"])).To(BeEquivalentTo(3600))
			Expect(intOf(t["delay"])).To(BeEquivalentTo(0))
			Expect(t).To(HaveKeyWithValue("cluster", "default"))

			id = queueTasks(map[string]any{"code_name": code.Name, "payload": "", "priority": -1000})[0]
			Expect(intOf(getTask(id)["priority"])).To(BeEquivalentTo(0))
		})

		It("reads fractional timeouts and delays (iron_go3 sends float seconds), truncating", func() {
			r := iron.Do("POST", iron.Project()+"/tasks",
				`{"tasks":[{"code_name":"`+code.Name+`","payload":"","timeout":12.7,"delay":1.9,"priority":1.0}]}`)
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			id := r.JSON()["tasks"].([]any)[0].(map[string]any)["id"].(string)
			t := getTask(id)
			Expect(intOf(t["timeout"])).To(BeEquivalentTo(12))
			Expect(intOf(t["delay"])).To(BeEquivalentTo(1))
			Expect(intOf(t["priority"])).To(BeEquivalentTo(1))
		})

		It("reads what the Python client sends: null label and cluster, name and sync extras", func() {
			r := iron.Do("POST", iron.Project()+"/tasks", `{"tasks": [{"name": "`+code.Name+`", "code_name": "`+code.Name+
				`", "payload": "{}", "priority": 1, "delay": 0, "label": null, "cluster": null, "sync": false, "timeout": 60}]}`)
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			id := r.JSON()["tasks"].([]any)[0].(map[string]any)["id"].(string)
			t := getTask(id)
			Expect(t).To(HaveKeyWithValue("label", ""))
			Expect(t).To(HaveKeyWithValue("cluster", "default"))
			Expect(intOf(t["timeout"])).To(BeEquivalentTo(60))
		})

		It("treats a missing payload as empty and keeps a non-string payload as its JSON", func() {
			ids := queueTasks(
				map[string]any{"code_name": code.Name},
				map[string]any{"code_name": code.Name, "payload": map[string]any{"a": 1}},
			)
			Expect(getTask(ids[0])).To(HaveKeyWithValue("payload", ""))
			Expect(getTask(ids[1])).To(HaveKeyWithValue("payload", `{"a":1}`))
		})

		It("answers GET with a JSON body {} as iron_go3 sends it", func() {
			id := queueOne(code.Name, "p")
			r := iron.Do("GET", iron.Project()+"/tasks/"+id, "{}")
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(HaveKeyWithValue("id", id))
		})

		It("answers 404 Task not found for an unknown, malformed or another project's task id", func() {
			otherID, otherToken, err := iron.NewProject("other tasks project")
			Expect(err).NotTo(HaveOccurred())
			otherCode, err := iron.Store.SaveCode(context.Background(), otherID, store.CodeUpload{Settings: store.CodeSettings{Name: code.Name, Image: "img"}})
			Expect(err).NotTo(HaveOccurred())
			ids, err := iron.Store.QueueTasks(context.Background(), otherID, []store.NewTask{{CodeName: otherCode.Name, Payload: "secret", Timeout: 60}})
			Expect(err).NotTo(HaveOccurred())
			foreign := ids[0]
			Expect(iron.DoAs(otherToken, "GET", "/2/projects/"+otherID+"/tasks/"+foreign, nil, nil).Status).To(Equal(http.StatusOK))

			for _, id := range []string{foreign, store.NewID(), "nope", strings.ToUpper(store.NewID())} {
				for _, req := range []struct{ method, suffix string }{
					{"GET", ""}, {"GET", "/log"}, {"GET", "/outlog"}, {"POST", "/cancel"}, {"POST", "/progress"}, {"POST", "/retry"},
				} {
					r := iron.Do(req.method, iron.Project()+"/tasks/"+id+req.suffix, "")
					Expect(r.Status).To(Equal(http.StatusNotFound), req.method+" "+req.suffix)
					Expect(r.JSON()).To(Equal(map[string]any{"msg": "Task not found"}))
				}
			}
			// Nothing happened to the other project's task.
			Expect(sqlCount(`SELECT count(*) FROM tasks WHERE id = $1 AND status = 'queued' AND retry_task_id IS NULL`, foreign)).To(Equal(1))
			Expect(iron.Do("GET", iron.Project()+"/tasks?code_name="+url.QueryEscape(code.Name), nil).JSON()["tasks"]).To(BeEmpty())
		})
	})

	Describe("GET /tasks", func() {
		It("lists the project's tasks newest first with the full task object", func() {
			ids := queueTasks(
				map[string]any{"code_name": code.Name, "payload": "1"},
				map[string]any{"code_name": code.Name, "payload": "2"},
			)
			r := iron.Do("GET", iron.Project()+"/tasks?code_name="+url.QueryEscape(code.Name), "{}")
			Expect(r.Status).To(Equal(http.StatusOK))
			body := r.JSON()
			Expect(body).To(HaveLen(1))
			items := body["tasks"].([]any)
			Expect(items).To(HaveLen(2))
			first := items[0].(map[string]any)
			Expect(first["id"]).To(Equal(ids[1]))
			Expect(first).To(HaveKeyWithValue("code_rev", "1"))
			Expect(isInt(first["timeout"])).To(BeTrue())
			Expect(first["created_at"]).To(MatchRegexp(rfc3339Z))
		})

		It("answers an empty array, not null, when nothing matches", func() {
			r := iron.Do("GET", iron.Project()+"/tasks?code_name=nothing-"+store.NewID(), nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(string(r.Body)).To(Equal(`{"tasks":[]}`))
		})

		It("filters by code_name, label and cluster", func() {
			other := newCode(nil)
			ids := queueTasks(
				map[string]any{"code_name": code.Name, "payload": "", "label": "blue"},
				map[string]any{"code_name": code.Name, "payload": "", "label": "red", "cluster": "big"},
				map[string]any{"code_name": other.Name, "payload": "", "label": "blue"},
			)
			c := "code_name=" + url.QueryEscape(code.Name)
			Expect(listIDs(c)).To(Equal([]string{ids[1], ids[0]}))
			Expect(listIDs(c + "&label=blue")).To(Equal([]string{ids[0]}))
			Expect(listIDs(c + "&cluster=big")).To(Equal([]string{ids[1]}))
			Expect(listIDs(c + "&cluster=default")).To(Equal([]string{ids[0]}))
			Expect(listIDs("code_name=" + url.QueryEscape(other.Name))).To(Equal([]string{ids[2]}))
		})

		It("filters by status flags, OR-ed, accepting iron_go3's complete=%!d(bool=true)", func() {
			ids := queueTasks(
				map[string]any{"code_name": code.Name, "payload": "queued"},
				map[string]any{"code_name": code.Name, "payload": "complete"},
				map[string]any{"code_name": code.Name, "payload": "error"},
				map[string]any{"code_name": code.Name, "payload": "killed"},
			)
			finish(ids[1], "complete")
			finish(ids[2], "error")
			finish(ids[3], "killed")
			c := "code_name=" + url.QueryEscape(code.Name)

			// iron_go3 FilteredTaskList does QueryAdd("complete", "%d", true): fmt makes
			// "%!d(bool=true)" of it, which url.Values then escapes.
			goFlag := url.Values{"complete": {"%!d(bool=true)"}}.Encode()
			Expect(goFlag).To(Equal("complete=%25%21d%28bool%3Dtrue%29"))
			Expect(listIDs(c + "&" + goFlag)).To(Equal([]string{ids[1]}))
			Expect(listIDs(c + "&complete=%!d(bool=true)")).To(Equal([]string{ids[1]})) // not even valid escaping
			Expect(listIDs(c + "&complete=1&error=1")).To(Equal([]string{ids[2], ids[1]}))
			Expect(listIDs(c + "&queued=true&killed=1")).To(Equal([]string{ids[3], ids[0]}))
			Expect(listIDs(c + "&complete=0&error=false&running=")).To(HaveLen(4)) // no flag set: all
			Expect(listIDs(c + "&running=1")).To(BeEmpty())
		})

		It("filters by from_time and to_time (epoch seconds on created_at) and pages newest first", func() {
			ids := queueTasks(
				map[string]any{"code_name": code.Name, "payload": "0"},
				map[string]any{"code_name": code.Name, "payload": "1"},
				map[string]any{"code_name": code.Name, "payload": "2"},
				map[string]any{"code_name": code.Name, "payload": "3"},
			)
			// 2030-01-01T00:00:00Z is 1893456000; the tasks are 100 s apart, the last 0.5 s into its second.
			for i, at := range []float64{1893456000, 1893456100, 1893456200, 1893456300.5} {
				sqlExec(`UPDATE tasks SET created_at = to_timestamp($2) WHERE id = $1`, ids[i], at)
			}
			c := "code_name=" + url.QueryEscape(code.Name)
			Expect(listIDs(c + "&from_time=1893456100")).To(Equal([]string{ids[3], ids[2], ids[1]}))
			Expect(listIDs(c + "&to_time=1893456100")).To(Equal([]string{ids[1], ids[0]}))
			Expect(listIDs(c + "&from_time=1893456100&to_time=1893456200")).To(Equal([]string{ids[2], ids[1]}))
			Expect(listIDs(c + "&to_time=1893456300")).To(HaveLen(4)) // includes the whole second 1893456300
			Expect(listIDs(c + "&from_time=1893456301")).To(BeEmpty())

			Expect(listIDs(c + "&per_page=3")).To(Equal([]string{ids[3], ids[2], ids[1]}))
			Expect(listIDs(c + "&per_page=3&page=1")).To(Equal([]string{ids[0]}))
			Expect(listIDs(c + "&per_page=2&page=1")).To(Equal([]string{ids[1], ids[0]}))
			Expect(listIDs(c + "&per_page=2&page=2")).To(BeEmpty())
		})

		It("answers 400 for bad paging or times", func() {
			for _, q := range []string{"per_page=0", "per_page=101", "page=-1", "page=x", "from_time=yesterday", "to_time=x"} {
				r := iron.Do("GET", iron.Project()+"/tasks?"+q, nil)
				Expect(r.Status).To(Equal(http.StatusBadRequest), q)
				Expect(r.JSON()).To(HaveKey("msg"))
			}
		})
	})

	Describe("GET /tasks/:id/log and /outlog", func() {
		It("answers 404 Log not found until output arrives, then the log as text/plain", func() {
			id := queueOne(code.Name, "")
			for _, suffix := range []string{"/log", "/outlog"} {
				r := iron.Do("GET", iron.Project()+"/tasks/"+id+suffix, "")
				Expect(r.Status).To(Equal(http.StatusNotFound))
				Expect(r.JSON()).To(Equal(map[string]any{"msg": "Log not found"}))
			}

			ctx := context.Background()
			Expect(iron.Store.AppendTaskLog(ctx, id, store.LogStderr, []byte("err 1\n"))).To(Succeed())
			// stderr only so far: the log exists, the stdout log not yet.
			Expect(iron.Do("GET", iron.Project()+"/tasks/"+id+"/outlog", nil).Status).To(Equal(http.StatusNotFound))

			Expect(iron.Store.AppendTaskLog(ctx, id, store.LogStdout, []byte("out 1\n"))).To(Succeed())
			Expect(iron.Store.AppendTaskLog(ctx, id, store.LogStdout, nil)).To(Succeed()) // empty: nothing stored
			Expect(iron.Store.AppendTaskLog(ctx, id, store.LogStderr, []byte("err 2\n"))).To(Succeed())
			Expect(iron.Store.AppendTaskLog(ctx, id, store.LogStdout, []byte("out 2\n"))).To(Succeed())

			r := iron.Do("GET", iron.Project()+"/tasks/"+id+"/log", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.Header.Get("Content-Type")).To(HavePrefix("text/plain"))
			Expect(string(r.Body)).To(Equal("err 1\nout 1\nerr 2\nout 2\n"))

			r = iron.Do("GET", iron.Project()+"/tasks/"+id+"/outlog", "")
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.Header.Get("Content-Type")).To(HavePrefix("text/plain"))
			Expect(string(r.Body)).To(Equal("out 1\nout 2\n"))

			Expect(intOf(getTask(id)["log_size"])).To(BeEquivalentTo(24))
		})

		It("streams a large log whole", func() {
			id := queueOne(code.Name, "")
			chunk := []byte(strings.Repeat("0123456789abcdef", 64<<10)) // 1 MiB
			for range 5 {
				Expect(iron.Store.AppendTaskLog(context.Background(), id, store.LogStdout, chunk)).To(Succeed())
			}
			r := iron.Do("GET", iron.Project()+"/tasks/"+id+"/log", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.Body).To(HaveLen(5 << 20))
		})

		It("answers an empty 200 for a finished task that printed nothing (clients retry 404s forever)", func() {
			id := queueOne(code.Name, "")
			finish(id, "complete")
			r := iron.Do("GET", iron.Project()+"/tasks/"+id+"/log", nil)
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.Header.Get("Content-Type")).To(HavePrefix("text/plain"))
			Expect(r.Body).To(BeEmpty())
		})

		It("refuses a log chunk for a task that does not exist", func() {
			Expect(iron.Store.AppendTaskLog(context.Background(), store.NewID(), store.LogStdout, []byte("x"))).To(MatchError(store.ErrNotFound))
		})
	})

	Describe("POST /tasks/:id/cancel", func() {
		It("cancels a queued task (empty body), idempotently", func() {
			id := queueOne(code.Name, "")
			r := iron.Do("POST", iron.Project()+"/tasks/"+id+"/cancel", "")
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Cancelled"}))
			t := getTask(id)
			Expect(t).To(HaveKeyWithValue("status", "cancelled"))
			Expect(t["end_time"]).To(MatchRegexp(rfc3339Z))
			Expect(t).NotTo(HaveKey("duration")) // it never started

			r = iron.Do("POST", iron.Project()+"/tasks/"+id+"/cancel", "{}")
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Cancelled"}))
		})

		It("cancels a running task", func() {
			id := queueOne(code.Name, "")
			sqlExec(`UPDATE tasks SET status = 'running', start_time = now() WHERE id = $1`, id)
			Expect(iron.Do("POST", iron.Project()+"/tasks/"+id+"/cancel", nil).Status).To(Equal(http.StatusOK))
			t := getTask(id)
			Expect(t).To(HaveKeyWithValue("status", "cancelled"))
			Expect(isInt(t["duration"])).To(BeTrue())
		})

		It("refuses to cancel a finished task and leaves it as it was", func() {
			id := queueOne(code.Name, "")
			finish(id, "complete")
			r := iron.Do("POST", iron.Project()+"/tasks/"+id+"/cancel", "")
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Task has already finished with status complete"}))
			Expect(getTask(id)).To(HaveKeyWithValue("status", "complete"))
		})
	})

	Describe("POST /tasks/:id/progress", func() {
		It("sets percent and msg of a running task", func() {
			id := queueOne(code.Name, "")
			sqlExec(`UPDATE tasks SET status = 'running', start_time = now() WHERE id = $1`, id)
			r := iron.Do("POST", iron.Project()+"/tasks/"+id+"/progress", map[string]any{"percent": 42, "msg": "almost"})
			Expect(r.Status).To(Equal(http.StatusOK))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Progress set"}))
			t := getTask(id)
			Expect(intOf(t["percent"])).To(BeEquivalentTo(42))
			Expect(t).To(HaveKeyWithValue("msg", "almost"))

			// Fields left out stay; an empty body changes nothing.
			Expect(iron.Do("POST", iron.Project()+"/tasks/"+id+"/progress", `{"percent":"50.5"}`).Status).To(Equal(http.StatusOK))
			Expect(iron.Do("POST", iron.Project()+"/tasks/"+id+"/progress", "").Status).To(Equal(http.StatusOK))
			t = getTask(id)
			Expect(intOf(t["percent"])).To(BeEquivalentTo(50))
			Expect(t).To(HaveKeyWithValue("msg", "almost"))
		})

		It("answers 400 for a percent outside 0-100 or an oversized msg", func() {
			id := queueOne(code.Name, "")
			for _, body := range []string{`{"percent":101}`, `{"percent":-1}`, `{"percent":"x"}`,
				`{"msg":"` + strings.Repeat("m", 64<<10+1) + `"}`} {
				r := iron.Do("POST", iron.Project()+"/tasks/"+id+"/progress", body)
				Expect(r.Status).To(Equal(http.StatusBadRequest), body[:12])
				Expect(r.JSON()).To(HaveKey("msg"))
			}
			Expect(getTask(id)).NotTo(HaveKey("percent"))
		})

		It("answers 400 once the task has finished", func() {
			id := queueOne(code.Name, "")
			finish(id, "timeout")
			r := iron.Do("POST", iron.Project()+"/tasks/"+id+"/progress", map[string]any{"percent": 100})
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Task has already finished with status timeout"}))
		})
	})

	Describe("POST /tasks/:id/retry", func() {
		It("queues a copy of a cancelled task, linking both ways", func() {
			id := queueTasks(map[string]any{"code_name": code.Name, "payload": "again", "priority": 2, "timeout": 77,
				"cluster": "big", "label": "lbl", "delay": 9})[0]
			Expect(iron.Do("POST", iron.Project()+"/tasks/"+id+"/cancel", "").Status).To(Equal(http.StatusOK))

			r := iron.Do("POST", iron.Project()+"/tasks/"+id+"/retry", "")
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			body := r.JSON()
			Expect(body).To(HaveKeyWithValue("msg", "Queued up"))
			Expect(body["tasks"]).To(HaveLen(1))
			newID := body["tasks"].([]any)[0].(map[string]any)["id"].(string)
			Expect(newID).To(MatchRegexp(`^[0-9a-f]{24}$`))

			retry := getTask(newID)
			Expect(retry).To(HaveKeyWithValue("status", "queued"))
			Expect(retry).To(HaveKeyWithValue("original_task_id", id))
			Expect(retry).To(HaveKeyWithValue("payload", "again"))
			Expect(retry).To(HaveKeyWithValue("cluster", "big"))
			Expect(retry).To(HaveKeyWithValue("label", "lbl"))
			Expect(retry).To(HaveKeyWithValue("code_name", code.Name))
			Expect(intOf(retry["priority"])).To(BeEquivalentTo(2))
			Expect(intOf(retry["timeout"])).To(BeEquivalentTo(77))
			Expect(intOf(retry["delay"])).To(BeEquivalentTo(0))
			Expect(intOf(retry["retry_count"])).To(BeEquivalentTo(1))
			Expect(retry).NotTo(HaveKey("retry_task_id"))
			Expect(getTask(id)).To(HaveKeyWithValue("retry_task_id", newID))

			// A task gets one retry; the retry can be retried in turn once it finished.
			r = iron.Do("POST", iron.Project()+"/tasks/"+id+"/retry", "")
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Task has already been retried as " + newID}))

			r = iron.Do("POST", iron.Project()+"/tasks/"+newID+"/retry", "")
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Task is queued; only a finished task can be retried"}))

			finish(newID, "error")
			r = iron.Do("POST", iron.Project()+"/tasks/"+newID+"/retry", map[string]any{"delay": 30.5})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			third := getTask(r.JSON()["tasks"].([]any)[0].(map[string]any)["id"].(string))
			Expect(third).To(HaveKeyWithValue("original_task_id", newID))
			Expect(intOf(third["retry_count"])).To(BeEquivalentTo(2))
			Expect(intOf(third["delay"])).To(BeEquivalentTo(30))
		})

		It("runs the retry on the code's latest revision", func() {
			id := queueOne(code.Name, "")
			finish(id, "complete")
			rev2, err := iron.Store.SaveCode(context.Background(), iron.ProjectID, store.CodeUpload{Settings: store.CodeSettings{Name: code.Name, Image: "img:2"}})
			Expect(err).NotTo(HaveOccurred())
			r := iron.Do("POST", iron.Project()+"/tasks/"+id+"/retry", "{}")
			Expect(r.Status).To(Equal(http.StatusOK))
			retry := getTask(r.JSON()["tasks"].([]any)[0].(map[string]any)["id"].(string))
			Expect(retry).To(HaveKeyWithValue("code_rev", "2"))
			Expect(retry).To(HaveKeyWithValue("code_history_id", rev2.LatestRevisionID))
		})

		It("answers 404 when the code was deleted, and 400 for a bad delay, linking nothing", func() {
			id := queueOne(code.Name, "")
			finish(id, "error")
			r := iron.Do("POST", iron.Project()+"/tasks/"+id+"/retry", `{"delay":604801}`)
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "delay must be at most 604800 seconds"}))

			sqlExec(`UPDATE codes SET deleted_at = now() WHERE id = $1`, code.ID)
			r = iron.Do("POST", iron.Project()+"/tasks/"+id+"/retry", "")
			Expect(r.Status).To(Equal(http.StatusNotFound))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "Code not found: " + code.Name}))
			Expect(getTask(id)).NotTo(HaveKey("retry_task_id"))
			Expect(tasksOfCode(code.Name)).To(Equal(1))
		})
	})

	Describe("POST /tasks/webhook", func() {
		It("queues the raw body as the payload", func() {
			raw := "name=value&x=1\n{not json}"
			q := url.Values{"code_name": {code.Name}, "priority": {"1"}, "timeout": {"120"}, "delay": {"3"}, "label": {"hook"}, "cluster": {"big"}}
			r := iron.DoAs("", "POST", iron.Project()+"/tasks/webhook?"+q.Encode()+"&oauth="+iron.Token, raw,
				http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
			Expect(r.Status).To(Equal(http.StatusOK), string(r.Body))
			body := r.JSON()
			Expect(body).To(HaveLen(2))
			Expect(body).To(HaveKeyWithValue("msg", "Queued up."))
			id := body["id"].(string)
			t := getTask(id)
			Expect(t).To(HaveKeyWithValue("payload", raw))
			Expect(t).To(HaveKeyWithValue("label", "hook"))
			Expect(t).To(HaveKeyWithValue("cluster", "big"))
			Expect(intOf(t["priority"])).To(BeEquivalentTo(1))
			Expect(intOf(t["timeout"])).To(BeEquivalentTo(120))
			Expect(intOf(t["delay"])).To(BeEquivalentTo(3))
		})

		It("answers 400 without code_name, 404 for an unknown code, 413 for a body over the payload limit", func() {
			r := iron.Do("POST", iron.Project()+"/tasks/webhook", "x")
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "code_name is required in the query string"}))

			r = iron.Do("POST", iron.Project()+"/tasks/webhook?code_name=missing-"+store.NewID(), "x")
			Expect(r.Status).To(Equal(http.StatusNotFound))
			Expect(r.JSON()["msg"]).To(HavePrefix("Code not found: missing-"))

			r = iron.Do("POST", iron.Project()+"/tasks/webhook?code_name="+url.QueryEscape(code.Name), strings.Repeat("x", iron.Limits.MaxPayloadBytes+1))
			Expect(r.Status).To(Equal(http.StatusRequestEntityTooLarge))
			Expect(r.JSON()).To(HaveKey("msg"))

			r = iron.Do("POST", iron.Project()+"/tasks/webhook?timeout=abc&code_name="+url.QueryEscape(code.Name), "x")
			Expect(r.Status).To(Equal(http.StatusBadRequest))
			Expect(r.JSON()).To(Equal(map[string]any{"msg": "timeout must be a number"}))
			Expect(tasksOfCode(code.Name)).To(Equal(0))
		})
	})
})
