package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
)

// ---- applications ----

// AppPatch is the body of PATCH /api/v1/apps/{app}; nil fields are kept.
type AppPatch struct {
	Name        *string `json:"name,omitempty"`
	Description *string `json:"description,omitempty"`
}

// ListApps lists all applications (GET /api/v1/apps).
func (c *Client) ListApps(ctx context.Context) ([]v1.App, error) {
	var out []v1.App
	err := c.get(ctx, []string{"apps"}, nil, &out)
	return out, err
}

// CreateApp creates an application from ID, Name and Description
// (POST /api/v1/apps).
func (c *Client) CreateApp(ctx context.Context, app v1.App) (v1.App, error) {
	var out v1.App
	err := c.call(ctx, http.MethodPost, []string{"apps"}, nil, app, &out)
	return out, err
}

// GetApp returns one application (GET /api/v1/apps/{app}).
func (c *Client) GetApp(ctx context.Context, appID string) (v1.App, error) {
	var out v1.App
	err := c.get(ctx, []string{"apps", appID}, nil, &out)
	return out, err
}

// UpdateApp changes an application's name or description
// (PATCH /api/v1/apps/{app}).
func (c *Client) UpdateApp(ctx context.Context, appID string, p AppPatch) (v1.App, error) {
	var out v1.App
	err := c.call(ctx, http.MethodPatch, []string{"apps", appID}, nil, p, &out)
	return out, err
}

// DeleteApp deletes an application (DELETE /api/v1/apps/{app}).
func (c *Client) DeleteApp(ctx context.Context, appID string) error {
	return c.call(ctx, http.MethodDelete, []string{"apps", appID}, nil, nil, nil)
}

// ---- packages ----

// ListPackages lists an application's packages, newest first
// (GET …/packages).
func (c *Client) ListPackages(ctx context.Context, appID string) ([]v1.Package, error) {
	var out []v1.Package
	err := c.get(ctx, []string{"apps", appID, "packages"}, nil, &out)
	return out, err
}

// CreatePackage registers a package (POST …/packages). AppID in p is
// ignored by the server; the path names the application.
func (c *Client) CreatePackage(ctx context.Context, appID string, p v1.Package) (v1.Package, error) {
	var out v1.Package
	err := c.call(ctx, http.MethodPost, []string{"apps", appID, "packages"}, nil, p, &out)
	return out, err
}

// GetPackage returns one package (GET …/packages/{version}?arch=). An empty
// arch means the server's default, amd64.
func (c *Client) GetPackage(ctx context.Context, appID, version, arch string) (v1.Package, error) {
	var out v1.Package
	err := c.get(ctx, []string{"apps", appID, "packages", version}, archQuery(arch), &out)
	return out, err
}

// DeletePackage deletes one package (DELETE …/packages/{version}?arch=).
func (c *Client) DeletePackage(ctx context.Context, appID, version, arch string) error {
	return c.call(ctx, http.MethodDelete, []string{"apps", appID, "packages", version}, archQuery(arch), nil, nil)
}

func archQuery(arch string) url.Values {
	if arch == "" {
		return nil
	}
	return url.Values{"arch": {arch}}
}

// ---- channels ----

// ListChannels lists an application's channels (GET …/channels).
func (c *Client) ListChannels(ctx context.Context, appID string) ([]v1.Channel, error) {
	var out []v1.Channel
	err := c.get(ctx, []string{"apps", appID, "channels"}, nil, &out)
	return out, err
}

// CreateChannel creates a channel from ch.Name and, optionally, ch.Package
// (POST …/channels).
func (c *Client) CreateChannel(ctx context.Context, appID string, ch v1.Channel) (v1.Channel, error) {
	body := struct {
		Name    string `json:"name"`
		Package string `json:"package,omitempty"`
	}{ch.Name, ch.Package}
	var out v1.Channel
	err := c.call(ctx, http.MethodPost, []string{"apps", appID, "channels"}, nil, body, &out)
	return out, err
}

