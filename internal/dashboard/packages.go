package dashboard

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/flotilla/flotilla/internal/store"
	"github.com/flotilla/flotilla/internal/updatesvc"
)

func packagesURL(app string) string { return "/apps/" + url.PathEscape(app) + "/packages" }

func promoteURL(app, channel string) string {
	return "/apps/" + url.PathEscape(app) + "/channels/" + url.PathEscape(channel) + "/promote"
}

// packagesIndex is GET /packages: the packages page of the only
// application, or a list to choose from.
func (h *Handler) packagesIndex(w http.ResponseWriter, r *http.Request, v *viewer) {
	apps, err := h.st.ListApps(r.Context())
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	if len(apps) == 1 {
		http.Redirect(w, r, packagesURL(apps[0].ID), http.StatusSeeOther)
		return
	}
	h.render(w, r, v, http.StatusOK, "packages", "Packages", map[string]any{"Apps": apps})
}

// packageForm is the create-package form as typed.
type packageForm struct {
	Version, Arch, BaseURL, FileName, Size, SHA256 string
	Errors                                         map[string]string
}

// digest returns s (hex as printed by sha256sum, or base64) as base64,
// like the CLI's --sha256.
func digest(s string, size int) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 2*size {
		if b, err := hex.DecodeString(s); err == nil {
			return base64.StdEncoding.EncodeToString(b), true
		}
	}
	b, err := base64.StdEncoding.DecodeString(s)
	return s, err == nil && len(b) == size
}

// pkg converts and validates the form with the REST API's rules for a
// package (restapi validatePackage), one message per field.
func (f *packageForm) pkg(app string) (store.Package, bool) {
	f.Errors = map[string]string{}
	p := store.Package{AppID: app, Version: f.Version, Arch: f.Arch, BaseURL: strings.TrimRight(f.BaseURL, "/"), FileName: f.FileName}
	if p.Arch == "" {
		p.Arch = "amd64"
	}
	if p.Version == "" {
		f.Errors["version"] = "required"
	}
	if len(p.Arch) > 128 || strings.ContainsAny(p.Arch, "/?#\x00") {
		f.Errors["arch"] = "at most 128 characters, no '/', '?', '#'"
	}
	switch {
	case p.BaseURL == "":
		f.Errors["url"] = "required: the URL of the directory holding the payload"
	case !strings.HasPrefix(p.BaseURL, "http://") && !strings.HasPrefix(p.BaseURL, "https://"):
		f.Errors["url"] = "must start with http:// or https://"
	}
	if p.FileName == "" || strings.Contains(p.FileName, "/") {
		f.Errors["file"] = "a file name without '/'"
	}
	if n, err := strconv.ParseInt(f.Size, 10, 64); err != nil || n <= 0 {
		f.Errors["size"] = "the payload size in bytes, > 0 (update_engine rejects 0)"
	} else {
		p.Size = n
	}
	if d, ok := digest(f.SHA256, 32); ok {
		p.SHA256 = d
	} else {
		f.Errors["sha256"] = "the payload's SHA-256: 64 hex digits (sha256sum) or 44 characters of base64"
	}
	return p, len(f.Errors) == 0
}

type packageRow struct {
	store.Package
	SHA256Hex string
	Channels  []string
}

type channelRow struct {
	store.Channel
	Groups []string
	Err    string
}

func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

var packageFlashes = map[string]string{
	"created":  "The package is created.",
	"promoted": "The channel now points at the new version; groups following it start their rollouts under their policies.",
}

func (h *Handler) packagesPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	h.renderPackages(w, r, v, http.StatusOK, nil, "", "")
}

