package postgres

import (
	"context"
	"time"

	"github.com/flotilla/flotilla/internal/store"
)

// The Store's Queries: reads run on the pool (several statements in one
// read-only snapshot), writes in their own read-write transaction, so
// multi-statement writes such as DeletePackage are atomic, every write
// shows up in the transaction metrics and deadlocks are retried as in
// Update.

// CreateApp implements store.Queries.
func (s *Store) CreateApp(ctx context.Context, a store.Application) error {
	return s.write(ctx, false, func(q *queries) error { return q.CreateApp(ctx, a) })
}

// GetApp implements store.Queries.
func (s *Store) GetApp(ctx context.Context, id string) (store.Application, error) {
	return s.r.GetApp(ctx, id)
}

// ListApps implements store.Queries.
func (s *Store) ListApps(ctx context.Context) ([]store.Application, error) {
	return s.r.ListApps(ctx)
}

// UpdateApp implements store.Queries.
func (s *Store) UpdateApp(ctx context.Context, a store.Application) error {
	return s.write(ctx, false, func(q *queries) error { return q.UpdateApp(ctx, a) })
}

// DeleteApp implements store.Queries.
func (s *Store) DeleteApp(ctx context.Context, id string) error {
	return s.write(ctx, false, func(q *queries) error { return q.DeleteApp(ctx, id) })
}

// CreatePackage implements store.Queries.
func (s *Store) CreatePackage(ctx context.Context, p store.Package) error {
	return s.write(ctx, false, func(q *queries) error { return q.CreatePackage(ctx, p) })
}

// GetPackage implements store.Queries.
func (s *Store) GetPackage(ctx context.Context, appID, version, arch string) (store.Package, error) {
	return s.r.GetPackage(ctx, appID, version, arch)
}

// ListPackages implements store.Queries.
func (s *Store) ListPackages(ctx context.Context, appID string) ([]store.Package, error) {
	return s.r.ListPackages(ctx, appID)
}

// DeletePackage implements store.Queries.
func (s *Store) DeletePackage(ctx context.Context, appID, version, arch string) error {
	return s.write(ctx, false, func(q *queries) error { return q.DeletePackage(ctx, appID, version, arch) })
}

// CreateChannel implements store.Queries.
func (s *Store) CreateChannel(ctx context.Context, c store.Channel) error {
	return s.write(ctx, false, func(q *queries) error { return q.CreateChannel(ctx, c) })
}

// GetChannel implements store.Queries.
func (s *Store) GetChannel(ctx context.Context, appID, name string) (store.Channel, error) {
	return s.r.GetChannel(ctx, appID, name)
}

// ListChannels implements store.Queries.
func (s *Store) ListChannels(ctx context.Context, appID string) ([]store.Channel, error) {
	return s.r.ListChannels(ctx, appID)
}

// SetChannelPackage implements store.Queries.
func (s *Store) SetChannelPackage(ctx context.Context, appID, name, version string, at time.Time) error {
	return s.write(ctx, false, func(q *queries) error { return q.SetChannelPackage(ctx, appID, name, version, at) })
}

// DeleteChannel implements store.Queries.
func (s *Store) DeleteChannel(ctx context.Context, appID, name string) error {
	return s.write(ctx, false, func(q *queries) error { return q.DeleteChannel(ctx, appID, name) })
}

// CreateGroup implements store.Queries.
func (s *Store) CreateGroup(ctx context.Context, g store.Group) error {
	return s.write(ctx, false, func(q *queries) error { return q.CreateGroup(ctx, g) })
}

// GetGroup implements store.Queries.
func (s *Store) GetGroup(ctx context.Context, appID, name string) (store.Group, error) {
	return s.r.GetGroup(ctx, appID, name)
}

// GetGroupByTrack implements store.Queries.
func (s *Store) GetGroupByTrack(ctx context.Context, appID, track string) (store.Group, error) {
	return s.r.GetGroupByTrack(ctx, appID, track)
}

// ListGroups implements store.Queries.
func (s *Store) ListGroups(ctx context.Context, appID string) ([]store.Group, error) {
	return s.r.ListGroups(ctx, appID)
}

// UpdateGroup implements store.Queries.
func (s *Store) UpdateGroup(ctx context.Context, g store.Group) error {
	return s.write(ctx, false, func(q *queries) error { return q.UpdateGroup(ctx, g) })
}

// DeleteGroup implements store.Queries.
func (s *Store) DeleteGroup(ctx context.Context, appID, name string) error {
	return s.write(ctx, false, func(q *queries) error { return q.DeleteGroup(ctx, appID, name) })
}

// GetInstance implements store.Queries.
func (s *Store) GetInstance(ctx context.Context, appID, machineID string) (store.Instance, error) {
	return s.r.GetInstance(ctx, appID, machineID)
}

