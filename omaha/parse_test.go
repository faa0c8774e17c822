package omaha

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// sharedFixtures is the repository-level directory of real update_engine
// bodies, relative to this package.
const sharedFixtures = "../../shared/fixtures/omaha"

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flatcarApp is the <app> shared by the hand-written Flatcar testdata.
func flatcarApp() App {
	return App{
		AppID:         "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}",
		Version:       "3975.2.1",
		Track:         "stable",
		BootID:        "{5d0c1a9e-3f7b-4e2a-9c61-0b8f2a4d7e13}",
		OEM:           "qemu",
		OEMVersion:    "0.1.0",
		AlephVersion:  "3602.2.3",
		MachineID:     "8f14e45fceea167a5a36dedd4bea2543",
		MachineAlias:  "web-03",
		Lang:          "en-US",
		Board:         "amd64-usr",
		HardwareClass: "",
		DeltaOkay:     false,
	}
}

func flatcarRequest(app App) *Request {
	return &Request{
		Protocol:       "3.0",
		Version:        "update_engine-0.4.10",
		UpdaterVersion: "update_engine-0.4.10",
		InstallSource:  InstallSourceScheduler,
		IsMachine:      1,
		OS:             &OS{Version: "Chateau", Platform: "CoreOS", ServicePack: "3975.2.1_x86_64"},
		Apps:           []App{app},
	}
}

func TestParseRequestTestdata(t *testing.T) {
	ping := &Ping{Active: 1}
	with := func(f func(*App)) App { a := flatcarApp(); f(&a); return a }

	onDemand := flatcarRequest(with(func(a *App) {
		a.Ping, a.UpdateCheck = ping, &UpdateCheck{}
		a.Events = []Event{{Type: 3, Result: 2, PreviousVersion: "0.0.0.0"}}
	}))
	onDemand.InstallSource = InstallSourceOnDemand

	legacy := flatcarRequest(with(func(a *App) {
		a.Track, a.Board = "{11A585F6-9418-4DF0-8863-78B2FD3240F8}", "arm64-usr"
		a.Ping, a.UpdateCheck = ping, &UpdateCheck{}
		a.Events = []Event{{Type: 3, Result: 2, PreviousVersion: "0.0.0.0"}}
	}))
	legacy.OS.ServicePack = "3975.2.1_aarch64"

	tests := []struct {
		file string
		want *Request
	}{
		{"request-update-check.xml", flatcarRequest(with(func(a *App) {
			a.Ping, a.UpdateCheck = ping, &UpdateCheck{}
			a.Events = []Event{{Type: EventTypeUpdateComplete, Result: EventResultSuccessReboot, PreviousVersion: "3815.2.5"}}
		}))},
		{"request-event-download-started.xml", flatcarRequest(with(func(a *App) {
			a.Events = []Event{{Type: EventTypeUpdateDownloadStarted, Result: EventResultSuccess}}
		}))},
		{"request-event-download-finished.xml", flatcarRequest(with(func(a *App) {
			a.Events = []Event{{Type: EventTypeUpdateDownloadFinished, Result: EventResultSuccess}}
		}))},
		{"request-event-installed.xml", flatcarRequest(with(func(a *App) {
			a.Events = []Event{{Type: EventTypeUpdateComplete, Result: EventResultSuccess}}
		}))},
		{"request-event-error.xml", flatcarRequest(with(func(a *App) {
			a.Events = []Event{{Type: EventTypeUpdateComplete, Result: EventResultError, ErrorCode: CodePayloadHashMismatch | FlagTestOmahaUrl}}
		}))},
		{"request-rollback.xml", flatcarRequest(with(func(a *App) {
			a.Ping, a.UpdateCheck = ping, &UpdateCheck{}
			a.Events = []Event{{Type: EventTypeUpdateComplete, Result: EventResultError, ErrorCode: CodeRollbackError | FlagTestOmahaUrl}}
		}))},
		{"request-ping-only.xml", flatcarRequest(with(func(a *App) { a.Ping = ping }))},
		{"request-on-demand.xml", onDemand},
		{"request-legacy-group.xml", legacy},
		{"request-go-omaha.xml", &Request{
			Protocol:  "3.0",
			Version:   "go-omaha",
			UserID:    "8f14e45fceea167a5a36dedd4bea2543",
			SessionID: "6c1a7a1e-2b4f-4d53-8f0e-0d3b8f6a9e21",
			IsMachine: 1,
			OS:        &OS{Platform: "linux", Arch: "x64"},
			Apps: []App{{
				AppID:   FlatcarAppID,
				Version: "3975.2.1",
				Track:   "beta",
				OEM:     "qemu",
				// Filled from userid and sessionid.
				MachineID:   "8f14e45fceea167a5a36dedd4bea2543",
				BootID:      "6c1a7a1e-2b4f-4d53-8f0e-0d3b8f6a9e21",
				Ping:        ping,
				UpdateCheck: &UpdateCheck{},
				Events:      []Event{{Type: 3, Result: 2}},
			}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseRequest(bytes.NewReader(readFile(t, filepath.Join("testdata", tt.file))))
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRequest mismatch (-want +got):\n%s", diff)
			}
			checkRequestRoundTrip(t, got)
		})
	}
}

