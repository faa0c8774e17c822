package fleet

import "syscall"

// dieWithAgent makes a unit's main process get SIGKILL when the agent that
// started it dies. Nothing else supervises process-driver units, so a
// crashed agent would otherwise leave them running unmanaged — and its
// restart, or the engine after the grace period, would start them a
// second time. (It survives exec, so "sh -c '…; exec prog'" keeps it.)
func dieWithAgent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
