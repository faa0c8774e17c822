// Package storetest is the conformance suite for store.Store backends. Every
// backend runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openTestStore(t) })
//	}
//
// The suite pins down the behaviour store.go leaves to comments: which
// sentinel error each failure wraps, list orders, inclusive and exclusive
// time bounds, paging, and the transaction guarantees rate limits rely on.
//
// Conventions the suite relies on:
//   - open returns a fresh, empty, migrated store and arranges for it to be
//     closed (t.Cleanup); subtests run in parallel, each with its own store;
//   - backends keep at least microsecond precision and return times in UTC
//     (the suite's inputs are whole microseconds and compared with Equal);
//     the zero time round-trips as the zero time;
//   - nil and empty slices are interchangeable (ExtraFiles, Windows,
//     MachineIDs, list results).
package storetest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/flotilla/flotilla/internal/store"
)

// Run runs the conformance suite against the backend that open creates.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Apps", testApps},
		{"DeleteAppReferenced", testDeleteAppReferenced},
		{"DeleteAppCascadesInstances", testDeleteAppCascadesInstances},
		{"Packages", testPackages},
		{"DeletePackageInUse", testDeletePackageInUse},
		{"Channels", testChannels},
		{"Groups", testGroups},
		{"GroupPolicyRoundTrip", testGroupPolicyRoundTrip},
		{"Instances", testInstances},
		{"ListInstancesFilters", testListInstancesFilters},
		{"ListInstancesSameLastCheck", testListInstancesSameLastCheck},
		{"ListInstancesLimits", testListInstancesLimits},
		{"StatusChanges", testStatusChanges},
		{"Events", testEvents},
		{"Activity", testActivity},
		{"GroupCounts", testGroupCounts},
		{"Failures", testFailures},
		{"ExpiredGrants", testExpiredGrants},
		{"RolloutStatus", testRolloutStatus},
		{"Tokens", testTokens},
		{"UpdateCommit", testUpdateCommit},
		{"UpdateRollback", testUpdateRollback},
		{"UpdatePanic", testUpdatePanic},
		{"UpdateLockGroup", testUpdateLockGroup},
		{"UpdateConcurrentLimit", testUpdateConcurrentLimit},
		{"Prune", testPrune},
		{"VersionSamples", testVersionSamples},
		{"GroupConfigs", testGroupConfigs},
		{"GroupConfigsConcurrent", testGroupConfigsConcurrent},
		{"ConfigReports", testConfigReports},
		{"Ping", testPing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// Application ids used by the suite (canonical lower-case UUIDs).
const (
	appA = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"
	appB = "2b0a2a3e-6c1f-4b58-9f5a-0c1d2e3f4a5b"
	appC = "7f3c9d1e-8a2b-4c5d-9e6f-a1b2c3d4e5f6"
)

// t0 is the suite's reference time: UTC, whole microseconds.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 123456000, time.UTC)

// at returns t0 shifted by d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// elsewhere is a non-UTC zone for inputs; backends must answer in UTC.
var elsewhere = time.FixedZone("UTC+5:30", 5*3600+1800)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr fails unless errors.Is(err, target).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

// diff compares with time.Time.Equal and nil == empty.
func diff(t *testing.T, what string, got, want any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// wantUTC fails unless every non-zero time.Time field of the struct v is in
// UTC.
func wantUTC(t *testing.T, what string, v any) {
	t.Helper()
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		if tm, ok := rv.Field(i).Interface().(time.Time); ok && !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("%s.%s location = %v, want UTC", what, rv.Type().Field(i).Name, tm.Location())
		}
	}
}

// allSet fails unless every field of the struct v except skip is non-zero,
// so that a field added to a record later cannot be silently dropped by a
// backend: the fixture stops compiling cleanly into a passing test until it
// sets the new field, and then the round trip checks it.
func allSet(t *testing.T, v any, skip ...string) {
	t.Helper()
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		name := rv.Type().Field(i).Name
		if rv.Field(i).IsZero() && !contains(skip, name) {
			t.Fatalf("suite bug: fixture %T leaves %s zero; set it so the round trip covers it", v, name)
		}
	}
}

func contains(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}

// Fixtures.

func mkApp(t *testing.T, s store.Store, id string) store.Application {
	t.Helper()
	a := store.Application{ID: id, Name: "app " + id[:8], Description: "test application", CreatedAt: t0}
	must(t, s.CreateApp(t.Context(), a))
	return a
}

