package fleet

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
)

// benchCluster builds 1,000 machines in 10 zones and 10,000 units: most
// unconstrained, the rest spread over metadata, conflicts between
// template instances, MachineOf pairs, pinned and global units.
func benchCluster(b *testing.B) ([]Machine, []Unit) {
	machines := make([]Machine, 1000)
	for i := range machines {
		machines[i] = machine(fmt.Sprintf("%032x", i*7919), fmt.Sprintf("zone=z%d,disk=%s", i%10, []string{"ssd", "hdd"}[i%2]))
	}
	units := make([]Unit, 0, 10000)
	for i := range 10000 {
		name := fmt.Sprintf("app%d.service", i)
		var fleet string
		switch {
		case i < 5:
			name, fleet = fmt.Sprintf("agent%d.service", i), "Global=true"
		case i%10 == 1:
			fleet = fmt.Sprintf("MachineMetadata=zone=z%d zone=z%d;MachineMetadata=disk=ssd", i%10, (i+3)%10)
		case i%10 == 2:
			name, fleet = fmt.Sprintf("web@%d.service", i), "Conflicts=web@*.service"
		case i%10 == 3:
			fleet = fmt.Sprintf("MachineOf=app%d.service", i-3)
		case i%100 == 4:
			fleet = "MachineID=" + machines[i%1000].ID
		}
		units = append(units, unitOf(b, name, fleet))
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(units), func(i, j int) { units[i], units[j] = units[j], units[i] })
	return machines, units
}

// BenchmarkPlace10kUnits1kMachines places 10,000 units on an empty cluster
// of 1,000 machines, the worst case (every unit is new).
func BenchmarkPlace10kUnits1kMachines(b *testing.B) {
	machines, units := benchCluster(b)
	b.ResetTimer()
	var p Placement
	for b.Loop() {
		p = Place(machines, units, nil)
	}
	b.ReportMetric(float64(len(p.Assignments)), "placed")
	b.ReportMetric(float64(len(p.Unschedulable)), "unschedulable")
}

// BenchmarkPlace10kUnits1kMachinesStable re-places a settled cluster,
// which is what the engine does on every reconcile.
func BenchmarkPlace10kUnits1kMachinesStable(b *testing.B) {
	machines, units := benchCluster(b)
	current := Place(machines, units, nil).Assignments
	b.ResetTimer()
	for b.Loop() {
		Place(machines, units, current)
	}
}

// BenchmarkReferenceSortStrings10k is the yardstick the placement
// benchmarks are stated against: sorting 10,000 short strings.
func BenchmarkReferenceSortStrings10k(b *testing.B) {
	src := make([]string, 10000)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range src {
		src[i] = fmt.Sprintf("app%d.service", r.IntN(1_000_000))
	}
	buf := make([]string, len(src))
	for b.Loop() {
		copy(buf, src)
		sort.Strings(buf)
	}
}
