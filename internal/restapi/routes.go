package restapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/rollout"
	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
	"github.com/flotilla/flotilla/omaha"
)

func (h *Handler) routes() {
	h.handle("GET /api/v1/apps", h.listApps)
	h.handle("POST /api/v1/apps", h.createApp)
	h.handle("GET /api/v1/apps/{app}", h.getApp)
	h.handle("PATCH /api/v1/apps/{app}", h.patchApp)
	h.handle("DELETE /api/v1/apps/{app}", h.deleteApp)

	h.handle("GET /api/v1/apps/{app}/packages", h.listPackages)
	h.handle("POST /api/v1/apps/{app}/packages", h.createPackage)
	h.handle("GET /api/v1/apps/{app}/packages/{version}", h.getPackage)
	h.handle("DELETE /api/v1/apps/{app}/packages/{version}", h.deletePackage)

	h.handle("GET /api/v1/apps/{app}/channels", h.listChannels)
	h.handle("POST /api/v1/apps/{app}/channels", h.createChannel)
	h.handle("GET /api/v1/apps/{app}/channels/{name}", h.getChannel)
	h.handle("DELETE /api/v1/apps/{app}/channels/{name}", h.deleteChannel)
	h.handle("PUT /api/v1/apps/{app}/channels/{name}/package", h.setChannelPackage)

	h.handle("GET /api/v1/apps/{app}/groups", h.listGroups)
	h.handle("POST /api/v1/apps/{app}/groups", h.createGroup)
	h.handle("GET /api/v1/apps/{app}/groups/{name}", h.getGroup)
	h.handle("PATCH /api/v1/apps/{app}/groups/{name}", h.patchGroup)
	h.handle("DELETE /api/v1/apps/{app}/groups/{name}", h.deleteGroup)
	h.handle("POST /api/v1/apps/{app}/groups/{name}/pause", h.pauseGroup)
	h.handle("POST /api/v1/apps/{app}/groups/{name}/resume", h.resumeGroup)
	h.handle("PUT /api/v1/apps/{app}/groups/{name}/policy", h.putPolicy)
	h.handle("PATCH /api/v1/apps/{app}/groups/{name}/policy", h.patchPolicy)
	h.handle("GET /api/v1/apps/{app}/groups/{name}/status", h.groupStatus)
	h.configRoutes()

	h.handle("GET /api/v1/apps/{app}/instances", h.listInstances)
	h.handle("GET /api/v1/apps/{app}/instances/{id}", h.getInstance)
	h.handle("DELETE /api/v1/apps/{app}/instances/{id}", h.deleteInstance)
	h.handle("GET /api/v1/apps/{app}/instances/{id}/history", h.instanceHistory)

	h.handle("GET /api/v1/apps/{app}/activity", h.listActivity)
	h.handle("GET /api/v1/errorcodes/{code}", h.errorCode)

	h.handle("GET /api/v1/tokens", h.listTokens)
	h.handle("POST /api/v1/tokens", h.createToken)
	h.handle("DELETE /api/v1/tokens/{id}", h.deleteToken)

}

func (h *Handler) listApps(w http.ResponseWriter, r *http.Request) error {
	apps, err := h.st.ListApps(r.Context())
	if err != nil {
		return err
	}
	writeList(w, apps, appToAPI)
	return nil
}

func (h *Handler) createApp(w http.ResponseWriter, r *http.Request) error {
	var in v1.App
	if err := decode(w, r, &in); err != nil {
		return err
	}
	id, err := omaha.NormalizeAppID(in.ID)
	if err != nil {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "id %q is not a UUID (braces optional)", in.ID)
	}
	if strings.TrimSpace(in.Name) == "" {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "name is required")
	}
	a := store.Application{ID: id, Name: in.Name, Description: in.Description}
	if err := h.svc.CreateApp(r.Context(), a); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(http.StatusConflict, v1.KindConflict, "application %s already exists", id)
		}
		return err
	}
	a, err = h.st.GetApp(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, appToAPI(a))
	return nil
}