func mkPackage(appID, version, arch string, created time.Time) store.Package {
	return store.Package{
		AppID:    appID,
		Version:  version,
		Arch:     arch,
		BaseURL:  "https://example.com/" + version,
		FileName: "flatcar_production_update.gz",
		Size:     456789012,
		SHA1:     "2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
		SHA256:   "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		ExtraFiles: []store.PackageFile{
			{Name: "oem-azure.gz", Size: 1234, SHA1: "qUqP5cyxm6YcTAhz05Hph5gvu9M=", SHA256: "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="},
			{Name: "oem-gce.gz", Size: 5678, SHA256: "LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564="},
		},
		ReleaseNotes: "Bug fixes for " + version,
		CreatedAt:    created,
	}
}

func mkChannel(appID, name, version string) store.Channel {
	return store.Channel{AppID: appID, Name: name, PackageVersion: version, UpdatedAt: at(time.Minute), CreatedAt: t0}
}

// fullPolicy sets every Policy field to a non-default value.
func fullPolicy() store.Policy {
	return store.Policy{
		Paused:                 true,
		MaxUpdatesPerPeriod:    7,
		Period:                 90 * time.Minute,
		MaxInProgress:          3,
		RolloutPercent:         12.5,
		RampDuration:           36*time.Hour + 30*time.Second,
		Windows:                []string{"Mon-Fri 09:00-17:00", "Sat 10:00-12:00"},
		TimeZone:               "Europe/Berlin",
		UpdateTimeout:          2 * time.Hour,
		AutoPauseFailures:      4,
		OnDemandBypassesLimits: true,
	}
}

func mkGroup(appID, name, track, channel string) store.Group {
	return store.Group{
		AppID:            appID,
		Name:             name,
		Description:      "group " + name,
		Track:            track,
		Channel:          channel,
		Policy:           fullPolicy(),
		RolloutVersion:   "2.0.0",
		RolloutStartedAt: at(-time.Hour),
		PausedReason:     "auto-paused after 4 failures",
		CreatedAt:        at(-48 * time.Hour),
		UpdatedAt:        at(-time.Hour),
	}
}

// setupApp creates an application with packages 1.0.0 and 2.0.0 (amd64), a
// channel "stable" at 2.0.0 and a group "prod" (track "stable") following
// it.
func setupApp(t *testing.T, s store.Store, appID string) store.Group {
	t.Helper()
	ctx := t.Context()
	mkApp(t, s, appID)
	must(t, s.CreatePackage(ctx, mkPackage(appID, "1.0.0", "amd64", at(-2*time.Hour))))
	must(t, s.CreatePackage(ctx, mkPackage(appID, "2.0.0", "amd64", at(-time.Hour))))
	must(t, s.CreateChannel(ctx, mkChannel(appID, "stable", "2.0.0")))
	g := mkGroup(appID, "prod", "stable", "stable")
	must(t, s.CreateGroup(ctx, g))
	return g
}

func mkInstance(appID, machineID, group string) store.Instance {
	return store.Instance{
		AppID:          appID,
		MachineID:      machineID,
		Alias:          "alias-" + machineID,
		IP:             "10.1.2.3",
		OEM:            "qemu",
		OEMVersion:     "0.1",
		AlephVersion:   "3510.2.0",
		Board:          "amd64-usr",
		Group:          group,
		Version:        "1.0.0",
		Status:         store.StatusIdle,
		GrantedVersion: "2.0.0",
		GrantedAt:      at(-time.Hour),
		LastErrorCode:  268435490,
		BlockedVersion: "1.5.0",
		LastCheck:      t0,
		StatusChanged:  at(-2 * time.Hour),
		CreatedAt:      at(-72 * time.Hour),
	}
}

// putInstances writes ins in one transaction.
func putInstances(t *testing.T, s store.Store, ins ...store.Instance) {
	t.Helper()
	ctx := t.Context()
	must(t, s.Update(ctx, func(q store.TxQueries) error {
		for _, in := range ins {
			if err := q.PutInstance(ctx, in); err != nil {
				return err
			}
		}
		return nil
	}))
}

func addChange(t *testing.T, q store.Queries, appID, machineID, group string, status store.Status, version string, when time.Time) {
	t.Helper()
	_, err := q.AddStatusChange(t.Context(), store.StatusChange{
		AppID: appID, MachineID: machineID, Group: group, Status: status, Version: version, At: when,
	})
	must(t, err)
}
