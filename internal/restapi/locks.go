package restapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	v1 "github.com/flotilla/flotilla/api/v1"
	"github.com/flotilla/flotilla/internal/rebootlock"
	"github.com/flotilla/flotilla/internal/store"
)

// LockActivityScope is the application id under which reboot-lock events
// are kept in the activity log: they concern machines, not one
// application.
const LockActivityScope = "reboot-lock"

// SetLocks adds the reboot-lock routes (/api/v1/locks) served by m.
func (h *Handler) SetLocks(m *rebootlock.Manager) {
	h.locks = m
	h.handle("GET /api/v1/locks", h.listLocks)
	h.handle("GET /api/v1/locks/{group}", h.getLock)
	h.handle("PATCH /api/v1/locks/{group}", h.patchLock)
	h.handle("POST /api/v1/locks/{group}/holders", h.lockHolder)
	h.handle("DELETE /api/v1/locks/{group}/holders/{id}", h.unlockHolder)
	h.handle("GET /api/v1/locks/{group}/activity", h.lockActivity)
}

func lockError(err error) error {
	switch {
	case errors.Is(err, rebootlock.ErrInvalidGroup), errors.Is(err, rebootlock.ErrInvalidID), errors.Is(err, rebootlock.ErrInvalidConfig):
		return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "%v", err)
	case errors.Is(err, rebootlock.ErrFull):
		return errorf(http.StatusConflict, v1.KindConflict, "%v", err)
	case errors.Is(err, rebootlock.ErrNotHolder):
		return errorf(http.StatusNotFound, v1.KindNotFound, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusServiceUnavailable, v1.KindInternal, "the lock store (etcd) did not answer in time")
	}
	return err
}

func lockToAPI(s rebootlock.GroupStatus) v1.LockGroup {
	out := v1.LockGroup{Group: s.Group, Max: s.Max, Available: s.Available, HoldDeadline: s.HoldDeadline.String(),
		AutoRelease: s.AutoRelease, Holders: []v1.LockHolder{}, Waiters: []v1.LockWaiter{}}
	for _, h := range s.Holders {
		lh := v1.LockHolder{ID: h.ID, BootID: h.BootID, Token: h.Token, AcquiredAt: h.AcquiredAt, Phase: h.Phase,
			VersionFrom: h.VersionFrom, VersionTo: h.VersionTo, Overdue: h.Overdue}
		if !h.RebootingAt.IsZero() {
			t := h.RebootingAt
			lh.RebootingAt = &t
		}
		out.Holders = append(out.Holders, lh)
	}
	for _, w := range s.Waiters {
		out.Waiters = append(out.Waiters, v1.LockWaiter{ID: w.ID, Since: w.Since, Position: w.Position})
	}
	return out
}

func (h *Handler) listLocks(w http.ResponseWriter, r *http.Request) error {
	groups, err := h.locks.Groups(r.Context())
	if err != nil {
		return lockError(err)
	}
	seen := map[string]bool{}
	out := v1.LockGroupList{Groups: []v1.LockGroup{}}
	for _, g := range append([]string{rebootlock.DefaultGroup}, groups...) {
		if seen[g] {
			continue
		}
		seen[g] = true
		s, err := h.locks.Status(r.Context(), g)
		if err != nil {
			return lockError(err)
		}
		out.Groups = append(out.Groups, lockToAPI(s))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) getLock(w http.ResponseWriter, r *http.Request) error {
	s, err := h.locks.Status(r.Context(), r.PathValue("group"))
	if err != nil {
		return lockError(err)
	}
	writeJSON(w, http.StatusOK, lockToAPI(s))
	return nil
}

func (h *Handler) patchLock(w http.ResponseWriter, r *http.Request) error {
	var p v1.LockGroupPatch
	if err := decode(w, r, &p); err != nil {
		return err
	}
	group := r.PathValue("group")
	cur, err := h.locks.Status(r.Context(), group)
	if err != nil {
		return lockError(err)
	}
	c := rebootlock.GroupConfig{Max: cur.Max, HoldDeadline: cur.HoldDeadline, AutoRelease: cur.AutoRelease}
	if p.Max != nil {
		c.Max = *p.Max
	}
	if p.HoldDeadline != nil {
		d, err := time.ParseDuration(*p.HoldDeadline)
		if err != nil || d <= 0 {
			return errorf(http.StatusUnprocessableEntity, v1.KindInvalid, "hold_deadline %q: want a positive duration such as 30m", *p.HoldDeadline)
		}
		c.HoldDeadline = d
	}
	if p.AutoRelease != nil {
		c.AutoRelease = *p.AutoRelease
	}
	if err := h.locks.SetConfig(r.Context(), group, c); err != nil {
		return lockError(err)
	}
	return h.getLock(w, r)
}

func (h *Handler) lockHolder(w http.ResponseWriter, r *http.Request) error {
	var req v1.LockRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if _, err := h.locks.Lock(r.Context(), r.PathValue("group"), req.ID, rebootlock.LockInfo{}); err != nil {
		return lockError(err)
	}
	s, err := h.locks.Status(r.Context(), r.PathValue("group"))
	if err != nil {
		return lockError(err)
	}
	writeJSON(w, http.StatusOK, lockToAPI(s))
	return nil
}

func (h *Handler) unlockHolder(w http.ResponseWriter, r *http.Request) error {
	actor, _ := r.Context().Value(actorKey{}).(string)
	if err := h.locks.ForceUnlock(r.Context(), r.PathValue("group"), r.PathValue("id"), actor); err != nil {
		return lockError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) lockActivity(w http.ResponseWriter, r *http.Request) error {
	acts, err := h.st.ListActivity(r.Context(), store.ActivityFilter{AppID: LockActivityScope, Group: r.PathValue("group")})
	if err != nil {
		return err
	}
	out := v1.ActivityList{Activity: make([]v1.Activity, 0, len(acts))}
	for _, a := range acts {
		out.Activity = append(out.Activity, activityToAPI(a))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
