package restapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/machineconfig"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/omaha"
)

// Managed machine configuration per group: operators store versioned
// cloud-config or Ignition documents for a group under /api/v1; agents
// fetch their group's latest document and report what they applied under
// /v1/config, which like the Omaha endpoint takes no token (machines have
// none).

// MaxConfigBytes bounds a config document (and so the request carrying
// it): Ignition inlines file contents as data URLs, so documents are
// larger than the other API bodies, but they are read into memory whole
// and served to every machine of the group.
const MaxConfigBytes = 4 << 20

// maxReportBytes bounds an agent's report; drift summaries are short.
const maxReportBytes = 256 << 10

// maxReportDrift bounds the drift summaries kept per report, so that one
// badly drifted machine cannot bloat the status of its group.
const maxReportDrift = 200

func (h *Handler) configRoutes() {
	h.handle("GET /api/v1/apps/{app}/groups/{name}/config", h.getGroupConfig)
	h.handle("PUT /api/v1/apps/{app}/groups/{name}/config", h.putGroupConfig)
	h.handle("POST /api/v1/apps/{app}/groups/{name}/config", h.putGroupConfig)
	h.handle("GET /api/v1/apps/{app}/groups/{name}/config/history", h.groupConfigHistory)
	h.handle("GET /api/v1/apps/{app}/groups/{name}/config/diff", h.groupConfigDiff)
	h.handle("GET /api/v1/apps/{app}/groups/{name}/config/status", h.groupConfigStatus)
}

func groupConfigToAPI(c store.GroupConfig) v1.GroupConfig {
	return v1.GroupConfig{AppID: c.AppID, Group: c.Group, Version: c.Version, Format: c.Format, SHA256: c.SHA256,
		Size: c.Size, Author: c.Author, Comment: c.Comment, CreatedAt: c.CreatedAt, Document: c.Document}
}

func configReportToAPI(r store.ConfigReport) v1.ConfigReport {
	return v1.ConfigReport{MachineID: r.MachineID, Group: r.Group, Version: r.Version, AppliedAt: r.AppliedAt,
		ReportedAt: r.ReportedAt, Drift: orEmpty(r.Drift), Error: r.Error}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// requireGroup returns 404 for an unknown application or group.
func (h *Handler) requireGroup(r *http.Request) (string, string, error) {
	id, err := h.requireApp(r)
	if err != nil {
		return "", "", err
	}
	name := r.PathValue("name")
	if _, err := h.st.GetGroup(r.Context(), id, name); err != nil {
		return "", "", notFound(err, "group %s", name)
	}
	return id, name, nil
}

// decodeLimited is decode with a caller-chosen body limit.
func decodeLimited(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return badRequest("request body is empty; expected JSON")
		}
		return badRequest("malformed JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("malformed JSON body: trailing data after the object")
	}
	return nil
}

func (h *Handler) putGroupConfig(w http.ResponseWriter, r *http.Request) error {
	id, name, err := h.requireGroup(r)
	if err != nil {
		return err
	}
	var in v1.PutGroupConfig
	// The JSON envelope escapes some bytes, so allow it a little more
	// than the document itself.
	if err := decodeLimited(w, r, MaxConfigBytes*2, &in); err != nil {
		return err
	}
	if len(in.Document) > MaxConfigBytes {
		return errorf(http.StatusRequestEntityTooLarge, v1.KindTooLarge, "document is %d bytes, over the limit of %d", len(in.Document), MaxConfigBytes)
	}
	if strings.TrimSpace(in.Document) == "" {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "document is empty")
	}
	// Validating here, before anything is stored, keeps a typo from
	// reaching every machine of the group: agents would only find it when
	// applying, each on its own.
	cfg, rep := machineconfig.Validate([]byte(in.Document))
	if rep.HasErrors() {
		var lines []string
		for _, e := range rep.Errors() {
			lines = append(lines, e.String())
		}
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "document has %d error(s):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	prev, err := h.st.GetGroupConfig(r.Context(), id, name, 0)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	v, err := h.st.PutGroupConfig(r.Context(), store.GroupConfig{AppID: id, Group: name, Document: in.Document,
		Format: string(cfg.Format), Author: actor(r.Context()), Comment: in.Comment, CreatedAt: h.now().UTC()})
	if err != nil {
		return notFound(err, "group %s", name)
	}
	c, err := h.st.GetGroupConfig(r.Context(), id, name, v)
	if err != nil {
		return err
	}
	out := groupConfigToAPI(c)
	out.Document = ""
	out.Unchanged = prev.Version == v
	if !out.Unchanged {
		// The version is stored: log it even if the client has gone.
		h.recordConfigChange(context.WithoutCancel(r.Context()), c)
	}
	for _, e := range rep.Warnings() {
		out.Warnings = append(out.Warnings, e.String())
	}
	status := http.StatusCreated
	if out.Unchanged {
		status = http.StatusOK
	}
	writeJSON(w, status, out)
	return nil
}

