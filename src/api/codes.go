package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gin-gonic/gin"

	"github.com/ironcf/ironworker-release/src/store"
)

// ---- wire types ----

// codeJSON is the Code object of GET /codes and GET /codes/:id. Optional fields are
// omitted when unset; every number is a JSON integer and every time RFC 3339 UTC.
type codeJSON struct {
	ID              string            `json:"id"`
	ProjectID       string            `json:"project_id"`
	Name            string            `json:"name"`
	CreatedAt       string            `json:"created_at"`
	UpdatedAt       string            `json:"updated_at"`
	Rev             int               `json:"rev"`
	LatestHistoryID string            `json:"latest_history_id"`
	LatestChange    string            `json:"latest_change"`
	LatestChecksum  string            `json:"latest_checksum,omitempty"`
	CodeSize        *int64            `json:"code_size,omitempty"`
	Image           string            `json:"image,omitempty"`
	Command         string            `json:"command,omitempty"`
	Runtime         string            `json:"runtime,omitempty"`
	Stack           string            `json:"stack,omitempty"`
	FileName        string            `json:"file_name,omitempty"`
	Config          *string           `json:"config,omitempty"`
	EnvVars         map[string]string `json:"env_vars,omitempty"`
	MaxConcurrency  *int              `json:"max_concurrency,omitempty"`
	Retries         int               `json:"retries"`
	RetriesDelay    int               `json:"retries_delay"`
	DefaultPriority *int              `json:"default_priority,omitempty"`
	Paused          bool              `json:"paused"`
}

func codeOut(c store.Code) codeJSON {
	st := c.Revision.Settings
	return codeJSON{
		ID:              c.ID,
		ProjectID:       c.ProjectID,
		Name:            c.Name,
		CreatedAt:       timeString(c.CreatedAt),
		UpdatedAt:       timeString(c.UpdatedAt),
		Rev:             c.Rev,
		LatestHistoryID: c.LatestRevisionID,
		LatestChange:    timeString(c.UpdatedAt),
		LatestChecksum:  c.Revision.Checksum,
		CodeSize:        c.Revision.ArchiveSize,
		Image:           st.Image,
		Command:         st.Command,
		Runtime:         st.Runtime,
		Stack:           st.Stack,
		FileName:        st.FileName,
		Config:          st.Config,
		EnvVars:         st.EnvVars,
		MaxConcurrency:  c.EffectiveMaxConcurrency(),
		Retries:         st.Retries,
		RetriesDelay:    st.RetriesDelay,
		DefaultPriority: st.DefaultPriority,
		Paused:          c.Paused,
	}
}

// revisionJSON is one entry of GET /codes/:id/revisions: what that upload said.
type revisionJSON struct {
	ID              string            `json:"id"`
	CodeID          string            `json:"code_id"`
	ProjectID       string            `json:"project_id"`
	Name            string            `json:"name"`
	CreatedAt       string            `json:"created_at"`
	Rev             int               `json:"rev"`
	Checksum        string            `json:"checksum,omitempty"`
	CodeSize        *int64            `json:"code_size,omitempty"`
	Image           string            `json:"image,omitempty"`
	Command         string            `json:"command,omitempty"`
	Runtime         string            `json:"runtime,omitempty"`
	Stack           string            `json:"stack,omitempty"`
	FileName        string            `json:"file_name,omitempty"`
	Config          *string           `json:"config,omitempty"`
	EnvVars         map[string]string `json:"env_vars,omitempty"`
	MaxConcurrency  *int              `json:"max_concurrency,omitempty"`
	Retries         int               `json:"retries"`
	RetriesDelay    int               `json:"retries_delay"`
	DefaultPriority *int              `json:"default_priority,omitempty"`
}

func revisionOut(r store.CodeRevision) revisionJSON {
	st := r.Settings
	return revisionJSON{
		ID:              r.ID,
		CodeID:          r.CodeID,
		ProjectID:       r.ProjectID,
		Name:            r.Name,
		CreatedAt:       timeString(r.CreatedAt),
		Rev:             r.Rev,
		Checksum:        r.Checksum,
		CodeSize:        r.ArchiveSize,
		Image:           st.Image,
		Command:         st.Command,
		Runtime:         st.Runtime,
		Stack:           st.Stack,
		FileName:        st.FileName,
		Config:          st.Config,
		EnvVars:         st.EnvVars,
		MaxConcurrency:  st.MaxConcurrency,
		Retries:         st.Retries,
		RetriesDelay:    st.RetriesDelay,
		DefaultPriority: st.DefaultPriority,
	}
}

