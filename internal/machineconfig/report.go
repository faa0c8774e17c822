package machineconfig

import (
	"fmt"
)

// Severity is how bad a report entry is.
type Severity string

// Severities. Errors stop Apply; warnings never do.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Entry is one finding of Validate. A YAML finding has Line and Column; an
// Ignition finding has a JSON Path ("$.storage.files.0.path") and, when the
// parser knows it, Line and Column as well.
type Entry struct {
	Severity Severity `json:"severity"`
	Path     string   `json:"path,omitempty"`
	Line     int      `json:"line,omitempty"`
	Column   int      `json:"column,omitempty"`
	Message  string   `json:"message"`
}

// String formats the entry as "LINE:COL: severity: message" (with the
// JSON path before the message when there is one) or, without a position,
// "$.path: severity: message": the form `flotilla config validate` prints
// after the file name.
func (e Entry) String() string {
	msg := e.Message
	if e.Path != "" && e.Line > 0 {
		msg = e.Path + ": " + msg
	}
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%d:%d: %s: %s", e.Line, e.Column, e.Severity, msg)
	case e.Line > 0:
		return fmt.Sprintf("%d: %s: %s", e.Line, e.Severity, msg)
	case e.Path != "":
		return fmt.Sprintf("%s: %s: %s", e.Path, e.Severity, msg)
	}
	return fmt.Sprintf("%s: %s", e.Severity, msg)
}

// Report is the result of validating a document.
type Report struct {
	Format  Format  `json:"format,omitempty"`
	Entries []Entry `json:"entries"`
}

// HasErrors reports whether any entry is an error.
func (r Report) HasErrors() bool {
	for _, e := range r.Entries {
		if e.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Errors returns the error entries.
func (r Report) Errors() []Entry { return r.filter(SeverityError) }

// Warnings returns the warning entries.
func (r Report) Warnings() []Entry { return r.filter(SeverityWarning) }

func (r Report) filter(s Severity) []Entry {
	var out []Entry
	for _, e := range r.Entries {
		if e.Severity == s {
			out = append(out, e)
		}
	}
	return out
}

// pos is where an item of the model came from, so checks that run on the
// model can point back into the document.
type pos struct {
	path      string
	line, col int
}

func (r *Report) add(s Severity, at pos, format string, a ...any) {
	r.Entries = append(r.Entries, Entry{Severity: s, Path: at.path, Line: at.line, Column: at.col, Message: fmt.Sprintf(format, a...)})
}

func (r *Report) errorf(at pos, format string, a ...any) { r.add(SeverityError, at, format, a...) }
func (r *Report) warnf(at pos, format string, a ...any)  { r.add(SeverityWarning, at, format, a...) }

// ValidationError is returned by Apply for a configuration with errors; it
// carries the whole report.
type ValidationError struct {
	Report Report
}

func (e *ValidationError) Error() string {
	errs := e.Report.Errors()
	if len(errs) == 0 {
		return "invalid configuration"
	}
	msg := errs[0].String()
	if len(errs) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(errs)-1)
	}
	return "invalid configuration: " + msg
}