func (h *Handler) getApp(w http.ResponseWriter, r *http.Request) error {
	id, err := appID(r)
	if err != nil {
		return err
	}
	a, err := h.st.GetApp(r.Context(), id)
	if err != nil {
		return notFound(err, "application %s", id)
	}
	writeJSON(w, http.StatusOK, appToAPI(a))
	return nil
}

// writeList writes items converted to their API form, as a JSON array
// (never null).
func writeList[T, U any](w http.ResponseWriter, items []T, conv func(T) U) {
	out := make([]U, 0, len(items))
	for _, it := range items {
		out = append(out, conv(it))
	}
	writeJSON(w, http.StatusOK, out)
}

// notFound gives ErrNotFound a message naming what was missing.
func notFound(err error, format string, a ...any) error {
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, v1.KindNotFound, "%s not found", fmt.Sprintf(format, a...))
	}
	return err
}

func (h *Handler) patchApp(w http.ResponseWriter, r *http.Request) error {
	id, err := appID(r)
	if err != nil {
		return err
	}
	var in struct {
		Name        *string `json:"name"`
		Description *string `json:"description"`
	}
	if err := decode(w, r, &in); err != nil {
		return err
	}
	a, err := h.st.GetApp(r.Context(), id)
	if err != nil {
		return notFound(err, "application %s", id)
	}
	if in.Name != nil {
		if strings.TrimSpace(*in.Name) == "" {
			return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "name must not be empty")
		}
		a.Name = *in.Name
	}
	if in.Description != nil {
		a.Description = *in.Description
	}
	if err := h.svc.UpdateApp(r.Context(), a); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, appToAPI(a))
	return nil
}

