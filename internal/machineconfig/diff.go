package machineconfig

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Drift is one difference between a configuration and a root: something
// Apply would change.
type Drift struct {
	// Kind is file, dir, link, user, group, home, ssh-keys, unit, dropin,
	// enable, mask, hostname, hosts or update.conf.
	Kind string `json:"kind"`
	Path string `json:"path,omitempty"`
	// Name is the user, group or unit concerned.
	Name string `json:"name,omitempty"`
	// What lists the differences: missing, present (a link that should
	// not exist), content, mode, owner, target, type, or account fields
	// (password, shell, groups, …).
	What []string `json:"what"`
	// Details spell out mode, owner and target differences ("mode 0644 →
	// 0600").
	Details []string `json:"details,omitempty"`
	// Diff is a unified diff of a text file, from the root's version
	// (---) to the configured one (+++).
	Diff string `json:"diff,omitempty"`
}

// Diff compares cfg with the root directory and returns what Apply would
// change, in the order Apply would change it. It reads only; remote file
// contents are not fetched but compared by their verification hash (and
// not at all without one). Entries Apply would leave alone (a conflicting
// file whose overwrite is false) are not drift.
func Diff(cfg Config, root string) ([]Drift, error) {
	rep := Report{}
	checkModel(&cfg, &rep)
	if rep.HasErrors() {
		return nil, fmt.Errorf("diff: %w", &ValidationError{Report: rep})
	}
	rf, err := openRootFS(root)
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	defer rf.Close()
	p, err := buildPlan(cfg, rf)
	if err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	drifts := []Drift{}
	for _, a := range p.accounts {
		d := Drift{Kind: a.kind, Name: a.name, Path: passwdPath, What: a.fields}
		if a.kind == "group" {
			d.Path = groupPath
		}
		if a.create {
			d.What, d.Details = []string{"missing"}, a.fields
		}
		drifts = append(drifts, d)
	}
	for _, o := range p.ops {
		if o.silent {
			continue
		}
		d, err := rf.decide(o)
		if err != nil {
			return nil, fmt.Errorf("diff: %w", err)
		}
		if d.act == actNone || d.act == actConflict {
			continue
		}
		dr := Drift{Kind: o.kind, Path: o.path, Name: o.name, What: d.what, Details: d.detail}
		switch d.act {
		case actCreate:
			dr.What = []string{"missing"}
		case actRemove:
			dr.What = []string{"present"}
		}
		if o.typ == typeFile && !o.unknownData && (d.act == actCreate || containsStr(d.what, "content")) {
			dr.Diff = unifiedDiff(o.path, d.cur.data, d.data)
		}
		drifts = append(drifts, dr)
	}
	return drifts, nil
}

func containsStr(list []string, s string) bool { return contains(list, s) }

// maxDiffLines bounds the quadratic line diff; larger files are reported
// as differing without a diff.
const maxDiffLines = 4000

// diffContext is the number of unchanged lines around each hunk.
const diffContext = 3

// unifiedDiff returns a unified diff from have to want, or a one-line note
// for binary or very large files.
func unifiedDiff(name string, have, want []byte) string {
	return UnifiedDiff(name+" (root)", name+" (config)", have, want)
}

// UnifiedDiff returns a unified line diff (three lines of context) from a
// to b under the labels fromName and toName, "" when they are equal, or a
// one-line note for binary or very large inputs. The server uses it to
// compare versions of a group's document.
func UnifiedDiff(fromName, toName string, a, b []byte) string {
	if bytes.Equal(a, b) {
		return ""
	}
	if !isText(a) || !isText(b) {
		return fmt.Sprintf("Binary files %s and %s differ\n", fromName, toName)
	}
	al, bl := splitLines(a), splitLines(b)
	if len(al) > maxDiffLines || len(bl) > maxDiffLines {
		return fmt.Sprintf("Files %s and %s differ (too large to diff)\n", fromName, toName)
	}
	edits := lineEdits(al, bl)
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", fromName, toName)
	// Hunks: runs of edits with up to 2*diffContext equal lines between
	// them stay together.
	for start := 0; start < len(edits); {
		if edits[start].op == ' ' {
			start++
			continue
		}
		lo := max(start-diffContext, 0)
		end := start
		for i := start; i < len(edits); i++ {
			if edits[i].op != ' ' {
				end = i
				continue
			}
			if i-end > 2*diffContext {
				break
			}
		}
		hi := min(end+diffContext+1, len(edits))
		writeHunk(&out, edits[lo:hi])
		start = hi
	}
	return out.String()
}

type lineEdit struct {
	op   byte // ' ', '-', '+'
	text string
	// ai and bi are the 0-based line numbers in a and b (the line's own
	// for ' ' and its side, the next line otherwise).
	ai, bi int
}

// lineEdits computes a shortest edit script through the longest common
// subsequence of lines.
func lineEdits(a, b []string) []lineEdit {
	n, m := len(a), len(b)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var edits []lineEdit
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			edits = append(edits, lineEdit{' ', a[i], i, j})
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			// Deletions before insertions, as diff(1) prints them.
			edits = append(edits, lineEdit{'-', a[i], i, j})
			i++
		default:
			edits = append(edits, lineEdit{'+', b[j], i, j})
			j++
		}
	}
	return edits
}

func writeHunk(out *strings.Builder, h []lineEdit) {
	aStart, bStart := h[0].ai, h[0].bi
	var aCount, bCount int
	for _, e := range h {
		if e.op != '+' {
			aCount++
		}
		if e.op != '-' {
			bCount++
		}
	}
	fmt.Fprintf(out, "@@ -%s +%s @@\n", hunkRange(aStart, aCount), hunkRange(bStart, bCount))
	for _, e := range h {
		text, noEOL := strings.CutSuffix(e.text, noEOLMark)
		fmt.Fprintf(out, "%c%s\n", e.op, text)
		if noEOL {
			out.WriteString("\\ No newline at end of file\n")
		}
	}
}

func hunkRange(start, count int) string {
	switch count {
	case 0:
		return fmt.Sprintf("%d,0", start)
	case 1:
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, count)
}

// noEOLMark ends a last line that has no newline. Text files hold no NUL
// bytes, so it cannot clash with content, and it makes "x" and "x\n"
// differ, as they do.
const noEOLMark = "\x00"

// splitLines splits text into lines without their newlines.
func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	if strings.HasSuffix(s, "\n") {
		s = strings.TrimSuffix(s, "\n")
	} else {
		s += noEOLMark
	}
	return strings.Split(s, "\n")
}

func isText(b []byte) bool {
	return utf8.Valid(b) && !bytes.ContainsRune(b, 0)
}
