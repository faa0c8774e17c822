package restapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/client"
	"github.com/flotilla/flotilla/internal/servertest"
	"github.com/flotilla/flotilla/omaha"
)

const flatcar = omaha.FlatcarAppID

// rawDo sends one request without the client and returns the response
// (body read into the returned bytes).
func rawDo(t *testing.T, method, url string, body []byte, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp, b.Bytes()
}

func TestGroupConfigAPI(t *testing.T) {
	srv := servertest.Start(t)
	ctx := t.Context()
	c := client.New(srv.URL(), srv.AdminToken, nil)

	// The seeded stable group has no config yet.
	if _, err := c.GetGroupConfig(ctx, flatcar, "stable", 0); !client.IsNotFound(err) {
		t.Fatalf("GetGroupConfig before any version: err = %v, want not found", err)
	}
	if _, err := c.SetGroupConfig(ctx, flatcar, "no-such-group", "#cloud-config\n", ""); !client.IsNotFound(err) {
		t.Fatalf("SetGroupConfig of an unknown group: err = %v, want not found", err)
	}
	// Validation errors come back as 422 with the findings and positions.
	_, err := c.SetGroupConfig(ctx, flatcar, "stable", "#cloud-config\nwrite_files:\n  - content: x\n", "")
	if !client.IsInvalid(err) || !strings.Contains(err.Error(), "3:") {
		t.Fatalf("SetGroupConfig of an invalid document: err = %v, want invalid with a position", err)
	}

	doc1 := "#cloud-config\nhostname: one\n"
	doc2 := "#cloud-config\nhostname: two\nunknown_key: 1\n"
	g1, err := c.SetGroupConfig(ctx, flatcar, "stable", doc1, "first")
	if err != nil || g1.Version != 1 || g1.Unchanged || g1.Format != "cloud-config" || g1.Author != "admin" {
		t.Fatalf("first SetGroupConfig = %+v, %v", g1, err)
	}
	again, err := c.SetGroupConfig(ctx, flatcar, "stable", doc1, "again")
	if err != nil || again.Version != 1 || !again.Unchanged {
		t.Fatalf("SetGroupConfig of the same document = %+v, %v; want version 1, unchanged", again, err)
	}
	g2, err := c.SetGroupConfig(ctx, flatcar, "stable", doc2, "second")
	if err != nil || g2.Version != 2 || len(g2.Warnings) == 0 {
		t.Fatalf("second SetGroupConfig = %+v, %v; want version 2 with a warning about unknown_key", g2, err)
	}
	// A new version is in the activity log (newest first); a PUT of the
	// unchanged document is not.
	acts, err := c.ListActivity(ctx, flatcar, client.ActivityQuery{Group: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	var changes []string
	for _, a := range acts.Activity {
		if a.Kind == "config-changed" {
			if a.Group != "stable" || a.Severity != "info" {
				t.Errorf("config-changed entry %+v", a)
			}
			changes = append(changes, a.Message)
		}
	}
	want := []string{
		"machine config of group stable changed to version 2 by admin: second",
		"machine config of group stable changed to version 1 by admin: first",
	}
	if !slices.Equal(changes, want) {
		t.Errorf("config-changed activity = %q, want %q", changes, want)
	}
	got, err := c.GetGroupConfig(ctx, flatcar, "stable", 1)
	if err != nil || got.Document != doc1 {
		t.Fatalf("GetGroupConfig version 1 = %+v, %v", got, err)
	}
	hist, err := c.GroupConfigHistory(ctx, flatcar, "stable")
	if err != nil || len(hist) != 2 || hist[0].Version != 2 || hist[0].Document != "" {
		t.Fatalf("history = %+v, %v", hist, err)
	}
	d, err := c.DiffGroupConfig(ctx, flatcar, "stable", 1, 0)
	if err != nil || d.From != 1 || d.To != 2 || !strings.Contains(d.Diff, "-hostname: one\n+hostname: two\n") {
		t.Fatalf("diff 1..latest = %+v, %v", d, err)
	}

	// Agents: no token, ETag and If-None-Match.
	url := srv.URL() + "/v1/config/" + flatcar + "/stable"
	resp, body := rawDo(t, http.MethodGet, url, nil, nil)
	var ac v1.AgentConfig
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &ac) != nil || ac.Version != 2 || ac.Document != doc2 {
		t.Fatalf("agent GET = %d %s", resp.StatusCode, body)
	}
	etag := resp.Header.Get("ETag")
	if etag != `"`+ac.SHA256+`"` {
		t.Fatalf("ETag = %q, want the quoted sha256 %q", etag, ac.SHA256)
	}
	if resp, _ := rawDo(t, http.MethodGet, url, nil, map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
		t.Fatalf("agent GET with If-None-Match = %d, want 304", resp.StatusCode)
	}
	if resp, _ := rawDo(t, http.MethodGet, srv.URL()+"/v1/config/"+flatcar+"/nope", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("agent GET of an unknown group = %d, want 404", resp.StatusCode)
	}

	report := func(r v1.AgentConfigReport) int {
		b, _ := json.Marshal(r)
		resp, body := rawDo(t, http.MethodPost, url+"/report", b, map[string]string{"Content-Type": "application/json"})
		if resp.StatusCode/100 != 2 {
			t.Logf("report: %d %s", resp.StatusCode, body)
		}
		return resp.StatusCode
	}
	if s := report(v1.AgentConfigReport{MachineID: "../etc", Version: 1}); s != http.StatusUnprocessableEntity {
		t.Errorf("report with a bad machine id = %d, want 422", s)
	}
	if s := report(v1.AgentConfigReport{MachineID: "m1", Version: 1, Error: strings.Repeat("x", 300<<10)}); s != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized report = %d, want 413", s)
	}
	if s := report(v1.AgentConfigReport{MachineID: "M1", Version: 2}); s != http.StatusNoContent {
		t.Errorf("report = %d, want 204", s)
	}
	if s := report(v1.AgentConfigReport{MachineID: "m2", Version: 1, Drift: []string{"file /etc/motd: content"}}); s != http.StatusNoContent {
		t.Errorf("report = %d, want 204", s)
	}
	st, err := c.GroupConfigStatus(ctx, flatcar, "stable")
	if err != nil {
		t.Fatal(err)
	}
	if st.Latest != 2 || st.OnLatest != 1 || st.Drifted != 1 || len(st.Machines) != 2 ||
		st.Machines[0].MachineID != "m1" || st.ByVersion["1"] != 1 || st.ByVersion["2"] != 1 {
		t.Fatalf("status = %+v", st)
	}

	// Viewers read but do not write.
	tok, err := c.CreateToken(ctx, v1.CreateToken{Name: "ro", Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	ro := client.New(srv.URL(), tok.Secret, nil)
	if _, err := ro.GetGroupConfig(ctx, flatcar, "stable", 0); err != nil {
		t.Errorf("viewer GetGroupConfig: %v", err)
	}
	if _, err := ro.SetGroupConfig(ctx, flatcar, "stable", doc1, ""); !client.IsForbidden(err) {
		t.Errorf("viewer SetGroupConfig: err = %v, want forbidden", err)
	}
}