// codeData is the `data` field of an upload, read as leniently as real clients need:
// ironcli sends "default_priority":-1000 / -3 and "max_concurrency":-1 for "unset",
// Python sends nulls, extra keys (host, content_type, …) are ignored.
type codeData struct {
	Name            *flexString           `json:"name"`
	Image           flexString            `json:"image"`
	Command         flexString            `json:"command"`
	Runtime         flexString            `json:"runtime"`
	Stack           flexString            `json:"stack"`
	FileName        flexString            `json:"file_name"`
	Config          configText            `json:"config"`
	EnvVars         map[string]flexString `json:"env_vars"`
	MaxConcurrency  flexInt               `json:"max_concurrency"`
	Retries         flexInt               `json:"retries"`
	RetriesDelay    flexInt               `json:"retries_delay"`
	DefaultPriority flexInt               `json:"default_priority"`
}

// configText is the config string; a JSON object or array sent instead is kept as its
// JSON text, null and "" mean none.
type configText struct {
	Value string
	Set   bool
}

func (t *configText) UnmarshalJSON(b []byte) error {
	trimmed := bytes.TrimSpace(b)
	if string(trimmed) == "null" {
		*t = configText{}
		return nil
	}
	var s string
	if err := json.Unmarshal(trimmed, &s); err == nil {
		*t = configText{Value: s, Set: s != ""}
		return nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, trimmed); err != nil {
		return &flexError{msg: "config must be a string"}
	}
	*t = configText{Value: compact.String(), Set: true}
	return nil
}

const maxCodeNameBytes = 255

// codeSettings validates an upload's data into store settings.
func (s *Server) codeSettings(raw []byte) (store.CodeSettings, *inputError) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return store.CodeSettings{}, badRequest(`The "data" field is empty; it must be a JSON object with at least "name"`)
	}
	var d codeData
	if err := json.Unmarshal(raw, &d); err != nil {
		return store.CodeSettings{}, badRequest(`The "data" field is not valid JSON: %s`, jsonErrorText(err))
	}
	if d.Name == nil || strings.TrimSpace(string(*d.Name)) == "" {
		return store.CodeSettings{}, badRequest(`"name" is required in "data"`)
	}
	name := string(*d.Name)
	if len(name) > maxCodeNameBytes {
		return store.CodeSettings{}, badRequest(`"name" must be at most %d bytes`, maxCodeNameBytes)
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return store.CodeSettings{}, badRequest(`"name" must not contain control characters`)
	}
	st := store.CodeSettings{
		Name:     name,
		Image:    strings.TrimSpace(string(d.Image)),
		Command:  string(d.Command),
		Runtime:  string(d.Runtime),
		Stack:    string(d.Stack),
		FileName: string(d.FileName),
	}
	if d.Config.Set {
		if len(d.Config.Value) > s.limits.MaxConfigBytes {
			return store.CodeSettings{}, &inputError{status: http.StatusRequestEntityTooLarge,
				msg: fmt.Sprintf("config is %d bytes; the limit is %d bytes", len(d.Config.Value), s.limits.MaxConfigBytes)}
		}
		cfg := d.Config.Value
		st.Config = &cfg
	}
	if len(d.EnvVars) > 0 {
		st.EnvVars = make(map[string]string, len(d.EnvVars))
		for k, v := range d.EnvVars {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return store.CodeSettings{}, badRequest(`env_vars: %q is not a valid variable name`, k)
			}
			if strings.ContainsRune(string(v), 0) {
				return store.CodeSettings{}, badRequest(`env_vars: the value of %q contains a NUL byte`, k)
			}
			st.EnvVars[k] = string(v)
		}
	}
	// Unset, 0 and negative (ironcli's default -1) all mean unlimited. Pausing is done with
	// pause_task_queue, never by an upload.
	if d.MaxConcurrency.Set && d.MaxConcurrency.Value > 0 {
		m := d.MaxConcurrency.Value
		st.MaxConcurrency = &m
	}
	if d.Retries.Set {
		if d.Retries.Value < 0 || d.Retries.Value > s.limits.MaxRetries {
			return store.CodeSettings{}, badRequest("retries must be from 0 to %d", s.limits.MaxRetries)
		}
		st.Retries = d.Retries.Value
	}
	if d.RetriesDelay.Set {
		if d.RetriesDelay.Value < 0 {
			return store.CodeSettings{}, badRequest("retries_delay must not be negative")
		}
		st.RetriesDelay = d.RetriesDelay.Value
	}
	st.DefaultPriority = priorityOf(d.DefaultPriority)
	return st, nil
}