// GetChannel returns one channel (GET …/channels/{name}).
func (c *Client) GetChannel(ctx context.Context, appID, name string) (v1.Channel, error) {
	var out v1.Channel
	err := c.get(ctx, []string{"apps", appID, "channels", name}, nil, &out)
	return out, err
}

// DeleteChannel deletes a channel (DELETE …/channels/{name}).
func (c *Client) DeleteChannel(ctx context.Context, appID, name string) error {
	return c.call(ctx, http.MethodDelete, []string{"apps", appID, "channels", name}, nil, nil, nil)
}

// SetChannelPackage points a channel at a version, which starts a rollout in
// the groups following it (PUT …/channels/{name}/package).
func (c *Client) SetChannelPackage(ctx context.Context, appID, name, version string) (v1.Channel, error) {
	var out v1.Channel
	err := c.call(ctx, http.MethodPut, []string{"apps", appID, "channels", name, "package"}, nil,
		v1.SetChannelPackage{Version: version}, &out)
	return out, err
}

// ---- groups ----

// ListGroups lists an application's groups (GET …/groups).
func (c *Client) ListGroups(ctx context.Context, appID string) ([]v1.Group, error) {
	var out []v1.Group
	err := c.get(ctx, []string{"apps", appID, "groups"}, nil, &out)
	return out, err
}

// CreateGroup creates a group (POST …/groups).
func (c *Client) CreateGroup(ctx context.Context, appID string, g v1.CreateGroup) (v1.Group, error) {
	var out v1.Group
	err := c.call(ctx, http.MethodPost, []string{"apps", appID, "groups"}, nil, g, &out)
	return out, err
}

// GetGroup returns one group (GET …/groups/{name}).
func (c *Client) GetGroup(ctx context.Context, appID, name string) (v1.Group, error) {
	var out v1.Group
	err := c.get(ctx, []string{"apps", appID, "groups", name}, nil, &out)
	return out, err
}

// UpdateGroup changes a group's description, track or channel
// (PATCH …/groups/{name}).
func (c *Client) UpdateGroup(ctx context.Context, appID, name string, u v1.UpdateGroup) (v1.Group, error) {
	var out v1.Group
	err := c.call(ctx, http.MethodPatch, []string{"apps", appID, "groups", name}, nil, u, &out)
	return out, err
}

// DeleteGroup deletes a group (DELETE …/groups/{name}).
func (c *Client) DeleteGroup(ctx context.Context, appID, name string) error {
	return c.call(ctx, http.MethodDelete, []string{"apps", appID, "groups", name}, nil, nil, nil)
}

// PauseGroup stops granting updates in a group (POST …/groups/{name}/pause).
// reason may be empty.
func (c *Client) PauseGroup(ctx context.Context, appID, name, reason string) (v1.Group, error) {
	var out v1.Group
	err := c.call(ctx, http.MethodPost, []string{"apps", appID, "groups", name, "pause"}, nil,
		v1.PauseGroup{Reason: reason}, &out)
	return out, err
}

// ResumeGroup resumes a paused group (POST …/groups/{name}/resume).
func (c *Client) ResumeGroup(ctx context.Context, appID, name string) (v1.Group, error) {
	var out v1.Group
	err := c.call(ctx, http.MethodPost, []string{"apps", appID, "groups", name, "resume"}, nil, nil, &out)
	return out, err
}

// SetPolicy replaces a group's whole rollout policy (PUT …/groups/{name}/policy).
func (c *Client) SetPolicy(ctx context.Context, appID, name string, p v1.Policy) (v1.Group, error) {
	var out v1.Group
	err := c.call(ctx, http.MethodPut, []string{"apps", appID, "groups", name, "policy"}, nil, p, &out)
	return out, err
}

// PatchPolicy changes the non-nil fields of a group's rollout policy
// (PATCH …/groups/{name}/policy).
func (c *Client) PatchPolicy(ctx context.Context, appID, name string, p v1.PolicyPatch) (v1.Group, error) {
	var out v1.Group
	err := c.call(ctx, http.MethodPatch, []string{"apps", appID, "groups", name, "policy"}, nil, p, &out)
	return out, err
}

