package updatesvc

import (
	"context"
	"fmt"
	"strings"

	"github.com/flotilla/flotilla/internal/rollout"
	"github.com/flotilla/flotilla/internal/store"
)

// Configuration changes go through these methods rather than the store, so
// that rollouts start when a channel moves, pauses are logged with their
// reason, and the Omaha path sees the change at once.

// CreateApp creates an application.
func (s *Service) CreateApp(ctx context.Context, a store.Application) error {
	a.CreatedAt = s.now().UTC()
	if err := s.st.CreateApp(ctx, a); err != nil {
		return fmt.Errorf("create app: %w", err)
	}
	s.cache.invalidate()
	return nil
}

// UpdateApp changes an application's name and description.
func (s *Service) UpdateApp(ctx context.Context, a store.Application) error {
	defer s.cache.invalidate()
	return s.st.UpdateApp(ctx, a)
}

// DeleteApp deletes an application without channels, groups or packages.
func (s *Service) DeleteApp(ctx context.Context, id string) error {
	defer s.cache.invalidate()
	return s.st.DeleteApp(ctx, id)
}

// CreatePackage adds a package.
func (s *Service) CreatePackage(ctx context.Context, p store.Package) error {
	p.CreatedAt = s.now().UTC()
	defer s.cache.invalidate()
	return s.st.CreatePackage(ctx, p)
}

// DeletePackage removes a package.
func (s *Service) DeletePackage(ctx context.Context, appID, version, arch string) error {
	defer s.cache.invalidate()
	return s.st.DeletePackage(ctx, appID, version, arch)
}

// CreateChannel creates a channel, optionally already pointing at a version.
func (s *Service) CreateChannel(ctx context.Context, c store.Channel) error {
	now := s.now().UTC()
	version := c.PackageVersion
	c.PackageVersion = ""
	c.CreatedAt, c.UpdatedAt = now, now
	err := s.st.Update(ctx, func(q store.TxQueries) error {
		if err := q.CreateChannel(ctx, c); err != nil {
			return err
		}
		if version != "" {
			return q.SetChannelPackage(ctx, c.AppID, c.Name, version, now)
		}
		return nil
	})
	s.cache.invalidate()
	return err
}

// DeleteChannel deletes a channel no group follows.
func (s *Service) DeleteChannel(ctx context.Context, appID, name string) error {
	defer s.cache.invalidate()
	return s.st.DeleteChannel(ctx, appID, name)
}

