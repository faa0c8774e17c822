package dashboard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla/flotilla/internal/rebootlock"
	"github.com/flotilla/flotilla/internal/rollout"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

// pageSize is the number of instances per page of the group page.
const pageSize = 50

// lockTimeout bounds reboot-lock reads so an etcd problem slows a page by
// at most this much.
const lockTimeout = 2 * time.Second

// statusInfo is how a status is shown: a text label and a symbol besides
// the color, so the badge does not depend on color vision.
type statusInfo struct {
	Label, Symbol, Class string
}

var statusInfos = map[store.Status]statusInfo{
	store.StatusIdle:        {"idle", "○", "idle"},
	store.StatusOnHold:      {"on hold", "‖", "onhold"},
	store.StatusGranted:     {"granted", "…", "progress"},
	store.StatusDownloading: {"downloading", "…", "progress"},
	store.StatusDownloaded:  {"downloaded", "…", "progress"},
	store.StatusInstalled:   {"installed, waiting for reboot", "↻", "installed"},
	store.StatusComplete:    {"complete", "✓", "complete"},
	store.StatusError:       {"error", "✗", "error"},
	store.StatusRolledBack:  {"rolled back", "↩", "rolledback"},
	store.StatusTimedOut:    {"timed out", "⊘", "timedout"},
}

func badge(s store.Status) statusInfo {
	if i, ok := statusInfos[s]; ok {
		return i
	}
	return statusInfo{string(s), "?", "idle"}
}

// barCategory groups statuses into one segment of the rollout bar.
type barCategory struct {
	statusInfo
	statuses []store.Status
}

var barCategories = []barCategory{
	{statusInfo{"complete", "✓", "complete"}, []store.Status{store.StatusComplete}},
	{statusInfo{"in progress", "…", "progress"}, []store.Status{store.StatusGranted, store.StatusDownloading, store.StatusDownloaded}},
	{statusInfo{"installed, waiting for reboot", "↻", "installed"}, []store.Status{store.StatusInstalled}},
	{statusInfo{"on hold", "‖", "onhold"}, []store.Status{store.StatusOnHold}},
	{statusInfo{"error", "✗", "error"}, []store.Status{store.StatusError}},
	{statusInfo{"rolled back", "↩", "rolledback"}, []store.Status{store.StatusRolledBack}},
	{statusInfo{"timed out", "⊘", "timedout"}, []store.Status{store.StatusTimedOut}},
	{statusInfo{"idle", "○", "idle"}, []store.Status{store.StatusIdle}},
}

// segment is one part of a rollout bar; X and W are percentages.
type segment struct {
	statusInfo
	Count   int
	Percent float64
	X, W    float64
}

// bar is a rollout progress bar drawn as SVG on the server.
type bar struct {
	Total    int
	Segments []segment // non-empty categories only
	Legend   []segment // every category, for the text legend
	Summary  string    // text alternative
}

func newBar(rs store.RolloutStatus) bar {
	b := bar{Total: rs.Total}
	x := 0.0
	var parts []string
	for _, c := range barCategories {
		n := 0
		for _, s := range c.statuses {
			n += rs.ByStatus[s]
		}
		sg := segment{statusInfo: c.statusInfo, Count: n}
		if rs.Total > 0 {
			sg.Percent = float64(n) * 100 / float64(rs.Total)
		}
		sg.X, sg.W = x, sg.Percent
		x += sg.Percent
		b.Legend = append(b.Legend, sg)
		if n > 0 {
			b.Segments = append(b.Segments, sg)
			parts = append(parts, fmt.Sprintf("%d %s", n, c.Label))
		}
	}
	if rs.Total == 0 {
		b.Summary = "no machines"
	} else {
		b.Summary = fmt.Sprintf("%d machines: %s", rs.Total, strings.Join(parts, ", "))
	}
	return b
}