// checkRequestRoundTrip asserts that req marshals and parses back equal.
func checkRequestRoundTrip(t *testing.T, req *Request) {
	t.Helper()
	b, err := req.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if !bytes.HasPrefix(b, []byte(`<?xml version="1.0" encoding="UTF-8"?>`)) {
		t.Errorf("Marshal output lacks the XML header:\n%s", b)
	}
	again, err := ParseRequest(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("re-parse of marshalled request: %v\n%s", err, b)
	}
	if diff := cmp.Diff(req, again); diff != "" {
		t.Errorf("round trip changed the request (-before +after):\n%s\n%s", diff, b)
	}
}

func checkResponseRoundTrip(t *testing.T, resp *Response) []byte {
	t.Helper()
	b, err := resp.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	again, err := ParseResponse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("re-parse of marshalled response: %v\n%s", err, b)
	}
	if diff := cmp.Diff(resp, again); diff != "" {
		t.Errorf("round trip changed the response (-before +after):\n%s\n%s", diff, b)
	}
	return b
}

func TestLegacyGroupRequest(t *testing.T) {
	req, err := ParseRequest(bytes.NewReader(readFile(t, "testdata/request-legacy-group.xml")))
	if err != nil {
		t.Fatal(err)
	}
	name, ok := LegacyTrack(req.Apps[0].Track)
	if !ok || name != "stable" {
		t.Errorf("LegacyTrack(%q) = %q, %v; want stable, true", req.Apps[0].Track, name, ok)
	}
}

func TestRollbackRequest(t *testing.T) {
	req, err := ParseRequest(bytes.NewReader(readFile(t, "testdata/request-rollback.xml")))
	if err != nil {
		t.Fatal(err)
	}
	ev := req.Apps[0].Events[0]
	if !IsRollback(ev.ErrorCode) {
		t.Errorf("IsRollback(%d) = false", ev.ErrorCode)
	}
	if got, want := DecodeErrorCode(ev.ErrorCode).String(), "RollbackError (44) [TestOmahaUrl]"; got != want {
		t.Errorf("decoded %q, want %q", got, want)
	}
	if got, want := ev.String(), "update complete: error, RollbackError (44) [TestOmahaUrl]"; got != want {
		t.Errorf("Event.String() = %q, want %q", got, want)
	}
	if got := ev.Kind(); got != "3.0" {
		t.Errorf("Kind() = %q, want 3.0", got)
	}
}

