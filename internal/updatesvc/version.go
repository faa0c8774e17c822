package updatesvc

import (
	"strconv"
	"strings"
)

// CompareVersions orders release versions such as "3975.2.1": dot-separated
// numeric fields compare numerically, a missing field counts as 0, and a
// pre-release suffix ("1.2.3-rc1") sorts before the release. Non-numeric
// fields fall back to string order so that odd versions ("ForcedUpdate")
// still have a stable order instead of an error.
func CompareVersions(a, b string) int {
	aMain, aPre, _ := strings.Cut(a, "-")
	bMain, bPre, _ := strings.Cut(b, "-")
	// Build metadata ("+abc") never affects order.
	aMain, _, _ = strings.Cut(aMain, "+")
	bMain, _, _ = strings.Cut(bMain, "+")
	af := strings.Split(aMain, ".")
	bf := strings.Split(bMain, ".")
	for i := 0; i < len(af) || i < len(bf); i++ {
		var x, y string
		if i < len(af) {
			x = af[i]
		}
		if i < len(bf) {
			y = bf[i]
		}
		if c := compareField(x, y); c != 0 {
			return c
		}
	}
	switch {
	case aPre == bPre:
		return 0
	case aPre == "":
		return 1
	case bPre == "":
		return -1
	case aPre < bPre:
		return -1
	default:
		return 1
	}
}

func compareField(x, y string) int {
	if x == "" {
		x = "0"
	}
	if y == "" {
		y = "0"
	}
	xn, errX := strconv.ParseUint(x, 10, 64)
	yn, errY := strconv.ParseUint(y, 10, 64)
	if errX == nil && errY == nil {
		switch {
		case xn < yn:
			return -1
		case xn > yn:
			return 1
		}
		return 0
	}
	return strings.Compare(x, y)
}

// archFromBoard maps update_engine's board ("amd64-usr") or the os sp suffix
// ("3975.2.1_x86_64") to a package architecture. update_engine sends no arch
// attribute; the board is the only signal (omaha.md §2.1).
func archFromBoard(board, sp string) string {
	switch {
	case strings.HasPrefix(board, "amd64"), strings.HasPrefix(board, "x86_64"):
		return "amd64"
	case strings.HasPrefix(board, "arm64"), strings.HasPrefix(board, "aarch64"):
		return "arm64"
	case strings.HasSuffix(sp, "_x86_64"):
		return "amd64"
	case strings.HasSuffix(sp, "_aarch64"):
		return "arm64"
	}
	return "amd64"
}