var funcs = template.FuncMap{
	"badge": func(s store.Status) statusInfo { return badge(s) },
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := time.Since(t)
		switch {
		case d < 0:
			return "just now"
		case d < time.Minute:
			return fmt.Sprintf("%ds ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%dm ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%dh ago", int(d.Hours()))
		}
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	},
	"dur":      fmtDuration,
	"pct":      func(f float64) string { return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) },
	"svgnum":   func(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) },
	"groupURL": groupURL,
	"int64":    func(n int) int64 { return int64(n) },
	"fieldArgs": func(name, label, value, hint string, errs map[string]string) map[string]string {
		return map[string]string{"Name": name, "Label": label, "Value": value, "Hint": hint, "Err": errs[name]}
	},
	"instURL": instanceURL,
	"pkgURL":  packagesURL,
	"promURL": promoteURL,
	"size":    sizeText,
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	},
	"orDash": func(s string) string {
		if s == "" {
			return "—"
		}
		return s
	},
	"sevSymbol": func(s store.Severity) string {
		switch s {
		case store.SeveritySuccess:
			return "✓"
		case store.SeverityWarning:
			return "⚠"
		case store.SeverityError:
			return "✗"
		}
		return "ℹ"
	},
}

func groupURL(app, group string) string {
	return "/apps/" + url.PathEscape(app) + "/groups/" + url.PathEscape(group)
}

func instanceURL(app, id string) string {
	return "/apps/" + url.PathEscape(app) + "/instances/" + url.PathEscape(id)
}

// fmtDuration prints a duration the way an operator types it ("24h",
// "1h30m"), and "0" for none.
func fmtDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// alert is a notice at the top of the overview.
type alert struct {
	Severity string // "warning" or "error"
	Symbol   string
	Message  string
	URL      string
}

type groupSummary struct {
	Group          store.Group
	ChannelVersion string
	Bar            bar
}

type appView struct {
	App    store.Application
	Groups []groupSummary
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	apps, err := h.st.ListApps(ctx)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	var views []appView
	var alerts []alert
	for _, a := range apps {
		av := appView{App: a}
		chans, err := h.st.ListChannels(ctx, a.ID)
		if err != nil {
			h.fail(w, r, v, err)
			return
		}
		versions := map[string]string{}
		for _, c := range chans {
			versions[c.Name] = c.PackageVersion
		}
		groups, err := h.st.ListGroups(ctx, a.ID)
		if err != nil {
			h.fail(w, r, v, err)
			return
		}
		for _, g := range groups {
			rs, err := h.st.RolloutStatus(ctx, a.ID, g.Name)
			if err != nil {
				h.fail(w, r, v, err)
				return
			}
			av.Groups = append(av.Groups, groupSummary{Group: g, ChannelVersion: versions[g.Channel], Bar: newBar(rs)})
			if g.Policy.Paused {
				al := alert{Severity: "warning", Symbol: "‖", URL: groupURL(a.ID, g.Name),
					Message: fmt.Sprintf("Group %s of %s is paused", g.Name, a.Name)}
				if g.PausedReason != "" {
					al.Message += ": " + g.PausedReason
				}
				if strings.HasPrefix(g.PausedReason, "auto-paused") {
					al.Severity, al.Symbol = "error", "✗"
				}
				alerts = append(alerts, al)
			}
		}
		views = append(views, av)
	}
	lockAlerts, locks := h.lockOverview(ctx)
	alerts = append(alerts, lockAlerts...)
	acts, err := h.st.ListActivity(ctx, store.ActivityFilter{Limit: 20})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	h.render(w, r, v, http.StatusOK, "overview", "Overview", map[string]any{"Apps": views, "Alerts": alerts, "Activity": acts, "LockGroups": locks})
}

// lockOverview reads every reboot-lock group and reports holders past
// their group's deadline.
func (h *Handler) lockOverview(ctx context.Context) ([]alert, []rebootlock.GroupStatus) {
	if h.locks == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	groups, err := h.locks.Groups(ctx)
	if err != nil {
		return []alert{{Severity: "error", Symbol: "✗", Message: "Reboot locks are unavailable: " + err.Error()}}, nil
	}
	var out []alert
	var sts []rebootlock.GroupStatus
	for _, g := range groups {
		st, err := h.locks.Status(ctx, g)
		if err != nil {
			return append(out, alert{Severity: "error", Symbol: "✗", Message: "Reboot locks are unavailable: " + err.Error()}), sts
		}
		sts = append(sts, st)
		for _, ho := range st.Holders {
			if ho.Overdue {
				out = append(out, alert{Severity: "warning", Symbol: "⚠",
					Message: fmt.Sprintf("Machine %s has held a reboot slot of lock group %s since %s, longer than the %s deadline", ho.ID, g, ho.AcquiredAt.UTC().Format(time.RFC3339), st.HoldDeadline)})
			}
		}
	}
	return out, sts
}

