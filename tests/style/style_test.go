package style

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestPackageDocs requires exactly one package doc comment per package
// (among its non-test files), so that `go doc` says what each package is for
// and two files do not disagree.
func TestPackageDocs(t *testing.T) {
	root := repoRoot(t)
	docs := map[string][]string{} // dir → files with a package doc
	hasGo := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "flotilla-data") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		hasGo[dir] = true
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
			docs[dir] = append(docs[dir], filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir := range hasGo {
		rel, _ := filepath.Rel(root, dir)
		switch n := len(docs[dir]); {
		case n == 0:
			t.Errorf("package %s has no package doc comment", rel)
		case n > 1:
			t.Errorf("package %s has package doc comments in several files: %v", rel, docs[dir])
		}
	}
}

// TestLightPackages keeps the wire packages that clients and the agent
// import free of the server's dependencies.
func TestLightPackages(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not found")
	}
	for _, pkg := range []string{"./api/v1", "./omaha"} {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg)
		cmd.Dir = repoRoot(t)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if !strings.HasSuffix(pkg, strings.TrimPrefix(dep, "github.com/flotilla/flotilla")) {
				t.Errorf("%s imports %s; it must depend on the standard library only", pkg, dep)
			}
		}
	}
}
