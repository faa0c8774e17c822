package agent

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/flotilla/flotilla/omaha"
)

// updaterVersion is sent as request@version. Servers do not key on it; it
// tells operators reading raw requests which client spoke.
const updaterVersion = "flotilla-agent-1"

// failure is an update error with update_engine's code, so servers and
// dashboards built for update_engine decode it.
type failure struct {
	code int
	err  error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func fail(code int, format string, args ...any) *failure {
	return &failure{code: code, err: fmt.Errorf(format, args...)}
}

// serverURL returns the configured Omaha URL, or "" when updates are off.
func (a *Agent) serverURL(c UpdateConf) string {
	s := strings.TrimSpace(c.Get(KeyServer))
	if s == "" || s == ServerDisabled {
		return ""
	}
	return s
}

func (a *Agent) group(c UpdateConf) string {
	if g := c.Get(KeyGroup); g != "" {
		return g
	}
	return "stable"
}

// newRequest builds the envelope and app attributes update_engine sends.
func (a *Agent) newRequest(c UpdateConf, source string) (*omaha.Request, *omaha.App) {
	ver := a.currentVersion()
	a.mu.Lock()
	aleph := a.st.AlephVersion
	a.mu.Unlock()
	arch := runtime.GOARCH
	if arch == "amd64" {
		arch = "x86_64"
	}
	req := &omaha.Request{
		Protocol: "3.0", Version: updaterVersion, UpdaterVersion: updaterVersion,
		InstallSource: source, IsMachine: 1,
		OS: &omaha.OS{Version: "Chateau", Platform: "CoreOS", ServicePack: ver + "_" + arch},
		Apps: []omaha.App{{
			AppID: "{" + a.cfg.AppID + "}", Version: ver, Track: a.group(c),
			BootID: "{" + trimBraces(a.cfg.BootID) + "}", MachineID: a.cfg.MachineID,
			MachineAlias: c.Get(KeyMachineAlias), OEM: a.cfg.OEM, OEMVersion: a.cfg.OEMVersion,
			AlephVersion: aleph, Lang: "en-US", Board: a.cfg.Board,
		}},
	}
	return req, &req.Apps[0]
}

// check is one update check: ping + updatecheck + the 3/2 (or 3/0/44
// after a rollback) event. It returns the server's PollInterval, if any.
func (a *Agent) check(ctx context.Context, source string) time.Duration {
	c := a.readConf()
	url := a.serverURL(c)
	if url == "" {
		a.log.Debug("updates disabled (SERVER unset or disabled)")
		return 0
	}
	_ = a.update(func(s *State) { s.Status = StatusChecking })
	req, app := a.newRequest(c, source)
	app.Ping = &omaha.Ping{Active: 1}
	app.UpdateCheck = &omaha.UpdateCheck{}
	a.mu.Lock()
	rollback, prev := a.st.RollbackVersion, a.st.PreviousVersion
	a.mu.Unlock()
	if rollback != "" {
		app.Events = []omaha.Event{{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultError, ErrorCode: omaha.CodeRollbackError}}
	} else {
		if prev == "" {
			prev = noPreviousVersion
		}
		app.Events = []omaha.Event{{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccessReboot, PreviousVersion: prev}}
	}
	a.omaha.URL = url
	resp, err := a.omaha.Send(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			_ = a.update(func(s *State) { s.Status = StatusIdle })
			return 0
		}
		code := omaha.CodeOmahaRequestError
		var he *omaha.HTTPError
		switch {
		case errors.As(err, &he):
			code = omaha.CodeOmahaRequestHTTPResponseBase + min(max(he.StatusCode, 0), 999)
		case errors.Is(err, omaha.ErrMalformed):
			code = omaha.CodeOmahaRequestXMLParse
		}
		a.checkFailed(code, err)
		return 0
	}
	a.metrics.checks.WithLabelValues("ok").Inc()
	_ = a.update(func(s *State) {
		s.LastChecked = a.cfg.Now()
		s.Failures = 0
		// Both reports go out once; the server has them now.
		s.PreviousVersion, s.RollbackVersion = "", ""
	})
	ra := findApp(resp, a.cfg.AppID)
	if ra == nil || ra.Status != omaha.AppStatusOK || ra.UpdateCheck == nil {
		st := "no app in the answer"
		if ra != nil {
			st = "app status " + ra.Status
		}
		a.reportFailure(ctx, fail(omaha.CodeOmahaResponseInvalid, "check: the server did not answer the update check (%s)", st))
		return 0
	}
	uc := ra.UpdateCheck
	poll := time.Duration(uc.PollInterval) * time.Second
	switch uc.Status {
	case omaha.UpdateStatusOK:
	case omaha.UpdateStatusNoUpdate:
		a.log.Info("no update", "version", a.currentVersion())
		_ = a.update(func(s *State) { s.Status = StatusIdle })
		return poll
	default:
		a.reportFailure(ctx, fail(omaha.CodeOmahaResponseInvalid, "check: the server answered the update check with status %q", uc.Status))
		return poll
	}
	p, ferr := a.pendingFromResponse(uc)
	if ferr != nil {
		a.reportFailure(ctx, ferr)
		return poll
	}
	if p.Version == a.currentVersion() {
		a.log.Warn("the server offered the version already running; ignoring", "version", p.Version)
		_ = a.update(func(s *State) { s.Status = StatusIdle })
		return poll
	}
	a.mu.Lock()
	blocked := a.st.isBlocked(p.Version)
	a.mu.Unlock()
	if blocked {
		// No event: the server already heard 3/0/44 for this version;
		// reporting again would count the same rollback twice.
		a.log.Warn("the server offered a version this machine rolled back from; not installing it",
			"version", p.Version, "hint", "flotilla agent unblock "+p.Version)
		_ = a.update(func(s *State) {
			s.Status = StatusIdle
			s.LastError = &LastError{Code: omaha.CodeOmahaUpdateIgnoredPerPolicy, Name: "OmahaUpdateIgnoredPerPolicy",
				Message: "offered " + p.Version + ", which this machine rolled back from; run `flotilla agent unblock " + p.Version + "` to allow it", At: a.cfg.Now()}
		})
		return poll
	}
	a.log.Info("update available", "version", p.Version, "size", p.Size, "url", p.URL)
	if err := a.update(func(s *State) {
		s.Pending = p
		s.Status = StatusUpdateAvailable
		s.NewVersion, s.NewSize = p.Version, p.Size
	}); err != nil {
		return poll
	}
	a.install(ctx)
	return poll
}