// appParam resolves the {app} path value.
func appParam(r *http.Request) (string, error) {
	id, err := omaha.NormalizeAppID(r.PathValue("app"))
	if err != nil {
		return "", fmt.Errorf("application %q: %w", r.PathValue("app"), store.ErrNotFound)
	}
	return id, nil
}

// policyForm holds the policy form's fields as typed, so that a rejected
// form is shown again with the operator's input and one error per field.
type policyForm struct {
	MaxUpdates, Period, MaxInProgress, Percent, Ramp, Timeout, AutoPause, Windows, TimeZone string
	OnDemand                                                                                bool
	Errors                                                                                  map[string]string
}

func formFromPolicy(p store.Policy) policyForm {
	return policyForm{
		MaxUpdates: strconv.Itoa(p.MaxUpdatesPerPeriod), Period: fmtDuration(p.Period),
		MaxInProgress: strconv.Itoa(p.MaxInProgress), Percent: strconv.FormatFloat(p.RolloutPercent, 'g', -1, 64),
		Ramp: fmtDuration(p.RampDuration), Timeout: fmtDuration(p.UpdateTimeout),
		AutoPause: strconv.Itoa(p.AutoPauseFailures), Windows: strings.Join(p.Windows, "\n"), TimeZone: p.TimeZone,
		OnDemand: p.OnDemandBypassesLimits,
	}
}

func formFromRequest(r *http.Request) policyForm {
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	return policyForm{
		MaxUpdates: f("max_updates_per_period"), Period: f("period"), MaxInProgress: f("max_in_progress"),
		Percent: f("rollout_percent"), Ramp: f("ramp_duration"), Timeout: f("update_timeout"),
		AutoPause: f("auto_pause_failures"), Windows: r.PostFormValue("windows"), TimeZone: f("time_zone"),
		OnDemand: r.PostFormValue("on_demand_bypasses_limits") != "",
	}
}

// policy converts the form into a policy (keeping paused from old) and
// validates it with the rules the API uses. It fills f.Errors and reports
// whether the form is valid.
func (f *policyForm) policy(old store.Policy) (store.Policy, bool) {
	f.Errors = map[string]string{}
	p := store.Policy{Paused: old.Paused, TimeZone: f.TimeZone, OnDemandBypassesLimits: f.OnDemand}
	atoi := func(field, s string, dst *int) {
		if s == "" {
			return
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			f.Errors[field] = fmt.Sprintf("%q is not a whole number", s)
		}
		*dst = n
	}
	dur := func(field, s string, dst *time.Duration) {
		if s == "" || s == "0" {
			return
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			f.Errors[field] = fmt.Sprintf("%q is not a duration like 30m, 1h or 1h30m", s)
		}
		*dst = d
	}
	atoi("max_updates_per_period", f.MaxUpdates, &p.MaxUpdatesPerPeriod)
	dur("period", f.Period, &p.Period)
	atoi("max_in_progress", f.MaxInProgress, &p.MaxInProgress)
	if f.Percent != "" {
		v, err := strconv.ParseFloat(strings.TrimSuffix(f.Percent, "%"), 64)
		if err != nil {
			f.Errors["rollout_percent"] = fmt.Sprintf("%q is not a number", f.Percent)
		}
		p.RolloutPercent = v
	}
	dur("ramp_duration", f.Ramp, &p.RampDuration)
	dur("update_timeout", f.Timeout, &p.UpdateTimeout)
	atoi("auto_pause_failures", f.AutoPause, &p.AutoPauseFailures)
	for line := range strings.SplitSeq(f.Windows, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			p.Windows = append(p.Windows, line)
		}
	}
	if len(f.Errors) > 0 {
		return p, false
	}
	if err := rollout.ValidatePolicy(p); err != nil {
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			var fe *rollout.FieldError
			if !errors.As(e, &fe) {
				f.Errors["form"] = e.Error()
				continue
			}
			field, msg := fe.Field, fe.Err.Error()
			if i, ok := strings.CutPrefix(fe.Field, "windows["); ok {
				n, _ := strconv.Atoi(strings.TrimSuffix(i, "]"))
				field, msg = "windows", fmt.Sprintf("line %d: %s", n+1, msg)
			}
			if prev := f.Errors[field]; prev != "" {
				msg = prev + "; " + msg
			}
			f.Errors[field] = msg
		}
		return p, false
	}
	return p, true
}