// PutInstance implements store.Queries.
func (s *Store) PutInstance(ctx context.Context, in store.Instance) error {
	return s.write(ctx, false, func(q *queries) error { return q.PutInstance(ctx, in) })
}

// DeleteInstance implements store.Queries.
func (s *Store) DeleteInstance(ctx context.Context, appID, machineID string) error {
	return s.write(ctx, false, func(q *queries) error { return q.DeleteInstance(ctx, appID, machineID) })
}

// TouchInstance implements store.Queries.
func (s *Store) TouchInstance(ctx context.Context, appID, machineID string, at time.Time) error {
	return s.write(ctx, false, func(q *queries) error { return q.TouchInstance(ctx, appID, machineID, at) })
}

// ListInstances implements store.Queries.
func (s *Store) ListInstances(ctx context.Context, f store.InstanceFilter) (store.InstancePage, error) {
	return s.r.ListInstances(ctx, f)
}

// AddStatusChange implements store.Queries.
func (s *Store) AddStatusChange(ctx context.Context, c store.StatusChange) (id int64, err error) {
	err = s.write(ctx, false, func(q *queries) error {
		id, err = q.AddStatusChange(ctx, c)
		return err
	})
	return id, err
}

// ListStatusChanges implements store.Queries.
func (s *Store) ListStatusChanges(ctx context.Context, appID, machineID string, limit int) ([]store.StatusChange, error) {
	return s.r.ListStatusChanges(ctx, appID, machineID, limit)
}

// AddEvent implements store.Queries.
func (s *Store) AddEvent(ctx context.Context, e store.Event) (id int64, err error) {
	err = s.write(ctx, false, func(q *queries) error {
		id, err = q.AddEvent(ctx, e)
		return err
	})
	return id, err
}

// ListEvents implements store.Queries.
func (s *Store) ListEvents(ctx context.Context, appID, machineID string, limit int) ([]store.Event, error) {
	return s.r.ListEvents(ctx, appID, machineID, limit)
}

// AddActivity implements store.Queries.
func (s *Store) AddActivity(ctx context.Context, a store.Activity) (id int64, err error) {
	err = s.write(ctx, false, func(q *queries) error {
		id, err = q.AddActivity(ctx, a)
		return err
	})
	return id, err
}

// ListActivity implements store.Queries.
func (s *Store) ListActivity(ctx context.Context, f store.ActivityFilter) ([]store.Activity, error) {
	return s.r.ListActivity(ctx, f)
}

// GroupCounts implements store.Queries.
func (s *Store) GroupCounts(ctx context.Context, appID, group string, grantedSince, inProgressSince time.Time) (store.GroupCounts, error) {
	return s.r.GroupCounts(ctx, appID, group, grantedSince, inProgressSince)
}

// CountFailures implements store.Queries.
func (s *Store) CountFailures(ctx context.Context, appID, group, version string, since time.Time) (int, error) {
	return s.r.CountFailures(ctx, appID, group, version, since)
}

// FailedMachines implements store.Queries.
func (s *Store) FailedMachines(ctx context.Context, appID, group, version string, since time.Time, limit int) ([]string, error) {
	return s.r.FailedMachines(ctx, appID, group, version, since, limit)
}

// ExpiredGrants implements store.Queries.
func (s *Store) ExpiredGrants(ctx context.Context, appID, group string, grantedBefore time.Time) ([]store.Instance, error) {
	return s.r.ExpiredGrants(ctx, appID, group, grantedBefore)
}

// RolloutStatus implements store.Queries.
func (s *Store) RolloutStatus(ctx context.Context, appID, group string) (store.RolloutStatus, error) {
	return s.r.RolloutStatus(ctx, appID, group)
}

// CountNotOnVersion implements store.Queries.
func (s *Store) CountNotOnVersion(ctx context.Context, appID, group, version string) (int, error) {
	return s.r.CountNotOnVersion(ctx, appID, group, version)
}

// CreateToken implements store.Queries.
func (s *Store) CreateToken(ctx context.Context, t store.Token) error {
	return s.write(ctx, false, func(q *queries) error { return q.CreateToken(ctx, t) })
}

// GetTokenByHash implements store.Queries.
func (s *Store) GetTokenByHash(ctx context.Context, hash string) (store.Token, error) {
	return s.r.GetTokenByHash(ctx, hash)
}

// DeleteToken implements store.Queries.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	return s.write(ctx, false, func(q *queries) error { return q.DeleteToken(ctx, id) })
}

// ListTokens implements store.Queries.
func (s *Store) ListTokens(ctx context.Context) ([]store.Token, error) {
	return s.r.ListTokens(ctx)
}
