package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// healthTimeout bounds each health probe when the caller's context allows
// longer.
const healthTimeout = 2 * time.Second

// healthKey is read (never written) by Health.
const healthKey = "/flotilla/health"

// Health checks that the cluster serves linearizable reads through this
// process's client, which needs the local member (or the external
// endpoints) connected to a quorum, and that no alarm (such as NOSPACE,
// which stops all writes) is raised.
func (e *Etcd) Health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if _, err := e.client.Get(ctx, healthKey); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("etcd read: no answer within %s (no quorum, or etcd unreachable): %w", healthTimeout, err)
		}
		return fmt.Errorf("etcd read: %w", err)
	}
	alarms, err := e.client.AlarmList(ctx)
	if err != nil {
		return fmt.Errorf("etcd alarms: %w", err)
	}
	if len(alarms.Alarms) > 0 {
		var s []string
		for _, a := range alarms.Alarms {
			s = append(s, fmt.Sprintf("%s on member %x", a.Alarm, a.MemberID))
		}
		return fmt.Errorf("etcd alarm: %s", strings.Join(s, ", "))
	}
	return nil
}

// MemberHealth is one cluster member as ClusterHealth sees it.
type MemberHealth struct {
	ID         uint64
	Name       string
	ClientURLs []string
	PeerURLs   []string
	// Healthy means the member answered a status request and knows a
	// leader, i.e. it is part of a working quorum.
	Healthy bool
	// Leader means the member is the raft leader.
	Leader bool
	// Err says why the member is not healthy (nil when it is).
	Err error
}

// ClusterHealth lists the cluster's members and probes each at its client
// URLs. It fails only when the member list itself cannot be read; an
// unreachable member is reported as not healthy. Without a quorum the list
// comes from the local member's (possibly stale) view and every member
// shows as unhealthy, since none knows a leader.
func (e *Etcd) ClusterHealth(ctx context.Context) ([]MemberHealth, error) {
	lctx, cancel := context.WithTimeout(ctx, healthTimeout)
	list, err := e.client.MemberList(lctx)
	cancel()
	if err != nil {
		sctx, cancel := context.WithTimeout(ctx, healthTimeout)
		var serr error
		list, serr = e.client.MemberList(sctx, clientv3.WithSerializable())
		cancel()
		if serr != nil {
			return nil, fmt.Errorf("etcd member list: %w", errors.Join(err, serr))
		}
	}
	out := make([]MemberHealth, len(list.Members))
	var wg sync.WaitGroup
	for i, m := range list.Members {
		out[i] = MemberHealth{
			ID:         m.ID,
			Name:       m.Name,
			ClientURLs: slices.Clone(m.ClientURLs),
			PeerURLs:   slices.Clone(m.PeerURLs),
		}
		if len(m.ClientURLs) == 0 {
			out[i].Err = errors.New("member has not started yet (no client URLs published)")
			continue
		}
		wg.Go(func() { e.probeMember(ctx, &out[i]) })
	}
	wg.Wait()
	return out, nil
}

// probeMember asks the member for its status at each of its client URLs
// until one answers.
func (e *Etcd) probeMember(ctx context.Context, m *MemberHealth) {
	var errs []error
	for _, ep := range m.ClientURLs {
		sctx, cancel := context.WithTimeout(ctx, healthTimeout)
		st, err := e.client.Status(sctx, ep)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			continue
		}
		switch {
		case st.Leader == 0:
			m.Err = errors.New("member knows no leader (no quorum)")
		case len(st.Errors) > 0:
			m.Err = fmt.Errorf("member reports: %s", strings.Join(st.Errors, "; "))
		default:
			m.Healthy = true
		}
		m.Leader = st.Leader != 0 && st.Leader == st.Header.MemberId
		return
	}
	m.Err = fmt.Errorf("member unreachable: %w", errors.Join(errs...))
}