// instanceQuery is the group page's instance filter as given in the URL.
type instanceQuery struct {
	Q, Status, Version, Seen, Sort, Cursor string
}

// seenFilters are the last-seen choices of the instance filter: a key,
// its label, and the window it selects (negative: not seen for that long).
var seenFilters = []struct {
	Key, Label string
	Within     time.Duration
}{
	{"1h", "seen in the last hour", time.Hour},
	{"24h", "seen in the last 24 h", 24 * time.Hour},
	{"7d", "seen in the last 7 days", 7 * 24 * time.Hour},
	{"stale-24h", "not seen for 24 h", -24 * time.Hour},
	{"stale-7d", "not seen for 7 days", -7 * 24 * time.Hour},
}

// applySeen sets the filter's last-seen bounds; false for an unknown key.
func applySeen(f *store.InstanceFilter, key string, now time.Time) bool {
	for _, sf := range seenFilters {
		if sf.Key != key {
			continue
		}
		if sf.Within > 0 {
			f.SeenAfter = now.Add(-sf.Within)
		} else {
			f.SeenBefore = now.Add(sf.Within)
		}
		return true
	}
	return false
}

func (q instanceQuery) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"q": q.Q, "status": q.Status, "version": q.Version, "seen": q.Seen, "sort": q.Sort, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

type versionCount struct {
	Version string
	Count   int
	Percent float64
}

var flashes = map[string]string{
	"paused":  "The group is paused: no new updates are granted until it is resumed.",
	"resumed": "The group is resumed.",
	"policy":  "The policy is saved.",
}

func (h *Handler) groupPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	h.renderGroup(w, r, v, http.StatusOK, nil)
}

