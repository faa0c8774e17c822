package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla/flotilla/client"
)

// Output formats of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// httpTimeout bounds one API request of an operator command.
const httpTimeout = 60 * time.Second

// checkOutput validates -o before any work is done.
func (g *globals) checkOutput() error {
	switch g.output {
	case outputTable, outputJSON:
		return nil
	}
	return usagef("unknown output format %q (-o): use table or json", g.output)
}

// jsonOutput reports whether -o json was asked for.
func (g *globals) jsonOutput() bool { return g.output == outputJSON }

// apiClient validates -o, resolves the token and returns a client for
// --server. Commands call it after validating their own flags, so usage
// errors win over a missing token.
func (g *globals) apiClient() (*client.Client, error) {
	if err := g.checkOutput(); err != nil {
		return nil, err
	}
	if g.server == "" {
		return nil, usagef("--server is empty")
	}
	tok, err := g.resolveToken()
	if err != nil {
		return nil, err
	}
	return client.New(g.server, tok, &http.Client{Timeout: httpTimeout}), nil
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// table writes aligned columns, kubectl style: an upper-case header row,
// then one row per object, cells separated by at least three spaces.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)}
	t.row(headers...)
	return t
}

// row adds one row; empty cells print as "-".
func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		// Tabs and newlines would break the alignment.
		c = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprintln(t.tw)
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// fields prints "Key:  value" lines, aligned; empty values print as "-".
type fields struct {
	tw *tabwriter.Writer
}

func newFields(w io.Writer) *fields {
	return &fields{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

func (f *fields) add(key, value string) {
	if value == "" {
		value = "-"
	}
	fmt.Fprintf(f.tw, "%s:\t%s\n", key, value)
}

// heading adds a key without a value, for an indented block below it.
func (f *fields) heading(key string) {
	fmt.Fprintf(f.tw, "%s:\t\n", key)
}

func (f *fields) flush() error {
	if err := f.tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// ago formats t relative to now: "45s ago", "3m ago", "5h ago", "2d ago";
// "never" for the zero time.
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	if d < 0 {
		if d > -time.Minute {
			return "just now" // small clock skew
		}
		return "in " + shortDuration(-d)
	}
	return shortDuration(d) + " ago"
}

// shortDuration rounds d to its largest unit: 45s, 3m, 5h, 2d.
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
}

// timestamp formats t as local time with its age: "2024-05-01 14:03:00 (3m ago)".
func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + ago(t) + ")"
}

// date formats t as a local date and time for table cells.
func date(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04")
}

// yesNo formats a bool for humans.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// percent formats a share of 0–100: "25%", "12.5%".
func percent(p float64) string {
	if p == float64(int64(p)) {
		return strconv.FormatInt(int64(p), 10) + "%"
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// humanDuration prints a Go duration string without zero units ("1h" for
// "1h0m0s"); unparsable input is returned as is.
func humanDuration(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	if d == 0 {
		return "0"
	}
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// requireFlags returns a usage error naming every flag in name/value pairs
// whose value is empty.
func requireFlags(pairs ...string) error {
	var missing []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			missing = append(missing, "--"+pairs[i])
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return usagef("missing required flag %s", missing[0])
	}
	return usagef("missing required flags %s", strings.Join(missing, ", "))
}

// exactArgs is cobra.ExactArgs with a usage error that names the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			for i, a := range args {
				if a == "" {
					return usagef("%s must not be empty", names[i])
				}
			}
			return nil
		}
		if len(names) == 0 {
			return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
		}
		return usagef("%s needs %s (got %d argument(s))", cmd.CommandPath(), strings.Join(names, " "), len(args))
	}
}

// parentCmd returns a command that only groups subcommands. Called with an
// unknown subcommand it fails with a usage error instead of printing help
// and succeeding.
func parentCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	c.AddCommand(subs...)
	return c
}

// parseTimeArg parses a point in time given either as an age relative to
// now ("10m", "36h", "7d") or as an RFC 3339 time.
func parseTimeArg(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, ok := parseAge(s); ok {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("--%s %q: want a duration like 10m, 36h or 7d, or an RFC 3339 time like 2024-05-01T12:00:00Z", flag, s)
}

// parseAge parses a Go duration or a whole number of days ("7d"). Negative
// ages are rejected.
func parseAge(s string) (time.Duration, bool) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 {
			return 0, false
		}
		return time.Duration(days) * 24 * time.Hour, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}

// apiFailed wraps an API call's error with the operation and, for
// authentication failures, a hint where the token comes from.
func apiFailed(op string, err error) error {
	switch {
	case client.IsUnauthorized(err):
		return fmt.Errorf("%s: %w (check --token, FLOTILLA_TOKEN or <data-dir>/admin.token)", op, err)
	case client.IsForbidden(err):
		return fmt.Errorf("%s: %w (this needs an admin token)", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