// recordConfigChange adds a config-changed entry to the activity log (and
// so to the dashboard's live streams) for a newly stored version. The
// version is stored already, so a failure to log it is only logged.
func (h *Handler) recordConfigChange(ctx context.Context, c store.GroupConfig) {
	msg := fmt.Sprintf("machine config of group %s changed to version %d", c.Group, c.Version)
	if c.Author != "" {
		msg += " by " + c.Author
	}
	if c.Comment != "" {
		msg += ": " + c.Comment
	}
	err := h.svc.RecordActivity(ctx, store.Activity{AppID: c.AppID, Group: c.Group, Kind: store.ActivityConfigChanged,
		Severity: store.SeverityInfo, Message: msg, At: h.now().UTC()})
	if err != nil {
		h.log.Warn("cannot record config change", "app", c.AppID, "group", c.Group, "version", c.Version, "err", err)
	}
}

// queryVersion reads a version query parameter: a positive number, or
// "" / "latest" for 0.
func queryVersion(r *http.Request, name string) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" || s == "latest" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, badRequest("%s %q: want a version number (1, 2, …) or latest", name, s)
	}
	return n, nil
}

func (h *Handler) getGroupConfig(w http.ResponseWriter, r *http.Request) error {
	id, name, err := h.requireGroup(r)
	if err != nil {
		return err
	}
	if err := checkQuery(r, "version"); err != nil {
		return err
	}
	v, err := queryVersion(r, "version")
	if err != nil {
		return err
	}
	c, err := h.st.GetGroupConfig(r.Context(), id, name, v)
	if err != nil {
		if v == 0 {
			return notFound(err, "config of group %s", name)
		}
		return notFound(err, "config version %d of group %s", v, name)
	}
	writeJSON(w, http.StatusOK, groupConfigToAPI(c))
	return nil
}

func (h *Handler) groupConfigHistory(w http.ResponseWriter, r *http.Request) error {
	id, name, err := h.requireGroup(r)
	if err != nil {
		return err
	}
	cs, err := h.st.ListGroupConfigs(r.Context(), id, name)
	if err != nil {
		return notFound(err, "group %s", name)
	}
	writeList(w, cs, groupConfigToAPI)
	return nil
}

func (h *Handler) groupConfigDiff(w http.ResponseWriter, r *http.Request) error {
	id, name, err := h.requireGroup(r)
	if err != nil {
		return err
	}
	if err := checkQuery(r, "from", "to"); err != nil {
		return err
	}
	from, err := queryVersion(r, "from")
	if err != nil {
		return err
	}
	to, err := queryVersion(r, "to")
	if err != nil {
		return err
	}
	a, err := h.st.GetGroupConfig(r.Context(), id, name, from)
	if err != nil {
		return notFound(err, "config version %d of group %s", from, name)
	}
	b, err := h.st.GetGroupConfig(r.Context(), id, name, to)
	if err != nil {
		return notFound(err, "config version %d of group %s", to, name)
	}
	d := machineconfig.UnifiedDiff(fmt.Sprintf("%s version %d", name, a.Version), fmt.Sprintf("%s version %d", name, b.Version),
		[]byte(a.Document), []byte(b.Document))
	writeJSON(w, http.StatusOK, v1.GroupConfigDiff{From: a.Version, To: b.Version, Diff: d})
	return nil
}

