package updatesvc

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"3975.2.1", "3975.2.1", 0},
		{"3975.2.1", "3975.2.2", -1},
		{"3975.10.0", "3975.9.9", 1},
		{"4081.2.0", "3975.2.1", 1},
		{"1.0", "1.0.0", 0},
		{"1.0.0-rc1", "1.0.0", -1},
		{"1.0.0", "1.0.0-rc1", 1},
		{"1.0.0-rc1", "1.0.0-rc2", -1},
		{"1.0.0+build5", "1.0.0", 0},
		{"0.0.0", "3975.2.1", -1},
		{"ForcedUpdate", "ForcedUpdate", 0},
		{"", "1.0.0", -1},
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d (antisymmetry)", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestArchFromBoard(t *testing.T) {
	tests := []struct{ board, sp, want string }{
		{"amd64-usr", "", "amd64"},
		{"arm64-usr", "", "arm64"},
		{"", "3975.2.1_aarch64", "arm64"},
		{"", "3975.2.1_x86_64", "amd64"},
		{"amd64-generic", "ForcedUpdate_x86_64", "amd64"},
		{"", "", "amd64"},
	}
	for _, tt := range tests {
		if got := archFromBoard(tt.board, tt.sp); got != tt.want {
			t.Errorf("archFromBoard(%q, %q) = %q, want %q", tt.board, tt.sp, got, tt.want)
		}
	}
}
