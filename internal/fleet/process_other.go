//go:build !linux

package fleet

import "syscall"

// dieWithAgent has no portable equivalent outside Linux; units of a
// crashed agent keep running there.
func dieWithAgent(*syscall.SysProcAttr) {}