// renderGroup renders the group page; form, when not nil, is a rejected
// policy form to show again.
func (h *Handler) renderGroup(w http.ResponseWriter, r *http.Request, v *viewer, status int, form *policyForm) {
	ctx := r.Context()
	app, ok := h.pathApp(w, r, v)
	if !ok {
		return
	}
	appID := app.ID
	g, err := h.st.GetGroup(ctx, appID, r.PathValue("group"))
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	var chVersion string
	if ch, err := h.st.GetChannel(ctx, appID, g.Channel); err == nil {
		chVersion = ch.PackageVersion
	}
	rs, err := h.st.RolloutStatus(ctx, appID, g.Name)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	var versions []versionCount
	for ver, n := range rs.ByVersion {
		versions = append(versions, versionCount{Version: ver, Count: n, Percent: float64(n) * 100 / float64(max(rs.Total, 1))})
	}
	slices.SortFunc(versions, func(a, b versionCount) int { return -updatesvc.CompareVersions(a.Version, b.Version) })

	uq := r.URL.Query()
	iq := instanceQuery{Q: strings.TrimSpace(uq.Get("q")), Status: uq.Get("status"), Version: uq.Get("version"),
		Seen: uq.Get("seen"), Sort: uq.Get("sort"), Cursor: uq.Get("cursor")}
	var notice string
	filter := store.InstanceFilter{AppID: appID, Group: g.Name, Prefix: iq.Q, Version: iq.Version, Cursor: iq.Cursor, Limit: pageSize}
	if iq.Seen != "" && !applySeen(&filter, iq.Seen, time.Now()) {
		notice = fmt.Sprintf("Unknown last-seen filter %q ignored.", iq.Seen)
		iq.Seen = ""
	}
	switch iq.Sort {
	case "":
	case "last-seen":
		filter.SortByLastCheck = true
	default:
		notice = fmt.Sprintf("Unknown sort %q ignored.", iq.Sort)
		iq.Sort = ""
	}
	if iq.Status != "" {
		if store.Status(iq.Status).Valid() {
			filter.Status = store.Status(iq.Status)
		} else {
			notice = fmt.Sprintf("Unknown status %q ignored.", iq.Status)
			iq.Status = ""
		}
	}
	pg, err := h.st.ListInstances(ctx, filter)
	if err != nil && iq.Cursor != "" {
		notice = "The page link has expired; showing the first page."
		filter.Cursor, iq.Cursor = "", ""
		pg, err = h.st.ListInstances(ctx, filter)
	}
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	base := groupURL(appID, g.Name)
	var nextURL, firstURL string
	if pg.NextCursor != "" {
		nq := iq
		nq.Cursor = pg.NextCursor
		nextURL = base + "?" + nq.values().Encode()
	}
	if iq.Cursor != "" {
		fq := iq
		fq.Cursor = ""
		firstURL = base + "?" + fq.values().Encode()
	}

	var lock *rebootlock.GroupStatus
	var lockErr string
	if h.locks != nil {
		lctx, cancel := context.WithTimeout(ctx, lockTimeout)
		names, err := h.locks.Groups(lctx)
		if err == nil && slices.Contains(names, g.Name) {
			var st rebootlock.GroupStatus
			if st, err = h.locks.Status(lctx, g.Name); err == nil {
				lock = &st
			}
		}
		cancel()
		if err != nil {
			lockErr = err.Error()
		}
	}
	acts, err := h.st.ListActivity(ctx, store.ActivityFilter{AppID: appID, Group: g.Name, Limit: 10})
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	if form == nil {
		f := formFromPolicy(g.Policy)
		form = &f
	}
	now := h.now()
	rangeKey := uq.Get("chart")
	span, ok := chartSpan(rangeKey)
	if !ok {
		if rangeKey != "" {
			notice = fmt.Sprintf("Unknown chart range %q ignored.", rangeKey)
		}
		rangeKey = defaultChartRange
		span, _ = chartSpan(rangeKey)
	}
	samples, err := h.st.ListVersionSamples(ctx, appID, g.Name, now.Add(-span))
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	cfg, err := h.groupConfig(ctx, appID, g.Name)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	inWindow, _ := rollout.InWindows(g.Policy.Windows, g.Policy.TimeZone, now)
	h.render(w, r, v, status, "group", "Group "+g.Name, map[string]any{
		"Chart": buildChart(samples, rs.ByVersion, now, span), "ChartRange": rangeKey, "ChartRanges": chartRanges,
		"SampleInterval": h.svc.Config().SampleInterval,
		"App":            app, "Group": g, "ChannelVersion": chVersion, "Bar": newBar(rs), "Versions": versions,
		"Policy": g.Policy, "CurrentPercent": rollout.CurrentPercent(g.Policy, g.RolloutStartedAt, now), "InWindow": inWindow,
		"Form": form, "Query": iq, "Statuses": store.AllStatuses, "SeenFilters": seenFilters, "Page": pg, "NextURL": nextURL, "FirstURL": firstURL,
		"Notice": notice, "Flash": flashes[uq.Get("done")], "Lock": lock, "LockErr": lockErr, "Activity": acts,
		"URL": base, "Config": cfg,
	})
}

func (h *Handler) pause(pause bool) viewerFunc {
	return func(w http.ResponseWriter, r *http.Request, v *viewer) {
		appID, err := appParam(r)
		if err != nil {
			h.fail(w, r, v, err)
			return
		}
		name := r.PathValue("group")
		c := updatesvc.GroupChange{Pause: &pause, Actor: v.token.Name}
		if pause {
			c.Reason = strings.TrimSpace(r.PostFormValue("reason"))
		}
		if _, err := h.svc.UpdateGroup(r.Context(), appID, name, c); err != nil {
			h.fail(w, r, v, err)
			return
		}
		done := "resumed"
		if pause {
			done = "paused"
		}
		http.Redirect(w, r, groupURL(appID, name)+"?done="+done, http.StatusSeeOther)
	}
}

