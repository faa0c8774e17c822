package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	v1 "github.com/flotilla/flotilla/api/v1"
)

// SetGroupConfig stores doc as the group's next config version
// (PUT /api/v1/apps/{app}/groups/{name}/config). A document equal to the
// latest version comes back as that version with Unchanged set. A document
// that fails validation is an invalid error listing the findings.
func (c *Client) SetGroupConfig(ctx context.Context, appID, group, doc, comment string) (v1.GroupConfig, error) {
	var out v1.GroupConfig
	err := c.call(ctx, http.MethodPut, []string{"apps", appID, "groups", group, "config"}, nil,
		v1.PutGroupConfig{Document: doc, Comment: comment}, &out)
	return out, err
}

// GetGroupConfig returns one version of a group's config with its document;
// version 0 is the latest (GET /api/v1/apps/{app}/groups/{name}/config).
func (c *Client) GetGroupConfig(ctx context.Context, appID, group string, version int) (v1.GroupConfig, error) {
	var q url.Values
	if version > 0 {
		q = url.Values{"version": {strconv.Itoa(version)}}
	}
	var out v1.GroupConfig
	err := c.get(ctx, []string{"apps", appID, "groups", group, "config"}, q, &out)
	return out, err
}

// GroupConfigHistory lists a group's config versions, newest first, without
// documents (GET …/config/history).
func (c *Client) GroupConfigHistory(ctx context.Context, appID, group string) ([]v1.GroupConfig, error) {
	var out []v1.GroupConfig
	err := c.get(ctx, []string{"apps", appID, "groups", group, "config", "history"}, nil, &out)
	return out, err
}

// DiffGroupConfig returns a unified diff between two versions of a group's
// config (GET …/config/diff?from=A&to=B); 0 means the latest.
func (c *Client) DiffGroupConfig(ctx context.Context, appID, group string, from, to int) (v1.GroupConfigDiff, error) {
	q := url.Values{"from": {versionParam(from)}, "to": {versionParam(to)}}
	var out v1.GroupConfigDiff
	err := c.get(ctx, []string{"apps", appID, "groups", group, "config", "diff"}, q, &out)
	return out, err
}

func versionParam(v int) string {
	if v <= 0 {
		return "latest"
	}
	return strconv.Itoa(v)
}

// GroupConfigStatus says which machines of a group run which config
// version and which drifted or failed (GET …/config/status).
func (c *Client) GroupConfigStatus(ctx context.Context, appID, group string) (v1.GroupConfigStatus, error) {
	var out v1.GroupConfigStatus
	err := c.get(ctx, []string{"apps", appID, "groups", group, "config", "status"}, nil, &out)
	return out, err
}