// ---- upload ----

var errNoCodeSource = badRequest(`Either "image" in "data" or a "file" part with a zip archive is required`)

// uploadCode handles POST /codes: multipart/form-data with a `data` JSON part and an
// optional `file` zip part. The zip streams into the store (no Content-Length needed);
// if `file` comes before `data` it is spooled to a bounded temp file first. A plain JSON
// body is accepted too, as an image-only registration.
func (s *Server) uploadCode(c *gin.Context) {
	mr, err := c.Request.MultipartReader()
	if errors.Is(err, http.ErrNotMultipart) {
		if mt, _, _ := mime.ParseMediaType(c.ContentType()); mt == "application/json" {
			s.registerImageJSON(c)
			return
		}
		abortMsg(c, http.StatusBadRequest, `Content-Type must be multipart/form-data with a "data" JSON part and an optional "file" zip part`)
		return
	}
	if err != nil {
		abortMsg(c, http.StatusBadRequest, "Malformed multipart body: "+err.Error())
		return
	}

	var settings *store.CodeSettings
	var spool *os.File
	defer func() {
		if spool != nil {
			spool.Close()
			os.Remove(spool.Name())
		}
	}()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			abortMsg(c, http.StatusBadRequest, "Malformed multipart body: "+err.Error())
			return
		}
		switch part.FormName() {
		case "data":
			if settings != nil {
				abortMsg(c, http.StatusBadRequest, `The "data" part appears more than once`)
				return
			}
			raw, err := io.ReadAll(io.LimitReader(part, s.limits.MaxRequestBytes+1))
			if err != nil {
				abortMsg(c, http.StatusBadRequest, `Could not read the "data" part: `+err.Error())
				return
			}
			if int64(len(raw)) > s.limits.MaxRequestBytes {
				abortMsg(c, http.StatusRequestEntityTooLarge, fmt.Sprintf(`The "data" part is larger than %d bytes`, s.limits.MaxRequestBytes))
				return
			}
			st, ierr := s.codeSettings(raw)
			if ierr != nil {
				abortInput(c, ierr)
				return
			}
			settings = &st
		case "file":
			if spool != nil {
				abortMsg(c, http.StatusBadRequest, `The "file" part appears more than once`)
				return
			}
			if settings != nil {
				// The usual order: data, then the zip, streamed straight into the store.
				s.saveUpload(c, *settings, part)
				return
			}
			if spool, err = s.spoolArchive(c, part); err != nil {
				return
			}
		default:
			if _, err := io.Copy(io.Discard, part); err != nil {
				abortMsg(c, http.StatusBadRequest, "Malformed multipart body: "+err.Error())
				return
			}
		}
		part.Close()
	}
	if settings == nil {
		abortMsg(c, http.StatusBadRequest, `The "data" part is required: a JSON object with at least "name"`)
		return
	}
	if spool != nil {
		if _, err := spool.Seek(0, io.SeekStart); err != nil {
			s.fail(c, fmt.Errorf("rewind spooled archive: %w", err))
			return
		}
		s.saveUpload(c, *settings, spool)
		return
	}
	s.saveUpload(c, *settings, nil)
}

// saveUpload is saveCode, or the test hook that stands in for the store.
func (s *Server) saveUpload(c *gin.Context, st store.CodeSettings, archive io.Reader) {
	if s.saveHook != nil {
		s.saveHook(c, st, archive)
		return
	}
	s.saveCode(c, st, archive)
}