// renderPackages renders the packages page; form is a rejected create
// form, promoteCh/promoteErr a rejected promotion.
func (h *Handler) renderPackages(w http.ResponseWriter, r *http.Request, v *viewer, status int, form *packageForm, promoteCh, promoteErr string) {
	ctx := r.Context()
	app, ok := h.pathApp(w, r, v)
	if !ok {
		return
	}
	appID := app.ID
	pkgs, err := h.st.ListPackages(ctx, appID)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	chans, err := h.st.ListChannels(ctx, appID)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	groups, err := h.st.ListGroups(ctx, appID)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	var crs []channelRow
	for _, c := range chans {
		cr := channelRow{Channel: c}
		for _, g := range groups {
			if g.Channel == c.Name {
				cr.Groups = append(cr.Groups, g.Name)
			}
		}
		if c.Name == promoteCh {
			cr.Err = promoteErr
		}
		crs = append(crs, cr)
	}
	var rows []packageRow
	var versions []string
	for _, p := range pkgs {
		row := packageRow{Package: p}
		if b, err := base64.StdEncoding.DecodeString(p.SHA256); err == nil {
			row.SHA256Hex = hex.EncodeToString(b)
		}
		for _, c := range chans {
			if c.PackageVersion == p.Version {
				row.Channels = append(row.Channels, c.Name)
			}
		}
		rows = append(rows, row)
		if !slices.Contains(versions, p.Version) {
			versions = append(versions, p.Version)
		}
	}
	slices.SortFunc(versions, func(a, b string) int { return -updatesvc.CompareVersions(a, b) })
	if form == nil {
		form = &packageForm{Arch: "amd64"}
	}
	h.render(w, r, v, status, "packages", "Packages · "+app.Name, map[string]any{
		"App": app, "Packages": rows, "Channels": crs, "Versions": versions, "Form": form,
		"URL": packagesURL(appID), "Flash": packageFlashes[r.URL.Query().Get("done")],
	})
}

// createPackage is POST /apps/{app}/packages.
func (h *Handler) createPackage(w http.ResponseWriter, r *http.Request, v *viewer) {
	appID, err := appParam(r)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	form := packageForm{Version: f("version"), Arch: f("arch"), BaseURL: f("url"), FileName: f("file"), Size: f("size"), SHA256: f("sha256")}
	p, ok := form.pkg(appID)
	if !ok {
		h.renderPackages(w, r, v, http.StatusUnprocessableEntity, &form, "", "")
		return
	}
	if err := h.svc.CreatePackage(r.Context(), p); err != nil {
		switch {
		case errors.Is(err, store.ErrConflict):
			form.Errors["form"] = fmt.Sprintf("Package %s (%s) already exists.", p.Version, p.Arch)
		case errors.Is(err, store.ErrInvalid):
			form.Errors["form"] = err.Error()
		default:
			h.fail(w, r, v, err)
			return
		}
		h.renderPackages(w, r, v, http.StatusUnprocessableEntity, &form, "", "")
		return
	}
	h.log.Info("dashboard: package created", "app", appID, "version", p.Version, "arch", p.Arch, "token", v.token.Name)
	http.Redirect(w, r, packagesURL(appID)+"?done=created", http.StatusSeeOther)
}

// promote is POST /apps/{app}/channels/{channel}/promote: point the
// channel at the form's version.
func (h *Handler) promote(w http.ResponseWriter, r *http.Request, v *viewer) {
	appID, err := appParam(r)
	if err != nil {
		h.fail(w, r, v, err)
		return
	}
	ch := r.PathValue("channel")
	version := strings.TrimSpace(r.PostFormValue("version"))
	if version == "" {
		h.renderPackages(w, r, v, http.StatusUnprocessableEntity, nil, ch, "Choose a version.")
		return
	}
	err = h.svc.SetChannelPackage(r.Context(), appID, ch, version)
	switch {
	case errors.Is(err, store.ErrNotFound):
		h.errorPage(w, r, v, http.StatusNotFound, fmt.Sprintf("There is no channel %q.", ch))
		return
	case errors.Is(err, store.ErrInvalid):
		h.renderPackages(w, r, v, http.StatusUnprocessableEntity, nil, ch, fmt.Sprintf("No package has version %q; create it first.", version))
		return
	case err != nil:
		h.fail(w, r, v, err)
		return
	}
	h.log.Info("dashboard: channel promoted", "app", appID, "channel", ch, "version", version, "token", v.token.Name)
	http.Redirect(w, r, packagesURL(appID)+"?done=promoted", http.StatusSeeOther)
}