// GroupStatus returns a group's rollout status (GET …/groups/{name}/status).
func (c *Client) GroupStatus(ctx context.Context, appID, name string) (v1.GroupStatus, error) {
	var out v1.GroupStatus
	err := c.get(ctx, []string{"apps", appID, "groups", name, "status"}, nil, &out)
	return out, err
}

// ---- instances ----

// InstanceQuery filters and pages ListInstances. Zero fields do not filter.
type InstanceQuery struct {
	Group      string
	Status     string // a status word, e.g. "error"
	Version    string
	Prefix     string    // machine id or alias prefix
	SeenBefore time.Time // last check before this time
	SeenAfter  time.Time // last check after this time
	Sort       string    // "machine_id" (default) or "-last_check"
	Cursor     string    // NextCursor of the previous page
	Limit      int       // page size; 0 = server default
}

func (q InstanceQuery) values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("group", q.Group)
	set("status", q.Status)
	set("version", q.Version)
	set("prefix", q.Prefix)
	if !q.SeenBefore.IsZero() {
		v.Set("seen_before", q.SeenBefore.UTC().Format(time.RFC3339))
	}
	if !q.SeenAfter.IsZero() {
		v.Set("seen_after", q.SeenAfter.UTC().Format(time.RFC3339))
	}
	set("sort", q.Sort)
	set("cursor", q.Cursor)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// ListInstances returns one page of an application's instances
// (GET …/instances). Pass the result's NextCursor as q.Cursor for the next.
func (c *Client) ListInstances(ctx context.Context, appID string, q InstanceQuery) (v1.InstanceList, error) {
	var out v1.InstanceList
	err := c.get(ctx, []string{"apps", appID, "instances"}, q.values(), &out)
	return out, err
}

// ListAllInstances follows cursors from q.Cursor to the last page and
// returns every instance in one list (NextCursor empty). q.Limit is the
// page size.
func (c *Client) ListAllInstances(ctx context.Context, appID string, q InstanceQuery) (v1.InstanceList, error) {
	var all v1.InstanceList
	seen := map[string]bool{}
	for {
		page, err := c.ListInstances(ctx, appID, q)
		if err != nil {
			return all, err
		}
		all.Instances = append(all.Instances, page.Instances...)
		all.Total = page.Total
		if page.NextCursor == "" {
			return all, nil
		}
		if seen[page.NextCursor] {
			return all, errors.New("list instances: server repeated a cursor")
		}
		seen[page.NextCursor] = true
		q.Cursor = page.NextCursor
	}
}

// GetInstance returns one instance (GET …/instances/{machine_id}).
func (c *Client) GetInstance(ctx context.Context, appID, machineID string) (v1.Instance, error) {
	var out v1.Instance
	err := c.get(ctx, []string{"apps", appID, "instances", machineID}, nil, &out)
	return out, err
}

// DeleteInstance forgets an instance (DELETE …/instances/{machine_id}).
func (c *Client) DeleteInstance(ctx context.Context, appID, machineID string) error {
	return c.call(ctx, http.MethodDelete, []string{"apps", appID, "instances", machineID}, nil, nil, nil)
}

// InstanceHistory returns an instance's status changes and events, newest
// first, at most limit of each (0 = server default, 100)
// (GET …/instances/{machine_id}/history?limit=).
func (c *Client) InstanceHistory(ctx context.Context, appID, machineID string, limit int) (v1.InstanceHistory, error) {
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {strconv.Itoa(limit)}}
	}
	var out v1.InstanceHistory
	err := c.get(ctx, []string{"apps", appID, "instances", machineID, "history"}, q, &out)
	return out, err
}

// ---- activity ----

