package bench

import (
	"bytes"
	"fmt"

	"github.com/flotilla/flotilla/omaha"
)

// Identity attributes every simulated machine sends. They are also what
// the in-process server's pre-registered instances carry, so that a check
// from a registered machine changes nothing and stays on the read path.
const (
	updaterVersion = "update_engine-0.4.10"
	simOEM         = "qemu"
	simOEMVersion  = "0.1.0"
	simBoard       = "amd64-usr"
	simIP          = "127.0.0.1"
	// noPreviousVersion is what update_engine sends in previousversion when
	// there is nothing to report (omaha.md §2.2).
	noPreviousVersion = "0.0.0.0"
)

// machineSeed makes the machine ids of a run look random but stay the same
// across runs, so that repeated runs against an external server hit the
// instances the previous run registered.
const machineSeed = 0x666c6f74696c6c61 // "flotilla"

// splitmix64 is a small, well-mixed hash used to derive ids from indexes.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

const hexDigits = "0123456789abcdef"

func appendHex(dst []byte, v uint64, digits int) []byte {
	for i := digits - 1; i >= 0; i-- {
		dst = append(dst, hexDigits[(v>>(4*uint(i)))&0xf])
	}
	return dst
}

// appendMachineID appends the /etc/machine-id of simulated machine i: 32
// lower-case hex digits, no braces, as update_engine sends it.
func appendMachineID(dst []byte, i int) []byte {
	a := splitmix64(machineSeed ^ uint64(i))
	b := splitmix64(a ^ uint64(i)<<1)
	dst = appendHex(dst, a, 16)
	return appendHex(dst, b, 16)
}

// machineID returns the machine id of simulated machine i.
func machineID(i int) string { return string(appendMachineID(make([]byte, 0, 32), i)) }

// appendBootID appends a kernel boot_id in braces for boot number boot of
// machine i ("{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}").
func appendBootID(dst []byte, i, boot int) []byte {
	a := splitmix64(machineSeed + uint64(i)<<8 + uint64(boot))
	b := splitmix64(a)
	dst = append(dst, '{')
	dst = appendHex(dst, a>>32, 8)
	dst = append(dst, '-')
	dst = appendHex(dst, a>>16, 4)
	dst = append(dst, '-')
	dst = appendHex(dst, a, 4)
	dst = append(dst, '-')
	dst = appendHex(dst, b>>48, 4)
	dst = append(dst, '-')
	dst = appendHex(dst, b, 12)
	return append(dst, '}')
}

// requestKind selects one of the request bodies a simulated machine sends.
type requestKind struct {
	// version is the running version sent in app@version and os@sp.
	version string
	// aleph is the first version ever installed (app@alephversion).
	aleph string
	// check adds ping + updatecheck + event 3.2 with previousVersion.
	check           bool
	previousVersion string
	// eventType/eventResult make an event-only report when check is false.
	eventType, eventResult int
}

// simRequest builds the omaha.Request simulated machine machine sends for
// kind on boot number boot, exactly as update_engine fills it in
// (omaha.md §2.1).
func simRequest(appID, track string, kind requestKind, machine, bootID string) *omaha.Request {
	app := omaha.App{
		AppID:        "{" + appID + "}",
		Version:      kind.version,
		Track:        track,
		BootID:       bootID,
		OEM:          simOEM,
		OEMVersion:   simOEMVersion,
		AlephVersion: kind.aleph,
		MachineID:    machine,
		Lang:         "en-US",
		Board:        simBoard,
		DeltaOkay:    false,
	}
	if kind.check {
		app.Ping = &omaha.Ping{Active: 1}
		app.UpdateCheck = &omaha.UpdateCheck{}
		app.Events = []omaha.Event{{
			Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccessReboot, PreviousVersion: kind.previousVersion,
		}}
	} else {
		app.Events = []omaha.Event{{Type: kind.eventType, Result: kind.eventResult}}
	}
	return &omaha.Request{
		Protocol:       omaha.ProtocolVersion,
		Version:        updaterVersion,
		UpdaterVersion: updaterVersion,
		InstallSource:  omaha.InstallSourceScheduler,
		IsMachine:      1,
		OS:             &omaha.OS{Version: "Chateau", Platform: "CoreOS", ServicePack: kind.version + "_x86_64"},
		Apps:           []omaha.App{app},
	}
}

// Placeholders marshalled into a template in place of the per-machine
// values. They contain no character XML escapes.
const (
	machinePlaceholder = "@@bench-machine-id@@"
	bootPlaceholder    = "@@bench-boot-id@@"
)

// bodyTemplate is a marshalled request with holes for the machine id and
// boot id. Rendering it appends the same bytes omaha.Request.Marshal would
// produce for that machine (TestTemplateMatchesMarshal), without the cost
// of encoding/xml on every request.
type bodyTemplate struct {
	// parts are the literal pieces around the holes; holes[i] sits between
	// parts[i] and parts[i+1].
	parts [3][]byte
	// machineFirst is true when the machine id hole comes before the boot
	// id hole.
	machineFirst bool
}

// newBodyTemplate marshals the request for kind with placeholders and
// splits it at them.
func newBodyTemplate(appID, track string, kind requestKind) (*bodyTemplate, error) {
	body, err := simRequest(appID, track, kind, machinePlaceholder, bootPlaceholder).Marshal()
	if err != nil {
		return nil, fmt.Errorf("build request template: %w", err)
	}
	mi := bytes.Index(body, []byte(machinePlaceholder))
	bi := bytes.Index(body, []byte(bootPlaceholder))
	if mi < 0 || bi < 0 ||
		bytes.Count(body, []byte(machinePlaceholder)) != 1 || bytes.Count(body, []byte(bootPlaceholder)) != 1 {
		return nil, fmt.Errorf("build request template: placeholders not found exactly once in the marshalled request")
	}
	t := &bodyTemplate{machineFirst: mi < bi}
	first, firstLen, second, secondLen := mi, len(machinePlaceholder), bi, len(bootPlaceholder)
	if !t.machineFirst {
		first, firstLen, second, secondLen = bi, len(bootPlaceholder), mi, len(machinePlaceholder)
	}
	t.parts[0] = body[:first]
	t.parts[1] = body[first+firstLen : second]
	t.parts[2] = body[second+secondLen:]
	return t, nil
}

// render appends the body for simulated machine i on boot number boot.
func (t *bodyTemplate) render(dst []byte, i, boot int) []byte {
	dst = append(dst, t.parts[0]...)
	if t.machineFirst {
		dst = appendMachineID(dst, i)
	} else {
		dst = appendBootID(dst, i, boot)
	}
	dst = append(dst, t.parts[1]...)
	if t.machineFirst {
		dst = appendBootID(dst, i, boot)
	} else {
		dst = appendMachineID(dst, i)
	}
	return append(dst, t.parts[2]...)
}
