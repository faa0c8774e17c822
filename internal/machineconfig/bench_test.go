package machineconfig

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchFiles is the document of the apply benchmarks: 1,000 files of 1 KiB
// in 20 directories.
func benchFiles() Config {
	cfg := Config{Format: FormatCloudConfig}
	body := []byte(strings.Repeat("flotilla benchmark line\n", 43)[:1024])
	for i := range 1000 {
		cfg.Files = append(cfg.Files, File{
			Path:      fmt.Sprintf("/etc/bench/d%02d/file%04d.conf", i%20, i),
			Contents:  &Content{Inline: body},
			Mode:      0o644,
			Overwrite: true,
		})
	}
	return cfg
}

func newBenchRoot(b *testing.B, parent string, i int) string {
	root := filepath.Join(parent, fmt.Sprintf("root%d", i))
	if err := os.Mkdir(root, 0o755); err != nil {
		b.Fatal(err)
	}
	return root
}

// BenchmarkApply1000Files applies 1,000 files to a fresh root: atomic
// writes (temp file, fsync, rename) with mode and owner.
func BenchmarkApply1000Files(b *testing.B) {
	cfg := benchFiles()
	parent := b.TempDir()
	i := 0
	for b.Loop() {
		b.StopTimer()
		root := newBenchRoot(b, parent, i)
		i++
		b.StartTimer()
		res, err := Apply(context.Background(), cfg, ApplyOptions{Root: root})
		if err != nil || len(res.Changes) != 1000 {
			b.Fatalf("apply: %d changes, %v", len(res.Changes), err)
		}
		b.StopTimer()
		os.RemoveAll(root)
		b.StartTimer()
	}
}

// BenchmarkApply1000FilesNoop re-applies the same 1,000 files: every file
// is read and compared, none written.
func BenchmarkApply1000FilesNoop(b *testing.B) {
	cfg := benchFiles()
	root := b.TempDir()
	if _, err := Apply(context.Background(), cfg, ApplyOptions{Root: root}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := Apply(context.Background(), cfg, ApplyOptions{Root: root})
		if err != nil || len(res.Changes) != 0 {
			b.Fatalf("apply: %d changes, %v", len(res.Changes), err)
		}
	}
}

// BenchmarkCopy1000Files is the reference: the same files written with
// plain os.WriteFile (no fsync, no rename, no comparison).
func BenchmarkCopy1000Files(b *testing.B) {
	cfg := benchFiles()
	parent := b.TempDir()
	i := 0
	for b.Loop() {
		b.StopTimer()
		root := newBenchRoot(b, parent, i)
		i++
		b.StartTimer()
		for _, f := range cfg.Files {
			p := filepath.Join(root, f.Path)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(p, f.Contents.Inline, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		os.RemoveAll(root)
		b.StartTimer()
	}
}