func (h *Handler) deleteApp(w http.ResponseWriter, r *http.Request) error {
	id, err := appID(r)
	if err != nil {
		return err
	}
	if err := h.svc.DeleteApp(r.Context(), id); err != nil {
		return notFound(err, "application %s", id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// requireApp returns 404 for an unknown application before anything else.
func (h *Handler) requireApp(r *http.Request) (string, error) {
	id, err := appID(r)
	if err != nil {
		return "", err
	}
	if _, err := h.st.GetApp(r.Context(), id); err != nil {
		return "", notFound(err, "application %s", id)
	}
	return id, nil
}

func (h *Handler) listPackages(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	pkgs, err := h.st.ListPackages(r.Context(), id)
	if err != nil {
		return err
	}
	writeList(w, pkgs, packageToAPI)
	return nil
}

func (h *Handler) createPackage(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	var in v1.Package
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.Arch == "" {
		in.Arch = "amd64"
	}
	p := packageFromAPI(id, in)
	if err := validatePackage(p); err != nil {
		return err
	}
	if err := h.svc.CreatePackage(r.Context(), p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(http.StatusConflict, v1.KindConflict, "package %s (%s) already exists", p.Version, p.Arch)
		}
		return err
	}
	p, err = h.st.GetPackage(r.Context(), id, p.Version, p.Arch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, packageToAPI(p))
	return nil
}

func (h *Handler) getPackage(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	if err := checkQuery(r, "arch"); err != nil {
		return err
	}
	arch := r.URL.Query().Get("arch")
	if arch == "" {
		arch = "amd64"
	}
	version := r.PathValue("version")
	p, err := h.st.GetPackage(r.Context(), id, version, arch)
	if err != nil {
		return notFound(err, "package %s (%s)", version, arch)
	}
	writeJSON(w, http.StatusOK, packageToAPI(p))
	return nil
}

func (h *Handler) deletePackage(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	if err := checkQuery(r, "arch"); err != nil {
		return err
	}
	arch := r.URL.Query().Get("arch")
	if arch == "" {
		arch = "amd64"
	}
	version := r.PathValue("version")
	if err := h.svc.DeletePackage(r.Context(), id, version, arch); err != nil {
		return notFound(err, "package %s (%s)", version, arch)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) channelGroups(r *http.Request, appID string) (map[string][]string, error) {
	groups, err := h.st.ListGroups(r.Context(), appID)
	if err != nil {
		return nil, err
	}
	m := map[string][]string{}
	for _, g := range groups {
		m[g.Channel] = append(m[g.Channel], g.Name)
	}
	return m, nil
}

func (h *Handler) listChannels(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	chans, err := h.st.ListChannels(r.Context(), id)
	if err != nil {
		return err
	}
	groups, err := h.channelGroups(r, id)
	if err != nil {
		return err
	}
	out := make([]v1.Channel, 0, len(chans))
	for _, c := range chans {
		out = append(out, channelToAPI(c, groups[c.Name]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) writeChannel(w http.ResponseWriter, r *http.Request, appID, name string, status int) error {
	c, err := h.st.GetChannel(r.Context(), appID, name)
	if err != nil {
		return notFound(err, "channel %s", name)
	}
	groups, err := h.channelGroups(r, appID)
	if err != nil {
		return err
	}
	writeJSON(w, status, channelToAPI(c, groups[c.Name]))
	return nil
}

func (h *Handler) createChannel(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	var in v1.Channel
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := validName("name", in.Name); err != nil {
		return err
	}
	err = h.svc.CreateChannel(r.Context(), store.Channel{AppID: id, Name: in.Name, PackageVersion: in.Package})
	switch {
	case errors.Is(err, store.ErrConflict):
		return errorf(http.StatusConflict, v1.KindConflict, "channel %s already exists", in.Name)
	case errors.Is(err, store.ErrInvalid):
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "no package with version %s exists; create it first", in.Package)
	case err != nil:
		return err
	}
	return h.writeChannel(w, r, id, in.Name, http.StatusCreated)
}

func (h *Handler) getChannel(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	return h.writeChannel(w, r, id, r.PathValue("name"), http.StatusOK)
}

func (h *Handler) deleteChannel(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	err = h.svc.DeleteChannel(r.Context(), id, name)
	if errors.Is(err, store.ErrConflict) {
		return errorf(http.StatusConflict, v1.KindConflict, "channel %s is followed by a group; move or delete the group first", name)
	}
	if err != nil {
		return notFound(err, "channel %s", name)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) setChannelPackage(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	var in v1.SetChannelPackage
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if in.Version == "" {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "version is required")
	}
	name := r.PathValue("name")
	err = h.svc.SetChannelPackage(r.Context(), id, name, in.Version)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, v1.KindNotFound, "channel %s not found", name)
	case errors.Is(err, store.ErrInvalid):
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "no package with version %s exists; create it first", in.Version)
	case err != nil:
		return err
	}
	return h.writeChannel(w, r, id, name, http.StatusOK)
}

func validName(field, s string) error {
	if strings.TrimSpace(s) == "" {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "%s is required", field)
	}
	if len(s) > 128 || strings.ContainsAny(s, "/?#\x00") {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "%s %q: at most 128 characters, no '/', '?', '#'", field, s)
	}
	return nil
}

func validatePackage(p store.Package) error {
	var problems []string
	if p.Version == "" {
		problems = append(problems, "version is required")
	}
	if p.BaseURL == "" {
		problems = append(problems, "url (base URL of the payload) is required")
	} else if !strings.HasPrefix(p.BaseURL, "http://") && !strings.HasPrefix(p.BaseURL, "https://") {
		problems = append(problems, fmt.Sprintf("url %q must start with http:// or https://", p.BaseURL))
	}
	if p.FileName == "" || strings.Contains(p.FileName, "/") {
		problems = append(problems, "file must be a file name without '/'")
	}
	if p.Size <= 0 {
		problems = append(problems, "size must be > 0 (update_engine rejects 0)")
	}
	if !validB64Hash(p.SHA256, 32) {
		problems = append(problems, "sha256 must be the base64 SHA-256 of the payload (44 characters)")
	}
	if p.SHA1 != "" && !validB64Hash(p.SHA1, 20) {
		problems = append(problems, "sha1 must be a base64 SHA-1 (28 characters)")
	}
	if err := validName("arch", p.Arch); err != nil {
		problems = append(problems, err.Error())
	}
	for i, f := range p.ExtraFiles {
		if f.Name == "" || f.Size <= 0 {
			problems = append(problems, fmt.Sprintf("extra_files[%d]: name and size > 0 are required", i))
		}
	}
	if len(problems) > 0 {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "invalid package: %s", strings.Join(problems, "; "))
	}
	return nil
}