// registerImageJSON handles a non-multipart upload: the body is the data object.
func (s *Server) registerImageJSON(c *gin.Context) {
	raw, err := readBody(c, s.limits.MaxRequestBytes)
	if errors.Is(err, errTooLarge) {
		abortMsg(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body is larger than %d bytes", s.limits.MaxRequestBytes))
		return
	}
	if err != nil {
		abortMsg(c, http.StatusBadRequest, "Could not read the request body")
		return
	}
	st, ierr := s.codeSettings(raw)
	if ierr != nil {
		abortInput(c, ierr)
		return
	}
	s.saveUpload(c, st, nil)
}

// spoolArchive copies a `file` part that came before `data` into a temp file, at most
// MaxCodeSizeBytes. On failure it has answered the client and returns an error.
func (s *Server) spoolArchive(c *gin.Context, part io.Reader) (*os.File, error) {
	f, err := os.CreateTemp("", "iron-code-*.zip")
	if err != nil {
		s.fail(c, fmt.Errorf("spool archive: %w", err))
		return nil, err
	}
	n, err := io.Copy(f, io.LimitReader(part, s.limits.MaxCodeSizeBytes+1))
	if err == nil && n > s.limits.MaxCodeSizeBytes {
		err = store.ErrArchiveTooLarge
		s.abortTooLarge(c)
	} else if err != nil {
		abortMsg(c, http.StatusBadRequest, "Could not read the uploaded file: "+err.Error())
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

func (s *Server) abortTooLarge(c *gin.Context) {
	abortMsg(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("Code package is larger than the limit of %d bytes", s.limits.MaxCodeSizeBytes))
}

// trackedReader remembers the first read error other than io.EOF, to tell a client that
// broke off its upload (400) from a database failure (5xx).
type trackedReader struct {
	r   io.Reader
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

// saveCode stores the upload; archive may be nil (image only). An empty file counts as
// no file.
func (s *Server) saveCode(c *gin.Context, st store.CodeSettings, archive io.Reader) {
	var tracked *trackedReader
	if archive != nil {
		br := bufio.NewReaderSize(archive, 64<<10)
		if _, err := br.Peek(1); err == io.EOF {
			archive = nil
		} else if err != nil {
			abortMsg(c, http.StatusBadRequest, "Could not read the uploaded file: "+err.Error())
			return
		} else {
			tracked = &trackedReader{r: br}
			archive = tracked
		}
	}
	if archive == nil && st.Image == "" {
		abortInput(c, errNoCodeSource)
		return
	}
	code, err := s.store.SaveCode(c.Request.Context(), projectID(c), store.CodeUpload{Settings: st, Archive: archive, MaxArchiveSz: s.limits.MaxCodeSizeBytes})
	switch {
	case errors.Is(err, store.ErrArchiveTooLarge):
		s.abortTooLarge(c)
		return
	case err != nil && tracked != nil && tracked.err != nil:
		if c.Request.Context().Err() != nil {
			c.Abort() // the client went away mid-upload; nothing was stored
			return
		}
		abortMsg(c, http.StatusBadRequest, "Could not read the uploaded file: "+tracked.err.Error())
		return
	case err != nil:
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": code.ID, "msg": "Upload successful."})
}

// ---- reading ----

// codeID reads :code_id; a malformed id answers 404 like an unknown one.
func codeID(c *gin.Context) (string, bool) {
	id := c.Param("code_id")
	if !store.ValidID(id) {
		abortCodeNotFound(c)
		return "", false
	}
	return id, true
}

func abortCodeNotFound(c *gin.Context) { abortMsg(c, http.StatusNotFound, "Code not found") }

// codeFailed answers a store error: 404 for ErrNotFound, else fail.
func (s *Server) codeFailed(c *gin.Context, err error) {
	if errors.Is(err, store.ErrNotFound) {
		abortCodeNotFound(c)
		return
	}
	s.fail(c, err)
}

func (s *Server) listCodes(c *gin.Context) {
	offset, limit, ok := paging(c)
	if !ok {
		return
	}
	codes, err := s.store.ListCodes(c.Request.Context(), projectID(c), offset, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]codeJSON, 0, len(codes))
	for _, code := range codes {
		out = append(out, codeOut(code))
	}
	c.JSON(http.StatusOK, gin.H{"codes": out})
}

func (s *Server) getCode(c *gin.Context) {
	id, ok := codeID(c)
	if !ok {
		return
	}
	code, err := s.store.GetCode(c.Request.Context(), projectID(c), id)
	if err != nil {
		s.codeFailed(c, err)
		return
	}
	c.JSON(http.StatusOK, codeOut(code))
}

func (s *Server) listCodeRevisions(c *gin.Context) {
	id, ok := codeID(c)
	if !ok {
		return
	}
	offset, limit, ok := paging(c)
	if !ok {
		return
	}
	revs, err := s.store.ListCodeRevisions(c.Request.Context(), projectID(c), id, offset, limit)
	if err != nil {
		s.codeFailed(c, err)
		return
	}
	out := make([]revisionJSON, 0, len(revs))
	for _, r := range revs {
		out = append(out, revisionOut(r))
	}
	c.JSON(http.StatusOK, gin.H{"revisions": out})
}

// archiveFileName is `<name>_<rev>.zip` with every character but letters, digits, `.`,
// `-` and `_` replaced by `_` (names like `user/image:tag` are common).
func archiveFileName(name string, rev int) string {
	safe := strings.Map(func(r rune) rune {
		if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '-' || r == '_') {
			return r
		}
		return '_'
	}, name)
	return fmt.Sprintf("%s_%d.zip", safe, rev)
}

func (s *Server) downloadCode(c *gin.Context) {
	id, ok := codeID(c)
	if !ok {
		return
	}
	rev := 0
	if v := c.Query("revision"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			abortMsg(c, http.StatusBadRequest, "revision must be a positive integer")
			return
		}
		rev = n
	}
	r, err := s.store.GetCodeRevision(c.Request.Context(), projectID(c), id, rev)
	if errors.Is(err, store.ErrNotFound) && rev > 0 {
		if _, err := s.store.GetCode(c.Request.Context(), projectID(c), id); err != nil {
			s.codeFailed(c, err)
			return
		}
		abortMsg(c, http.StatusNotFound, fmt.Sprintf("Code has no revision %d", rev))
		return
	}
	if err != nil {
		s.codeFailed(c, err)
		return
	}
	if r.ArchiveSize == nil {
		abortMsg(c, http.StatusNotFound, "Code has no archive")
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "application/zip")
	h.Set("Content-Disposition", "attachment; filename="+archiveFileName(r.Name, r.Rev))
	h.Set("Content-Length", strconv.FormatInt(*r.ArchiveSize, 10))
	c.Status(http.StatusOK)
	n, err := s.store.WriteArchive(c.Request.Context(), r.ID, c.Writer)
	if err != nil {
		if n == 0 && !c.Writer.Written() {
			h.Del("Content-Length")
			h.Del("Content-Disposition")
			s.fail(c, err)
			return
		}
		// Headers are gone: the short body (under Content-Length) tells the client.
		s.log.Warn("code download broken off", "code_id", id, "revision_id", r.ID, "written", n, "error", err.Error())
		c.Abort()
	}
}

// codeStats counts the code's tasks by status over [start_date, end_date] (epoch
// seconds); the default window is the last 24 hours.
func (s *Server) codeStats(c *gin.Context) {
	id, ok := codeID(c)
	if !ok {
		return
	}
	start, ok := epochQuery(c, "start_date")
	if !ok {
		return
	}
	end, ok := epochQuery(c, "end_date")
	if !ok {
		return
	}
	var to *time.Time
	if end != nil {
		t := end.Add(time.Second) // end_date is inclusive of its second
		to = &t
	}
	var from time.Time
	switch {
	case start != nil:
		from = *start
	case end != nil:
		from = end.Add(-24 * time.Hour)
	default:
		from = s.now().Add(-24 * time.Hour)
	}
	if to != nil && !from.Before(*to) {
		abortMsg(c, http.StatusBadRequest, "start_date must not be after end_date")
		return
	}
	counts, err := s.store.CodeTaskCounts(c.Request.Context(), projectID(c), id, from, to)
	if err != nil {
		s.codeFailed(c, err)
		return
	}
	c.JSON(http.StatusOK, counts)
}

// ---- changes ----

func (s *Server) deleteCode(c *gin.Context) {
	id, ok := codeID(c)
	if !ok {
		return
	}
	if _, err := s.store.DeleteCode(c.Request.Context(), projectID(c), id); err != nil {
		s.codeFailed(c, err)
		return
	}
	c.JSON(http.StatusOK, msgBody{Msg: "Deleted"})
}

func (s *Server) pauseCode(c *gin.Context)  { s.setPaused(c, true, "Paused") }
func (s *Server) resumeCode(c *gin.Context) { s.setPaused(c, false, "Resumed") }

// setPaused ignores the body: clients send none, `{}` or form data.
func (s *Server) setPaused(c *gin.Context, paused bool, msg string) {
	id, ok := codeID(c)
	if !ok {
		return
	}
	if err := s.store.SetCodePaused(c.Request.Context(), projectID(c), id, paused); err != nil {
		s.codeFailed(c, err)
		return
	}
	c.JSON(http.StatusOK, msgBody{Msg: msg})
}

// cancelAllTasks cancels every queued, preparing and running task of the code.
func (s *Server) cancelAllTasks(c *gin.Context) {
	id, ok := codeID(c)
	if !ok {
		return
	}
	n, err := s.store.CancelCodeTasks(c.Request.Context(), projectID(c), id)
	if err != nil {
		s.codeFailed(c, err)
		return
	}
	noun := "tasks"
	if n == 1 {
		noun = "task"
	}
	c.JSON(http.StatusOK, gin.H{"msg": fmt.Sprintf("Cancelled %d %s", n, noun), "cancelled": n})
}
