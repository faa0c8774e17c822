package dashboard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/flotilla/flotilla/internal/machineconfig"
	"github.com/flotilla/flotilla/internal/store"
)

// Limits of the group page's machine config card.
const (
	configHistory     = 10 // versions listed
	configProblems    = 50 // machines with drift or errors listed
	configDriftLines  = 10 // drift lines shown per machine
	configDiffMaxSize = 64 << 10
)

// versionMachines is how many machines report having applied a version.
type versionMachines struct {
	Version int // 0: none applied yet
	Count   int
	Latest  bool
}

// configProblem is a machine whose report has drift or an error.
type configProblem struct {
	store.ConfigReport
	Drift []string // at most configDriftLines
	More  int      // drift lines not shown
}

// configView is the group page's "Machine config" card.
type configView struct {
	Latest        store.GroupConfig
	Size          string              // of the latest document
	History       []store.GroupConfig // newest first, at most configHistory
	Versions      int                 // all versions
	Reports       int
	OnLatest      int
	ByVersion     []versionMachines // newest first
	Drifted       int
	Failed        int
	Problems      []configProblem
	MoreProblems  int
	Diff          string // latest against the previous version; "" for the first
	DiffFrom      int
	DiffTruncated bool
}

// groupConfig reads the group's machine config and its machines' reports;
// nil when the group has no config.
func (h *Handler) groupConfig(ctx context.Context, appID, group string) (*configView, error) {
	latest, err := h.st.GetGroupConfig(ctx, appID, group, 0)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cv := &configView{Latest: latest, Size: sizeText(int64(latest.Size))}
	hist, err := h.st.ListGroupConfigs(ctx, appID, group)
	if err != nil {
		return nil, err
	}
	cv.Versions = len(hist)
	cv.History = hist[:min(len(hist), configHistory)]
	reps, err := h.st.ListConfigReports(ctx, appID, group)
	if err != nil {
		return nil, err
	}
	cv.Reports = len(reps)
	byVersion := map[int]int{}
	for _, r := range reps {
		byVersion[r.Version]++
		if len(r.Drift) > 0 {
			cv.Drifted++
		}
		if r.Error != "" {
			cv.Failed++
		}
		if len(r.Drift) == 0 && r.Error == "" {
			continue
		}
		if len(cv.Problems) == configProblems {
			cv.MoreProblems++
			continue
		}
		p := configProblem{ConfigReport: r, Drift: r.Drift[:min(len(r.Drift), configDriftLines)]}
		p.More = len(r.Drift) - len(p.Drift)
		cv.Problems = append(cv.Problems, p)
	}
	cv.OnLatest = byVersion[latest.Version]
	for v, n := range byVersion {
		cv.ByVersion = append(cv.ByVersion, versionMachines{Version: v, Count: n, Latest: v == latest.Version})
	}
	slices.SortFunc(cv.ByVersion, func(a, b versionMachines) int { return cmp.Compare(b.Version, a.Version) })
	// Errors first, then the most drifted.
	slices.SortStableFunc(cv.Problems, func(a, b configProblem) int {
		if (a.Error != "") != (b.Error != "") {
			if a.Error != "" {
				return -1
			}
			return 1
		}
		return cmp.Compare(len(b.ConfigReport.Drift), len(a.ConfigReport.Drift))
	})
	if latest.Version > 1 {
		prev, err := h.st.GetGroupConfig(ctx, appID, group, latest.Version-1)
		switch {
		case err == nil:
			cv.DiffFrom = prev.Version
			cv.Diff = machineconfig.UnifiedDiff(fmt.Sprintf("%s version %d", group, prev.Version),
				fmt.Sprintf("%s version %d", group, latest.Version), []byte(prev.Document), []byte(latest.Document))
			if len(cv.Diff) > configDiffMaxSize {
				cut := cv.Diff[:configDiffMaxSize]
				if i := strings.LastIndexByte(cut, '\n'); i > 0 {
					cut = cut[:i+1]
				}
				cv.Diff, cv.DiffTruncated = strings.ToValidUTF8(cut, "\uFFFD"), true
			}
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
	}
	return cv, nil
}