func (h *Handler) listGroups(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	groups, err := h.st.ListGroups(r.Context(), id)
	if err != nil {
		return err
	}
	writeList(w, groups, groupToAPI)
	return nil
}

func (h *Handler) createGroup(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	var in v1.CreateGroup
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := validName("name", in.Name); err != nil {
		return err
	}
	pol := store.DefaultPolicy()
	if in.Policy != nil {
		if pol, err = policyFromAPI(*in.Policy); err != nil {
			return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "policy: %v", err)
		}
	}
	g := store.Group{AppID: id, Name: in.Name, Description: in.Description, Track: in.Track, Channel: in.Channel, Policy: pol}
	if err := h.svc.CreateGroup(r.Context(), g); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(http.StatusConflict, v1.KindConflict, "a group named %s or with track %q already exists", in.Name, orName(in.Track, in.Name))
		}
		return err
	}
	return h.writeGroup(w, r, id, in.Name, http.StatusCreated)
}

func orName(track, name string) string {
	if track == "" {
		return name
	}
	return track
}

func (h *Handler) writeGroup(w http.ResponseWriter, r *http.Request, appID, name string, status int) error {
	g, err := h.st.GetGroup(r.Context(), appID, name)
	if err != nil {
		return notFound(err, "group %s", name)
	}
	writeJSON(w, status, groupToAPI(g))
	return nil
}

func (h *Handler) getGroup(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	return h.writeGroup(w, r, id, r.PathValue("name"), http.StatusOK)
}

func (h *Handler) changeGroup(w http.ResponseWriter, r *http.Request, c updatesvc.GroupChange) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	c.Actor = actor(r.Context())
	g, err := h.svc.UpdateGroup(r.Context(), id, name, c)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errorf(http.StatusConflict, v1.KindConflict, "another group already uses that track")
		}
		return notFound(err, "group %s", name)
	}
	writeJSON(w, http.StatusOK, groupToAPI(g))
	return nil
}

func (h *Handler) patchGroup(w http.ResponseWriter, r *http.Request) error {
	var in v1.UpdateGroup
	if err := decode(w, r, &in); err != nil {
		return err
	}
	return h.changeGroup(w, r, updatesvc.GroupChange{Description: in.Description, Track: in.Track, Channel: in.Channel})
}

func (h *Handler) deleteGroup(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := h.svc.DeleteGroup(r.Context(), id, name); err != nil {
		return notFound(err, "group %s", name)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) pauseGroup(w http.ResponseWriter, r *http.Request) error {
	var in v1.PauseGroup
	if r.ContentLength != 0 {
		if err := decode(w, r, &in); err != nil {
			return err
		}
	}
	t := true
	return h.changeGroup(w, r, updatesvc.GroupChange{Pause: &t, Reason: in.Reason})
}

func (h *Handler) resumeGroup(w http.ResponseWriter, r *http.Request) error {
	f := false
	return h.changeGroup(w, r, updatesvc.GroupChange{Pause: &f})
}

func (h *Handler) putPolicy(w http.ResponseWriter, r *http.Request) error {
	var in v1.Policy
	if err := decode(w, r, &in); err != nil {
		return err
	}
	p, err := policyFromAPI(in)
	if err != nil {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "policy: %v", err)
	}
	return h.changeGroup(w, r, updatesvc.GroupChange{Policy: &p})
}