func TestSharedFixtures(t *testing.T) {
	if _, err := os.Stat(sharedFixtures); err != nil {
		t.Skipf("shared Omaha fixtures not found at %s (run from the flotilla workspace to include them): %v", sharedFixtures, err)
	}
	t.Run("update/request.xml", func(t *testing.T) {
		req, err := ParseRequest(bytes.NewReader(readFile(t, filepath.Join(sharedFixtures, "chromeos-update-engine/update/request.xml"))))
		if err != nil {
			t.Fatalf("the ChromeOS-era update check must parse: %v", err)
		}
		app := req.Apps[0]
		if req.InstallSource != InstallSourceOnDemand || app.Version != "ForcedUpdate" || app.Track != "dev-channel" ||
			app.BootID != "{7D52A1CC-7066-40F0-91C7-7CB6A871BFDE}" || app.MachineID != "" {
			t.Errorf("unexpected fields: %+v", app)
		}
		if app.Ping == nil || app.Ping.Active != 1 || app.Ping.LastActiveDays != -1 || app.Ping.LastRollCallDays != -1 {
			t.Errorf("ping = %+v, want active=1 a=-1 r=-1", app.Ping)
		}
		if app.UpdateCheck == nil || len(app.Events) != 1 || app.Events[0].Kind() != "3.2" {
			t.Errorf("want updatecheck and one 3.2 event, got %+v %+v", app.UpdateCheck, app.Events)
		}
		if _, err := NormalizeAppID(app.AppID); err != nil {
			t.Errorf("NormalizeAppID(%q): %v", app.AppID, err)
		}
		checkRequestRoundTrip(t, req)
	})
	t.Run("no-update/request.xml", func(t *testing.T) {
		req, err := ParseRequest(bytes.NewReader(readFile(t, filepath.Join(sharedFixtures, "chromeos-update-engine/no-update/request.xml"))))
		if err != nil {
			t.Fatalf("the ChromeOS-era event report must parse: %v", err)
		}
		app := req.Apps[0]
		if app.Track != "" || app.FromTrack != "developer-build" || app.Ping != nil || app.UpdateCheck != nil {
			t.Errorf("unexpected fields: %+v", app)
		}
		if len(app.Events) != 1 || app.Events[0] != (Event{Type: EventTypeUpdateComplete, Result: EventResultSuccess}) {
			t.Errorf("events = %+v, want one 3.1", app.Events)
		}
		checkRequestRoundTrip(t, req)
	})
	t.Run("update/response.xml", func(t *testing.T) {
		resp, err := ParseResponse(bytes.NewReader(readFile(t, filepath.Join(sharedFixtures, "chromeos-update-engine/update/response.xml"))))
		if err != nil {
			t.Fatalf("ParseResponse: %v", err)
		}
		if resp.DayStart.ElapsedSeconds != 49008 || resp.Server != "" {
			t.Errorf("envelope = %+v", resp)
		}
		uc := resp.Apps[0].UpdateCheck
		if err := uc.Validate(); err != nil {
			t.Errorf("Validate: %v", err)
		}
		if got := uc.PayloadURLs(); len(got) != 1 || got[0] != "http://kam:8080/static/update.gz" {
			t.Errorf("PayloadURLs = %q", got)
		}
		a := uc.Manifest.Postinstall()
		if a.SHA256 != "0VAlQW3RE99SGtSB5R4m08antAHO8XDoBMKDyxQT/Mg=" || a.ChromeOSVersion != "9999.0.0" || a.IsDelta != "True" || a.NeedsAdmin != "false" {
			t.Errorf("postinstall action = %+v", a)
		}
		checkResponseRoundTrip(t, resp)
	})
}