// SetChannelPackage points a channel at version and starts the rollout of
// that version in every group following the channel.
func (s *Service) SetChannelPackage(ctx context.Context, appID, channel, version string) error {
	now := s.now().UTC()
	var acts []store.Activity
	err := s.st.Update(ctx, func(q store.TxQueries) error {
		acts = acts[:0]
		old, err := q.GetChannel(ctx, appID, channel)
		if err != nil {
			return err
		}
		if err := q.SetChannelPackage(ctx, appID, channel, version, now); err != nil {
			return err
		}
		a, err := addActivity(ctx, q, store.Activity{
			AppID: appID, Channel: channel, Kind: store.ActivityChannelUpdated, Severity: store.SeverityInfo,
			Version: version, At: now,
			Message: fmt.Sprintf("channel %s now points at %s (was %s)", channel, version, orNone(old.PackageVersion)),
		})
		if err != nil {
			return err
		}
		acts = append(acts, a)
		groups, err := q.ListGroups(ctx, appID)
		if err != nil {
			return err
		}
		for _, g := range groups {
			if g.Channel != channel || g.RolloutVersion == version {
				continue
			}
			g, err := q.LockGroup(ctx, appID, g.Name)
			if err != nil {
				return err
			}
			a, err := s.startRollout(ctx, q, &g, version, now)
			if err != nil {
				return err
			}
			acts = append(acts, a)
			g.UpdatedAt = now
			if err := q.UpdateGroup(ctx, g); err != nil {
				return err
			}
		}
		return nil
	})
	s.cache.invalidate()
	if err != nil {
		return fmt.Errorf("set channel package: %w", err)
	}
	s.publish(acts)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// CreateGroup creates a group. An empty track defaults to the name; the
// policy is validated. If the channel already points at a version, the
// group's rollout of it starts now.
func (s *Service) CreateGroup(ctx context.Context, g store.Group) error {
	if g.Track == "" {
		g.Track = g.Name
	}
	if err := rollout.ValidatePolicy(g.Policy); err != nil {
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	now := s.now().UTC()
	g.CreatedAt, g.UpdatedAt = now, now
	err := s.st.Update(ctx, func(q store.TxQueries) error {
		ch, err := q.GetChannel(ctx, g.AppID, g.Channel)
		if err != nil {
			return fmt.Errorf("%w: channel %q does not exist", store.ErrInvalid, g.Channel)
		}
		if ch.PackageVersion != "" {
			g.RolloutVersion, g.RolloutStartedAt = ch.PackageVersion, now
		}
		return q.CreateGroup(ctx, g)
	})
	s.cache.invalidate()
	return err
}

// GroupChange describes an edit of a group's settings; nil fields are kept.
type GroupChange struct {
	Description *string
	Track       *string
	Channel     *string
	Policy      *store.Policy
	// Pause/resume requests; Reason is logged with a pause.
	Pause  *bool
	Reason string
	Actor  string
}

// UpdateGroup applies a change to a group and logs it in the activity.
func (s *Service) UpdateGroup(ctx context.Context, appID, name string, c GroupChange) (store.Group, error) {
	now := s.now().UTC()
	var out store.Group
	var acts []store.Activity
	err := s.st.Update(ctx, func(q store.TxQueries) error {
		acts = acts[:0]
		g, err := q.LockGroup(ctx, appID, name)
		if err != nil {
			return err
		}
		if c.Description != nil {
			g.Description = *c.Description
		}
		if c.Track != nil {
			if *c.Track == "" {
				return fmt.Errorf("%w: track must not be empty", store.ErrInvalid)
			}
			g.Track = *c.Track
		}
		if c.Channel != nil && *c.Channel != g.Channel {
			ch, err := q.GetChannel(ctx, appID, *c.Channel)
			if err != nil {
				return fmt.Errorf("%w: channel %q does not exist", store.ErrInvalid, *c.Channel)
			}
			g.Channel = ch.Name
			if ch.PackageVersion != "" && ch.PackageVersion != g.RolloutVersion {
				a, err := s.startRollout(ctx, q, &g, ch.PackageVersion, now)
				if err != nil {
					return err
				}
				acts = append(acts, a)
			}
		}
		if c.Policy != nil {
			if err := rollout.ValidatePolicy(*c.Policy); err != nil {
				return fmt.Errorf("%w: %w", store.ErrInvalid, err)
			}
			paused := g.Policy.Paused
			g.Policy = *c.Policy
			g.Policy.Paused = paused // pausing has its own verb and log entry
			a, err := addActivity(ctx, q, store.Activity{
				AppID: appID, Group: g.Name, Kind: store.ActivityPolicyChanged, Severity: store.SeverityInfo,
				At: now, Message: fmt.Sprintf("policy of group %s changed%s: %s", g.Name, by(c.Actor), describePolicy(g.Policy)),
			})
			if err != nil {
				return err
			}
			acts = append(acts, a)
		}
		if c.Pause != nil && *c.Pause != g.Policy.Paused {
			g.Policy.Paused = *c.Pause
			kind, msg := store.ActivityRolloutResumed, fmt.Sprintf("group %s resumed%s", g.Name, by(c.Actor))
			sev := store.SeverityInfo
			g.PausedReason = ""
			if *c.Pause {
				kind, sev = store.ActivityRolloutPaused, store.SeverityWarning
				msg = fmt.Sprintf("group %s paused%s", g.Name, by(c.Actor))
				if c.Reason != "" {
					msg += ": " + c.Reason
				}
				g.PausedReason = c.Reason
			}
			a, err := addActivity(ctx, q, store.Activity{
				AppID: appID, Group: g.Name, Kind: kind, Severity: sev, Version: g.RolloutVersion, At: now, Message: msg,
			})
			if err != nil {
				return err
			}
			acts = append(acts, a)
		}
		g.UpdatedAt = now
		if err := q.UpdateGroup(ctx, g); err != nil {
			return err
		}
		out = g
		return nil
	})
	s.cache.invalidate()
	if err != nil {
		return store.Group{}, fmt.Errorf("update group: %w", err)
	}
	s.publish(acts)
	return out, nil
}

func by(actor string) string {
	if actor == "" {
		return ""
	}
	return " by " + actor
}

func describePolicy(p store.Policy) string {
	var parts []string
	if p.MaxUpdatesPerPeriod > 0 {
		parts = append(parts, fmt.Sprintf("%d updates per %s", p.MaxUpdatesPerPeriod, p.Period))
	} else {
		parts = append(parts, "no rate limit")
	}
	if p.MaxInProgress > 0 {
		parts = append(parts, fmt.Sprintf("at most %d in progress", p.MaxInProgress))
	}
	if p.RolloutPercent < 100 {
		s := fmt.Sprintf("%g%% of machines", p.RolloutPercent)
		if p.RampDuration > 0 {
			s += fmt.Sprintf(" ramping to 100%% over %s", p.RampDuration)
		}
		parts = append(parts, s)
	}
	if len(p.Windows) > 0 {
		tz := p.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		parts = append(parts, fmt.Sprintf("windows %s (%s)", strings.Join(p.Windows, ", "), tz))
	}
	if p.UpdateTimeout > 0 {
		parts = append(parts, fmt.Sprintf("timeout %s", p.UpdateTimeout))
	}
	if p.AutoPauseFailures > 0 {
		parts = append(parts, fmt.Sprintf("auto-pause after %d failure(s)", p.AutoPauseFailures))
	}
	if p.OnDemandBypassesLimits {
		parts = append(parts, "on-demand checks bypass limits")
	}
	return strings.Join(parts, ", ")
}

// DeleteGroup deletes a group.
func (s *Service) DeleteGroup(ctx context.Context, appID, name string) error {
	defer s.cache.invalidate()
	return s.st.DeleteGroup(ctx, appID, name)
}

// ExpireGrants turns grants older than their group's update timeout into
// timed-out, so they stop counting as in progress. It returns how many
// instances it changed.
func (s *Service) ExpireGrants(ctx context.Context) (int, error) {
	now := s.now().UTC()
	apps, err := s.st.ListApps(ctx)
	if err != nil {
		return 0, fmt.Errorf("expire grants: %w", err)
	}
	total := 0
	for _, app := range apps {
		groups, err := s.st.ListGroups(ctx, app.ID)
		if err != nil {
			return total, fmt.Errorf("expire grants: %w", err)
		}
		for _, g := range groups {
			if g.Policy.UpdateTimeout <= 0 {
				continue
			}
			var acts []store.Activity
			var changes []store.StatusChange
			n := 0
			err := s.st.Update(ctx, func(q store.TxQueries) error {
				acts, changes, n = acts[:0], changes[:0], 0
				expired, err := q.ExpiredGrants(ctx, app.ID, g.Name, now.Add(-g.Policy.UpdateTimeout))
				if err != nil {
					return err
				}
				var ids []string
				for _, in := range expired {
					in.Status = store.StatusTimedOut
					in.StatusChanged = now
					c := store.StatusChange{
						AppID: in.AppID, MachineID: in.MachineID, Group: g.Name, Status: store.StatusTimedOut,
						Version: in.GrantedVersion, At: now,
					}
					if _, err := q.AddStatusChange(ctx, c); err != nil {
						return err
					}
					changes = append(changes, c)
					if err := q.PutInstance(ctx, in); err != nil {
						return err
					}
					ids = append(ids, in.MachineID)
				}
				n = len(ids)
				if n == 0 {
					return nil
				}
				shown := ids
				if len(shown) > 20 {
					shown = shown[:20]
				}
				a, err := addActivity(ctx, q, store.Activity{
					AppID: app.ID, Group: g.Name, Kind: store.ActivityInstanceTimedOut, Severity: store.SeverityWarning,
					Version: g.RolloutVersion, MachineIDs: shown, At: now,
					Message: fmt.Sprintf("%d machine(s) of group %s did not finish their update within %s", n, g.Name, g.Policy.UpdateTimeout),
				})
				if err != nil {
					return err
				}
				acts = append(acts, a)
				return nil
			})
			if err != nil {
				return total, fmt.Errorf("expire grants of group %s: %w", g.Name, err)
			}
			total += n
			s.m.sweeps.WithLabelValues("timed_out").Add(float64(n))
			s.publishStatus(changes)
			s.publish(acts)
		}
	}
	return total, nil
}