func (h *Handler) savePolicy(w http.ResponseWriter, r *http.Request, v *viewer) {
	appID, err := appParam(r)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	name := r.PathValue("group")
	g, err := h.st.GetGroup(r.Context(), appID, name)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	form := formFromRequest(r)
	p, ok := form.policy(g.Policy)
	if !ok {
		h.renderGroup(w, r, v, http.StatusUnprocessableEntity, &form)
		return
	}
	if _, err := h.svc.UpdateGroup(r.Context(), appID, name, updatesvc.GroupChange{Policy: &p, Actor: v.token.Name}); err != nil {
		if errors.Is(err, store.ErrInvalid) {
			form.Errors["form"] = err.Error()
			h.renderGroup(w, r, v, http.StatusUnprocessableEntity, &form)
			return
		}
		h.fail(w, r, v, err)
		return
	}
	http.Redirect(w, r, groupURL(appID, name)+"?done=policy", http.StatusSeeOther)
}

// errorView is a decoded update_engine error code.
type errorView struct {
	omaha.ErrorCode
	FlagText string
}

func decodeError(raw int64) *errorView {
	if raw == 0 {
		return nil
	}
	c := omaha.DecodeErrorCode(raw)
	return &errorView{ErrorCode: c, FlagText: strings.Join(c.Flags, ", ")}
}

// timelineEntry is one status change or event of an instance.
type timelineEntry struct {
	At      time.Time
	Kind    string // "status" or "event"
	Status  store.Status
	Title   string
	Version string
	Detail  string
	Error   *errorView
}

func (h *Handler) instancePage(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	app, ok := h.pathApp(w, r, v)
	if !ok {
		return
	}
	appID := app.ID
	in, err := h.st.GetInstance(ctx, appID, r.PathValue("id"))
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	changes, err := h.st.ListStatusChanges(ctx, appID, in.MachineID, 100)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	events, err := h.st.ListEvents(ctx, appID, in.MachineID, 100)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	var tl []timelineEntry
	for _, c := range changes {
		tl = append(tl, timelineEntry{At: c.At, Kind: "status", Status: c.Status, Title: "status: " + badge(c.Status).Label,
			Version: c.Version, Error: decodeError(c.ErrorCode)})
	}
	for _, e := range events {
		d := ""
		if e.PreviousVersion != "" {
			d = "previous version " + e.PreviousVersion
		}
		tl = append(tl, timelineEntry{At: e.At, Kind: "event",
			Title:   fmt.Sprintf("event %s (%d), result %s (%d)", omaha.EventTypeName(e.Type), e.Type, omaha.EventResultName(e.Result), e.Result),
			Version: e.Version, Detail: d, Error: decodeError(e.ErrorCode)})
	}
	slices.SortStableFunc(tl, func(a, b timelineEntry) int { return b.At.Compare(a.At) })
	var lockHolder *rebootlock.Holder
	if h.locks != nil && in.Group != "" && rebootlock.ValidateGroup(in.Group) == nil {
		lctx, cancel := context.WithTimeout(ctx, lockTimeout)
		if ho, ok, err := h.locks.Holder(lctx, in.Group, in.MachineID); err == nil && ok {
			lockHolder = &ho
		}
		cancel()
	}
	h.render(w, r, v, http.StatusOK, "instance", "Instance "+cmp.Or(in.Alias, in.MachineID), map[string]any{
		"App": app, "In": in, "LastError": decodeError(in.LastErrorCode), "Timeline": tl, "LockHolder": lockHolder,
	})
}

// pathApp loads the application named in the path, or renders the error
// page and reports false.
func (h *Handler) pathApp(w http.ResponseWriter, r *http.Request, v *viewer) (store.Application, bool) {
	appID, err := appParam(r)
	if err != nil {
		h.fail(w, r, v, err)
		return store.Application{}, false
	}
	app, err := h.st.GetApp(r.Context(), appID)
	if err != nil {
		h.fail(w, r, v, err)
		return store.Application{}, false
	}
	return app, true
}