// TestReferenceResponse checks the example "ok" answer of the reference: it
// parses, carries every field update_engine needs, and re-encodes them.
func TestReferenceResponse(t *testing.T) {
	resp, err := ParseResponse(bytes.NewReader(readFile(t, "testdata/response-update.xml")))
	if err != nil {
		t.Fatal(err)
	}
	want := &Response{
		Protocol: "3.0",
		Server:   "flotilla",
		Apps: []ResponseApp{{
			AppID:  "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}",
			Status: AppStatusOK,
			Ping:   &PingResponse{Status: "ok"},
			Events: []EventResponse{{Status: "ok"}},
			UpdateCheck: &UpdateCheckResponse{
				Status: UpdateStatusOK,
				URLs:   []URL{{Codebase: "https://updates.example.net/amd64-usr/4081.2.0/"}},
				Manifest: &Manifest{
					Version: "4081.2.0",
					Packages: []Package{
						{Name: "flatcar_production_update.gz", Size: 465881871, Hash: "bh+HmSJWrofZCGq9+Zwr00Id9cE=", Required: true},
						{Name: "oem-qemu.gz", Size: 5242880, Hash: "QKAJ4P9y1yaegzYBGE1UNSbiayw=", HashSHA256: "kQrkxOUNvxVzjR00zQ4DlCa2BzG3W6pDTiaTQNwk7JM="},
					},
					Actions: []Action{{Event: ActionEventPostinstall, SHA256: "3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=", DisablePayloadBackoff: true}},
				},
			},
		}},
	}
	if diff := cmp.Diff(want, resp); diff != "" {
		t.Fatalf("ParseResponse mismatch (-want +got):\n%s", diff)
	}
	if err := resp.Apps[0].UpdateCheck.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	b := checkResponseRoundTrip(t, resp)
	out := string(b)
	for _, s := range []string{
		`<?xml version="1.0" encoding="UTF-8"?>`,
		`<response protocol="3.0" server="flotilla">`,
		`<daystart elapsed_seconds="0"></daystart>`,
		`<app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok">`,
		`<ping status="ok"></ping>`,
		`<event status="ok"></event>`,
		`<updatecheck status="ok">`,
		`<urls>`,
		`<url codebase="https://updates.example.net/amd64-usr/4081.2.0/"></url>`,
		`<manifest version="4081.2.0">`,
		`<package name="flatcar_production_update.gz" size="465881871" hash="bh+HmSJWrofZCGq9+Zwr00Id9cE=" required="true"></package>`,
		`<package name="oem-qemu.gz" size="5242880" hash="QKAJ4P9y1yaegzYBGE1UNSbiayw=" hash_sha256="kQrkxOUNvxVzjR00zQ4DlCa2BzG3W6pDTiaTQNwk7JM=" required="false"></package>`,
		`<action event="postinstall" sha256="3twpmKMOhUE4jamEnUBDF37BM70/RU3ZA6de281oiNs=" DisablePayloadBackoff="true"></action>`,
	} {
		if !strings.Contains(out, s) {
			t.Errorf("marshalled response lacks %s\n%s", s, out)
		}
	}
	// Element order matters to humans reading captures, not to
	// update_engine, but keep it stable: ping, event, updatecheck.
	if !(strings.Index(out, "<ping") < strings.Index(out, "<event") && strings.Index(out, "<event") < strings.Index(out, "<updatecheck")) {
		t.Errorf("children not in ping, event, updatecheck order:\n%s", out)
	}
}

func TestNoUpdateResponse(t *testing.T) {
	resp, err := ParseResponse(bytes.NewReader(readFile(t, "testdata/response-noupdate.xml")))
	if err != nil {
		t.Fatal(err)
	}
	uc := resp.Apps[0].UpdateCheck
	if uc.Status != UpdateStatusNoUpdate || uc.Manifest != nil || uc.URLs != nil {
		t.Errorf("updatecheck = %+v", uc)
	}
	if err := uc.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	b := checkResponseRoundTrip(t, resp)
	if strings.Contains(string(b), "<urls>") || strings.Contains(string(b), "PollInterval") {
		t.Errorf("noupdate answer should carry no URLs or PollInterval:\n%s", b)
	}
}