// pendingFromResponse turns an "ok" update check into an install plan.
func (a *Agent) pendingFromResponse(uc *omaha.UpdateCheckResponse) (*Pending, *failure) {
	if err := uc.Validate(); err != nil {
		return nil, fail(omaha.CodeOmahaResponseInvalid, "check: %w", err)
	}
	urls := uc.PayloadURLs()
	if len(urls) == 0 {
		return nil, fail(omaha.CodeOmahaResponseInvalid, "check: the answer has no payload URL")
	}
	pkg := uc.Manifest.Packages[0]
	sum := pkg.HashSHA256
	if sum == "" {
		if pi := uc.Manifest.Postinstall(); pi != nil {
			sum = pi.SHA256
		}
	}
	digest, err := decodeSHA256(sum)
	if err != nil {
		return nil, fail(omaha.CodeOmahaResponseInvalid, "check: package %s: %w", pkg.Name, err)
	}
	return &Pending{
		Version: uc.Manifest.Version, URL: urls[0], Size: pkg.Size, SHA256: digest,
		Step: stepDownload, StartedAt: a.cfg.Now(),
	}, nil
}

// decodeSHA256 accepts hex (ue-rs, sha256sum) and base64 (go-omaha,
// Nebraska) and returns lowercase hex.
func decodeSHA256(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return hex.EncodeToString(b), nil
		}
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
		return hex.EncodeToString(b), nil
	}
	if s == "" {
		return "", errors.New("no SHA-256 in the answer")
	}
	return "", fmt.Errorf("SHA-256 %q is neither 64 hex digits nor base64 of 32 bytes", s)
}

func findApp(resp *omaha.Response, appID string) *omaha.ResponseApp {
	for i := range resp.Apps {
		if id, err := omaha.NormalizeAppID(resp.Apps[i].AppID); err == nil && id == appID {
			return &resp.Apps[i]
		}
	}
	if len(resp.Apps) == 1 {
		return &resp.Apps[0]
	}
	return nil
}

// checkFailed records a failed check and backs off; nothing is reported
// because the server could not be reached.
func (a *Agent) checkFailed(code int, err error) {
	a.metrics.checks.WithLabelValues("error").Inc()
	a.log.Warn("update check failed", "err", err, "code", code)
	_ = a.update(func(s *State) {
		s.Status = StatusIdle
		s.Failures++
		s.LastError = &LastError{Code: code, Name: omaha.DecodeErrorCode(int64(code)).Name, Message: err.Error(), At: a.cfg.Now()}
	})
}

// sendEvent reports progress. Events are best effort, as in update_engine:
// a lost event must not stop an update.
func (a *Agent) sendEvent(ctx context.Context, ev omaha.Event) {
	c := a.readConf()
	url := a.serverURL(c)
	if url == "" {
		return
	}
	req, app := a.newRequest(c, omaha.InstallSourceScheduler)
	app.Events = []omaha.Event{ev}
	cl := *a.omaha
	cl.URL = url
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := cl.Send(ctx, req); err != nil {
		a.log.Warn("event not delivered", "event", ev.String(), "err", err)
		return
	}
	a.log.Debug("event sent", "event", ev.String())
}

// ping is what a machine waiting for its reboot sends instead of checks.
func (a *Agent) ping(ctx context.Context) {
	c := a.readConf()
	url := a.serverURL(c)
	if url == "" {
		return
	}
	req, app := a.newRequest(c, omaha.InstallSourceScheduler)
	app.Ping = &omaha.Ping{Active: 1}
	cl := *a.omaha
	cl.URL = url
	if _, err := cl.Send(ctx, req); err != nil {
		a.log.Warn("ping failed", "err", err)
		return
	}
	_ = a.update(func(s *State) { s.LastChecked = a.cfg.Now() })
}

// reportFailure ends an update attempt: the error event goes to the
// server (REPORTING_ERROR_EVENT), the pending work is dropped, the status
// returns to idle and the next check backs off.
func (a *Agent) reportFailure(ctx context.Context, f *failure) {
	a.metrics.failures.WithLabelValues(fmt.Sprint(f.code)).Inc()
	a.log.Error("update failed", "code", f.code, "name", omaha.DecodeErrorCode(int64(f.code)).Name, "err", f.err)
	a.mu.Lock()
	resumed := a.st.Pending != nil && a.st.Pending.Resumed
	a.mu.Unlock()
	raw := int64(f.code)
	if resumed {
		raw |= omaha.FlagResumed
	}
	_ = a.update(func(s *State) {
		s.Status = StatusReportingError
		s.LastError = &LastError{Code: f.code, Name: omaha.DecodeErrorCode(raw).Name, Message: f.err.Error(), At: a.cfg.Now()}
	})
	a.sendEvent(ctx, omaha.Event{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultError, ErrorCode: raw})
	_ = a.update(func(s *State) {
		s.Pending = nil
		s.Status = StatusIdle
		s.NewVersion, s.NewSize = "", 0
		s.Failures++
	})
	a.setProgress(0)
}