func (h *Handler) groupConfigStatus(w http.ResponseWriter, r *http.Request) error {
	id, name, err := h.requireGroup(r)
	if err != nil {
		return err
	}
	out := v1.GroupConfigStatus{AppID: id, Group: name, ByVersion: map[string]int{}, Machines: []v1.ConfigReport{}}
	latest, err := h.st.GetGroupConfig(r.Context(), id, name, 0)
	switch {
	case err == nil:
		out.Latest = latest.Version
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	reps, err := h.st.ListConfigReports(r.Context(), id, name)
	if err != nil {
		return err
	}
	for _, rep := range reps {
		out.ByVersion[strconv.Itoa(rep.Version)]++
		if out.Latest > 0 && rep.Version == out.Latest {
			out.OnLatest++
		}
		if len(rep.Drift) > 0 {
			out.Drifted++
		}
		if rep.Error != "" {
			out.Failed++
		}
		out.Machines = append(out.Machines, configReportToAPI(rep))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// AgentConfigHandler serves the agent-facing config endpoints, to be
// mounted at /v1/config/ without authentication:
//
//	GET  /v1/config/{app}/{group}         the group's latest document (ETag, If-None-Match → 304)
//	POST /v1/config/{app}/{group}/report  the machine's applied version and drift
//
// {group} is what the machine has as GROUP in update.conf: the group's
// track, as in Omaha requests, or else its name.
func (h *Handler) AgentConfigHandler() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, fn handlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := fn(w, r); err != nil {
				h.writeError(w, r, err)
			}
		})
	}
	handle("GET /v1/config/{app}/{group}", h.agentGetConfig)
	handle("POST /v1/config/{app}/{group}/report", h.agentReport)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, errorf(http.StatusNotFound, v1.KindNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// agentGroup resolves the {app} and {group} of an agent request.
func (h *Handler) agentGroup(r *http.Request) (store.Group, error) {
	id, err := appID(r)
	if err != nil {
		return store.Group{}, err
	}
	track := r.PathValue("group")
	if name, ok := omaha.LegacyTrack(track); ok {
		track = name
	}
	g, err := h.st.GetGroupByTrack(r.Context(), id, track)
	if errors.Is(err, store.ErrNotFound) {
		g, err = h.st.GetGroup(r.Context(), id, track)
	}
	if err != nil {
		return store.Group{}, notFound(err, "group %s of application %s", track, id)
	}
	return g, nil
}

func (h *Handler) agentGetConfig(w http.ResponseWriter, r *http.Request) error {
	g, err := h.agentGroup(r)
	if err != nil {
		return err
	}
	c, err := h.st.GetGroupConfig(r.Context(), g.AppID, g.Name, 0)
	if err != nil {
		return notFound(err, "config of group %s", g.Name)
	}
	etag := `"` + c.SHA256 + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeJSON(w, http.StatusOK, v1.AgentConfig{AppID: c.AppID, Group: c.Group, Version: c.Version, Format: c.Format,
		SHA256: c.SHA256, Document: c.Document})
	return nil
}

// etagMatch implements If-None-Match's weak comparison over a list.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// validMachineID accepts what agents send: the machine-id (32 hex
// digits) or another short identifier, lower case.
var validMachineID = regexp.MustCompile(`^[0-9a-z][0-9a-z._-]{0,127}$`)

func (h *Handler) agentReport(w http.ResponseWriter, r *http.Request) error {
	g, err := h.agentGroup(r)
	if err != nil {
		return err
	}
	var in v1.AgentConfigReport
	if err := decodeLimited(w, r, maxReportBytes, &in); err != nil {
		return err
	}
	mid := strings.ToLower(strings.Trim(strings.TrimSpace(in.MachineID), "{}"))
	if !validMachineID.MatchString(mid) {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "machine_id %q: want 1–128 characters of 0-9, a-z, '.', '_', '-'", in.MachineID)
	}
	if in.Version < 0 {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "version %d: want ≥ 0", in.Version)
	}
	drift := in.Drift
	if len(drift) > maxReportDrift {
		drift = append(drift[:maxReportDrift:maxReportDrift], fmt.Sprintf("… and %d more", len(in.Drift)-maxReportDrift))
	}
	now := h.now().UTC()
	rep := store.ConfigReport{AppID: g.AppID, MachineID: mid, Group: g.Name, Version: in.Version,
		AppliedAt: in.AppliedAt.UTC(), Drift: drift, Error: truncate(in.Error, 4096), ReportedAt: now}
	if in.AppliedAt.IsZero() {
		rep.AppliedAt = time.Time{}
	}
	if err := h.st.PutConfigReport(r.Context(), rep); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