func TestMarshalBuiltResponse(t *testing.T) {
	// A response built by a server without setting Protocol still gets
	// protocol="3.0", and PollInterval appears when set.
	resp := &Response{Server: "flotilla", Apps: []ResponseApp{{
		AppID: "{" + FlatcarAppID + "}", Status: AppStatusOK,
		UpdateCheck: &UpdateCheckResponse{Status: UpdateStatusNoUpdate, PollInterval: 3600},
	}}}
	b, err := resp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`protocol="3.0"`, `<updatecheck status="noupdate" PollInterval="3600"></updatecheck>`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("output lacks %s:\n%s", s, b)
		}
	}
	if resp.Protocol != "" {
		t.Error("Marshal must not modify the receiver")
	}
	got, err := ParseResponse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got.Apps[0].UpdateCheck.PollInterval != 3600 {
		t.Errorf("PollInterval = %d", got.Apps[0].UpdateCheck.PollInterval)
	}
}

func TestValidate(t *testing.T) {
	good := func() *UpdateCheckResponse {
		return &UpdateCheckResponse{
			Status: UpdateStatusOK,
			URLs:   []URL{{Codebase: "https://example.net/a"}},
			Manifest: &Manifest{
				Version:  "4081.2.0",
				Packages: []Package{{Name: "update.gz", Size: 10, Required: true}},
				Actions:  []Action{{Event: ActionEventPostinstall, SHA256: "x"}},
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(*UpdateCheckResponse)
		want   string // substring of the error; "" means valid
	}{
		{"good", func(*UpdateCheckResponse) {}, ""},
		{"error status", func(u *UpdateCheckResponse) { u.Status = UpdateStatusInternalError }, "error 34"},
		{"no url", func(u *UpdateCheckResponse) { u.URLs = nil }, "<url>"},
		{"empty codebase", func(u *UpdateCheckResponse) { u.URLs[0].Codebase = "" }, "codebase"},
		{"no manifest", func(u *UpdateCheckResponse) { u.Manifest = nil }, "<manifest>"},
		{"no package", func(u *UpdateCheckResponse) { u.Manifest.Packages = nil }, "<package>"},
		{"no name", func(u *UpdateCheckResponse) { u.Manifest.Packages[0].Name = "" }, "no name"},
		{"zero size", func(u *UpdateCheckResponse) { u.Manifest.Packages[0].Size = 0 }, "size 0"},
		{"no postinstall", func(u *UpdateCheckResponse) { u.Manifest.Actions[0].Event = "install" }, "postinstall"},
		{"no sha256", func(u *UpdateCheckResponse) { u.Manifest.Actions[0].SHA256 = "" }, "sha256"},
	}
	var none *UpdateCheckResponse
	if err := none.Validate(); !errors.Is(err, ErrMalformed) || none.PayloadURLs() != nil {
		t.Errorf("nil updatecheck: Validate() = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := good()
			tt.mutate(u)
			err := u.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if got := u.PayloadURLs(); len(got) != 1 || got[0] != "https://example.net/a/update.gz" {
					t.Errorf("PayloadURLs = %q", got)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want ErrMalformed mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	const app = `<app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" version="1.2.3">`
	valid := string(readFile(t, "testdata/request-update-check.xml"))
	tests := []struct {
		name     string
		response bool
		body     string
		want     string // substring expected in the message
	}{
		{"empty body", false, "", "body is empty"},
		{"whitespace body", false, " \n\t", "body is empty"},
		{"not xml", false, "this is not XML", "the body is not XML"},
		{"json", false, `{"protocol":"3.0"}`, "the body is not XML"},
		{"only a comment", false, "<!-- nothing -->", "no XML element"},
		{"truncated", false, valid[:len(valid)/2], "truncated body"},
		{"mismatched tags", false, `<request protocol="3.0"><app></request>`, "not well-formed XML"},
		{"wrong root", false, `<response protocol="3.0"></response>`, "root element is <response>, expected <request>"},
		{"wrong root response", true, `<request protocol="3.0"></request>`, "root element is <request>, expected <response>"},
		{"two roots", false, `<request protocol="3.0"></request><request protocol="3.0"></request>`, "second top-level element"},
		{"trailing text", false, `<request protocol="3.0"></request>junk`, "text after the <request> element"},
		{"no protocol", false, `<request></request>`, "no protocol attribute"},
		{"wrong protocol", false, `<request protocol="2.0"></request>`, `protocol="2.0"`},
		{"wrong protocol response", true, `<response protocol="4.0"></response>`, `only Omaha protocol "3.0"`},
		{"missing appid", false, `<request protocol="3.0"><app version="1.2.3"></app></request>`, "<app> number 1 has no appid"},
		{"blank appid", false, `<request protocol="3.0"><app appid="  "></app></request>`, "has no appid"},
		{"missing appid response", true, `<response protocol="3.0"><app status="ok"></app></response>`, "has no appid"},
		{"missing eventtype", false, `<request protocol="3.0">` + app + `<event eventresult="1"></event></app></request>`, "has no eventtype attribute"},
		{"missing eventresult", false, `<request protocol="3.0">` + app + `<event eventtype="3"></event></app></request>`, "has no eventresult attribute"},
		{"non-numeric eventtype", false, `<request protocol="3.0">` + app + `<event eventtype="update" eventresult="1"></event></app></request>`, `eventtype="update" is not a whole number`},
		{"non-numeric eventresult", false, `<request protocol="3.0">` + app + `<event eventtype="3" eventresult="ok"></event></app></request>`, `eventresult="ok" is not a whole number`},
		{"non-numeric errorcode", false, `<request protocol="3.0">` + app + `<event eventtype="3" eventresult="0" errorcode="0x22"></event></app></request>`, `errorcode="0x22"`},
		{"eventtype out of range", false, `<request protocol="3.0">` + app + `<event eventtype="99999999999" eventresult="0"></event></app></request>`, "out of range"},
		{"bad ismachine", false, `<request protocol="3.0" ismachine="yes"></request>`, "ismachine"},
		{"bad delta_okay", false, `<request protocol="3.0">` + app[:len(app)-1] + ` delta_okay="maybe"></app></request>`, "delta_okay"},
		{"bad ping", false, `<request protocol="3.0">` + app + `<ping active="y"></ping></app></request>`, "active"},
		{"huge attribute", false, `<request protocol="3.0" version="` + strings.Repeat("a", MaxAttributeLength+1) + `"></request>`, "more than the 8192 allowed"},
		{"huge body", false, `<request protocol="3.0">` + strings.Repeat(" ", MaxDocumentSize) + `</request>`, "larger than"},
		{"deep nesting", false, `<request protocol="3.0">` + strings.Repeat("<x>", 40) + strings.Repeat("</x>", 40) + `</request>`, "nested more than"},
		{"undefined entity", false, `<request protocol="3.0" version="&nope;"></request>`, "not well-formed XML"},
		{"latin1", false, `<?xml version="1.0" encoding="ISO-8859-1"?><request protocol="3.0"></request>`, "other than UTF-8"},
		{"invalid utf8", false, "<request protocol=\"3.0\" version=\"\xff\"></request>", "not well-formed XML"},
		{"bad size", true, `<response protocol="3.0"><app appid="x"><updatecheck status="ok"><manifest><packages><package name="a" size="big"></package></packages></manifest></updatecheck></app></response>`, `size="big"`},
		{"negative size", true, `<response protocol="3.0"><app appid="x"><updatecheck status="ok"><manifest><packages><package name="a" size="-1"></package></packages></manifest></updatecheck></app></response>`, "must not be negative"},
		{"bad poll interval", true, `<response protocol="3.0"><app appid="x"><updatecheck status="noupdate" PollInterval="soon"></updatecheck></app></response>`, "PollInterval"},
		{"bad required", true, `<response protocol="3.0"><app appid="x"><updatecheck status="ok"><manifest><packages><package name="a" required="yes"></package></packages></manifest></updatecheck></app></response>`, "is not true or false"},
		{"bad daystart", true, `<response protocol="3.0"><daystart elapsed_seconds="noon"></daystart></response>`, "elapsed_seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			prefix := "parse request: "
			if tt.response {
				prefix = "parse response: "
				_, err = ParseResponse(strings.NewReader(tt.body))
			} else {
				_, err = ParseRequest(strings.NewReader(tt.body))
			}
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error does not wrap ErrMalformed: %v", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tt.want) {
				t.Errorf("error = %q\nwant prefix %q and mention of %q", msg, prefix, tt.want)
			}
			if len(msg) > 400 {
				t.Errorf("error message is %d bytes; values must be clipped", len(msg))
			}
		})
	}
}

// TestParseTolerant covers inputs real or plausible clients send that must
// not be rejected.
func TestParseTolerant(t *testing.T) {
	tests := []struct {
		name string
		body string
		want func(*Request) bool
	}{
		{"no header, no apps", `<request protocol="3.0"></request>`, func(r *Request) bool { return r.Apps == nil && r.OS == nil }},
		{"namespaced root", `<o:request xmlns:o="urn:x" protocol="3.0"></o:request>`, func(r *Request) bool { return r.Protocol == "3.0" }},
		{"comments and padding", "\n<!-- hi --><request protocol=\"3.0\"><!-- c --></request>\n", func(r *Request) bool { return true }},
		{"numbers with space and sign", `<request protocol="3.0"><app appid="x"><event eventtype=" 13 " eventresult="+1" errorcode=""></event></app></request>`,
			func(r *Request) bool { return r.Apps[0].Events[0] == Event{Type: 13, Result: 1} }},
		{"negative errorcode (DevMode bit)", `<request protocol="3.0"><app appid="x"><event eventtype="3" eventresult="0" errorcode="-2147483638"></event></app></request>`,
			func(r *Request) bool { return r.Apps[0].Events[0].ErrorCode == -2147483638 }},
		{"unknown elements and attributes", `<request protocol="3.0" foo="bar"><hw physmemory="4"/><app appid="x" cohort="c"><data name="x">y</data></app></request>`,
			func(r *Request) bool { return len(r.Apps) == 1 }},
		{"multi-app", `<request protocol="3.0"><app appid="a"></app><app appid="b"><ping/></app></request>`,
			func(r *Request) bool { return len(r.Apps) == 2 && r.Apps[1].Ping != nil }},
		{"utf-8 lower case declaration", `<?xml version="1.0" encoding="utf-8"?><request protocol="3.0"></request>`, func(r *Request) bool { return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseRequest(strings.NewReader(tt.body))
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if !tt.want(req) {
				t.Errorf("unexpected result %+v", req)
			}
			checkRequestRoundTrip(t, req)
		})
	}
}

func TestMultipleManifestsKeepFirst(t *testing.T) {
	body := `<response protocol="3.0"><app appid="x" status="ok"><updatecheck status="ok">
<manifest version="1.0.0" is_floor="true" floor_reason="needs migration"></manifest>
<manifest version="2.0.0" is_target="true"></manifest></updatecheck></app></response>`
	resp, err := ParseResponse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	m := resp.Apps[0].UpdateCheck.Manifest
	if m.Version != "1.0.0" || !m.IsFloor || m.FloorReason != "needs migration" || m.IsTarget {
		t.Errorf("manifest = %+v, want the first one", m)
	}
}

func TestEventNames(t *testing.T) {
	tests := []struct {
		ev   Event
		want string
	}{
		{Event{Type: 3, Result: 2, PreviousVersion: "3815.2.5"}, "update complete: success, reboot (previous version 3815.2.5)"},
		{Event{Type: 13, Result: 1}, "update download started: success"},
		{Event{Type: 14, Result: 1}, "update download finished: success"},
		{Event{Type: 3, Result: 9}, "update complete: update deferred"},
		{Event{Type: 800, Result: 1}, "installed (CoreRoller): success"},
		{Event{Type: 3, Result: 0, ErrorCode: 268435466}, "update complete: error, PayloadHashMismatch (10) [TestOmahaUrl]"},
		{Event{Type: 77, Result: 42}, "event type 77: event result 42"},
	}
	for _, tt := range tests {
		if got := tt.ev.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.ev, got, tt.want)
		}
	}
}