// ActivityQuery filters and pages ListActivity. Zero fields do not filter.
type ActivityQuery struct {
	Group  string
	Since  time.Time // only entries at or after this time
	Before int64     // paging: only entries with a smaller ID (NextBefore of the previous page)
	Limit  int       // 0 = server default
}

// ListActivity returns one page of an application's activity log, newest
// first (GET …/activity).
func (c *Client) ListActivity(ctx context.Context, appID string, q ActivityQuery) (v1.ActivityList, error) {
	v := url.Values{}
	if q.Group != "" {
		v.Set("group", q.Group)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	if q.Before > 0 {
		v.Set("before", strconv.FormatInt(q.Before, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out v1.ActivityList
	err := c.get(ctx, []string{"apps", appID, "activity"}, v, &out)
	return out, err
}

// ---- error codes ----

// DecodeErrorCode decodes a raw update_engine error code as machines report
// it (GET /api/v1/errorcodes/{code}).
func (c *Client) DecodeErrorCode(ctx context.Context, code int64) (v1.ErrorCode, error) {
	var out v1.ErrorCode
	err := c.get(ctx, []string{"errorcodes", strconv.FormatInt(code, 10)}, nil, &out)
	return out, err
}

// ---- tokens ----

// ListTokens lists API tokens without their secrets (GET /api/v1/tokens;
// admin only).
func (c *Client) ListTokens(ctx context.Context) ([]v1.Token, error) {
	var out []v1.Token
	err := c.get(ctx, []string{"tokens"}, nil, &out)
	return out, err
}

// CreateToken creates an API token and returns it with its secret, which
// is shown only this once (POST /api/v1/tokens).
func (c *Client) CreateToken(ctx context.Context, t v1.CreateToken) (v1.CreatedToken, error) {
	var out v1.CreatedToken
	err := c.call(ctx, http.MethodPost, []string{"tokens"}, nil, t, &out)
	return out, err
}

// DeleteToken revokes an API token (DELETE /api/v1/tokens/{id}).
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, []string{"tokens", id}, nil, nil, nil)
}

// ListLocks returns every reboot group's semaphore (GET /api/v1/locks).
func (c *Client) ListLocks(ctx context.Context) (v1.LockGroupList, error) {
	var out v1.LockGroupList
	err := c.get(ctx, []string{"locks"}, nil, &out)
	return out, err
}

// GetLock returns one reboot group's semaphore (GET /api/v1/locks/{group}).
func (c *Client) GetLock(ctx context.Context, group string) (v1.LockGroup, error) {
	var out v1.LockGroup
	err := c.get(ctx, []string{"locks", group}, nil, &out)
	return out, err
}

// PatchLock changes a reboot group's max, hold deadline or auto-release
// (PATCH /api/v1/locks/{group}).
func (c *Client) PatchLock(ctx context.Context, group string, p v1.LockGroupPatch) (v1.LockGroup, error) {
	var out v1.LockGroup
	err := c.call(ctx, http.MethodPatch, []string{"locks", group}, nil, p, &out)
	return out, err
}

// LockSlot takes a slot for a machine (POST /api/v1/locks/{group}/holders).
func (c *Client) LockSlot(ctx context.Context, group, id string) (v1.LockGroup, error) {
	var out v1.LockGroup
	err := c.call(ctx, http.MethodPost, []string{"locks", group, "holders"}, nil, v1.LockRequest{ID: id}, &out)
	return out, err
}

// UnlockSlot force-releases a machine's slot
// (DELETE /api/v1/locks/{group}/holders/{id}).
func (c *Client) UnlockSlot(ctx context.Context, group, id string) error {
	return c.call(ctx, http.MethodDelete, []string{"locks", group, "holders", id}, nil, nil, nil)
}

// LockActivity lists a reboot group's lock events
// (GET /api/v1/locks/{group}/activity).
func (c *Client) LockActivity(ctx context.Context, group string) (v1.ActivityList, error) {
	var out v1.ActivityList
	err := c.get(ctx, []string{"locks", group, "activity"}, nil, &out)
	return out, err
}