func (h *Handler) patchPolicy(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	var in v1.PolicyPatch
	if err := decode(w, r, &in); err != nil {
		return err
	}
	name := r.PathValue("name")
	g, err := h.st.GetGroup(r.Context(), id, name)
	if err != nil {
		return notFound(err, "group %s", name)
	}
	p, err := applyPolicyPatch(g.Policy, in)
	if err != nil {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "policy: %v", err)
	}
	return h.changeGroup(w, r, updatesvc.GroupChange{Policy: &p})
}

func (h *Handler) groupStatus(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	g, err := h.st.GetGroup(r.Context(), id, name)
	if err != nil {
		return notFound(err, "group %s", name)
	}
	rs, err := h.st.RolloutStatus(r.Context(), id, name)
	if err != nil {
		return err
	}
	ch, err := h.st.GetChannel(r.Context(), id, g.Channel)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	now := h.now()
	inWindow, _ := rollout.InWindows(g.Policy.Windows, g.Policy.TimeZone, now)
	out := v1.GroupStatus{
		AppID: id, Group: g.Name, Channel: g.Channel, TargetVersion: ch.PackageVersion,
		Paused: g.Policy.Paused, PausedReason: g.PausedReason, RolloutStarted: g.RolloutStartedAt,
		CurrentPercent: rollout.CurrentPercent(g.Policy, g.RolloutStartedAt, now), InWindow: inWindow,
		Total: rs.Total, ByVersion: rs.ByVersion, ByStatus: map[string]int{},
	}
	if out.ByVersion == nil {
		out.ByVersion = map[string]int{}
	}
	for st, n := range rs.ByStatus {
		out.ByStatus[string(st)] = n
	}
	if ch.PackageVersion != "" {
		for v, n := range rs.ByVersion {
			if updatesvc.CompareVersions(v, ch.PackageVersion) >= 0 {
				out.OnTarget += n
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) listInstances(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	if err := checkQuery(r, "group", "status", "version", "prefix", "seen_before", "seen_after", "sort", "cursor", "limit"); err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.InstanceFilter{AppID: id, Group: q.Get("group"), Version: q.Get("version"), Prefix: strings.ToLower(q.Get("prefix")), Cursor: q.Get("cursor")}
	if s := q.Get("status"); s != "" {
		f.Status = store.Status(s)
		if !f.Status.Valid() {
			return badRequest("status %q: want one of %s", s, statusWords())
		}
	}
	switch q.Get("sort") {
	case "", "machine_id":
	case "-last_check":
		f.SortByLastCheck = true
	default:
		return badRequest("sort %q: want machine_id or -last_check", q.Get("sort"))
	}
	if f.SeenBefore, err = queryTime(r, "seen_before"); err != nil {
		return err
	}
	if f.SeenAfter, err = queryTime(r, "seen_after"); err != nil {
		return err
	}
	if f.Limit, err = queryInt(r, "limit"); err != nil {
		return err
	}
	page, err := h.st.ListInstances(r.Context(), f)
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return badRequest("cursor %q is not valid; start again without it", f.Cursor)
		}
		return err
	}
	out := v1.InstanceList{Instances: make([]v1.Instance, 0, len(page.Instances)), Total: page.Total, NextCursor: page.NextCursor}
	for _, in := range page.Instances {
		out.Instances = append(out.Instances, instanceToAPI(in))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func statusWords() string {
	var s []string
	for _, st := range store.AllStatuses {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

func (h *Handler) getInstance(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	mid := strings.ToLower(r.PathValue("id"))
	in, err := h.st.GetInstance(r.Context(), id, mid)
	if err != nil {
		return notFound(err, "instance %s", mid)
	}
	writeJSON(w, http.StatusOK, instanceToAPI(in))
	return nil
}

func (h *Handler) deleteInstance(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	mid := strings.ToLower(r.PathValue("id"))
	if err := h.st.DeleteInstance(r.Context(), id, mid); err != nil {
		return notFound(err, "instance %s", mid)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) instanceHistory(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	if err := checkQuery(r, "limit"); err != nil {
		return err
	}
	limit, err := queryInt(r, "limit")
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 100
	}
	mid := strings.ToLower(r.PathValue("id"))
	if _, err := h.st.GetInstance(r.Context(), id, mid); err != nil {
		return notFound(err, "instance %s", mid)
	}
	changes, err := h.st.ListStatusChanges(r.Context(), id, mid, limit)
	if err != nil {
		return err
	}
	events, err := h.st.ListEvents(r.Context(), id, mid, limit)
	if err != nil {
		return err
	}
	out := v1.InstanceHistory{Statuses: []v1.StatusChange{}, Events: []v1.Event{}}
	for _, c := range changes {
		sc := v1.StatusChange{Status: string(c.Status), Version: c.Version, At: c.At, Group: c.Group}
		if c.ErrorCode != 0 {
			sc.Error = ErrorCodeToAPI(c.ErrorCode)
		}
		out.Statuses = append(out.Statuses, sc)
	}
	for _, e := range events {
		ev := v1.Event{Type: e.Type, Result: e.Result, Description: eventDescription(e.Type, e.Result), Version: e.Version, PreviousVersion: e.PreviousVersion, At: e.At}
		if e.ErrorCode != 0 || e.Result == omaha.EventResultError {
			ev.Error = ErrorCodeToAPI(e.ErrorCode)
		}
		out.Events = append(out.Events, ev)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) listActivity(w http.ResponseWriter, r *http.Request) error {
	id, err := h.requireApp(r)
	if err != nil {
		return err
	}
	if err := checkQuery(r, "group", "since", "before", "limit"); err != nil {
		return err
	}
	f := store.ActivityFilter{AppID: id, Group: r.URL.Query().Get("group")}
	if f.Since, err = queryTime(r, "since"); err != nil {
		return err
	}
	before, err := queryInt(r, "before")
	if err != nil {
		return err
	}
	f.BeforeID = int64(before)
	if f.Limit, err = queryInt(r, "limit"); err != nil {
		return err
	}
	acts, err := h.st.ListActivity(r.Context(), f)
	if err != nil {
		return err
	}
	out := v1.ActivityList{Activity: make([]v1.Activity, 0, len(acts))}
	for _, a := range acts {
		out.Activity = append(out.Activity, activityToAPI(a))
	}
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	if len(acts) == limit {
		out.NextBefore = acts[len(acts)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) errorCode(w http.ResponseWriter, r *http.Request) error {
	s := r.PathValue("code")
	raw, err := strconv.ParseInt(s, 0, 64)
	if err != nil || raw < 0 || raw > 1<<32-1 {
		return badRequest("error code %q: want a non-negative 32-bit number (decimal or 0x hex)", s)
	}
	writeJSON(w, http.StatusOK, ErrorCodeToAPI(raw))
	return nil
}

func tokenToAPI(t store.Token) v1.Token {
	return v1.Token{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt}
}

func (h *Handler) listTokens(w http.ResponseWriter, r *http.Request) error {
	toks, err := h.st.ListTokens(r.Context())
	if err != nil {
		return err
	}
	writeList(w, toks, tokenToAPI)
	return nil
}

func (h *Handler) createToken(w http.ResponseWriter, r *http.Request) error {
	var in v1.CreateToken
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := validName("name", in.Name); err != nil {
		return err
	}
	if in.Role == "" {
		in.Role = RoleViewer
	}
	if in.Role != RoleAdmin && in.Role != RoleViewer {
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "role %q: want admin or viewer", in.Role)
	}
	tok, secret := NewToken(in.Name, in.Role, h.now())
	if err := h.st.CreateToken(r.Context(), tok); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v1.CreatedToken{Token: tokenToAPI(tok), Secret: secret})
	return nil
}

func (h *Handler) deleteToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := h.st.DeleteToken(r.Context(), id); err != nil {
		return notFound(err, "token %s", id)
	}
	h.forgetTokens()
	w.WriteHeader(http.StatusNoContent)
	return nil
}
