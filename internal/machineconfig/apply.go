package machineconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
)

// SystemdNotifier is the seam to a running systemd. Apply calls it only
// after every file is in place. Enabling is done with symlinks, as
// `systemctl enable` does, so the notifier only reloads and runs commands.
type SystemdNotifier interface {
	// DaemonReload makes systemd re-read unit files.
	DaemonReload(ctx context.Context) error
	// RunUnitCommand runs command (start, stop, restart, reload,
	// try-restart, reload-or-restart, reload-or-try-restart) on a unit and
	// waits for the job.
	RunUnitCommand(ctx context.Context, unit, command string) error
}

// ApplyOptions configure Apply.
type ApplyOptions struct {
	// Root is the directory the configuration is applied to ("/" for the
	// running system). Required.
	Root string
	// HTTPClient fetches remote contents; nil means a client with a
	// five-minute timeout.
	HTTPClient *http.Client
	// Logger gets one record per change; nil discards.
	Logger *slog.Logger
	// Systemd, when set, is told about unit changes (daemon-reload, unit
	// commands). Leave it nil for offline roots.
	Systemd SystemdNotifier
	// FirstBoot applies Ignition's rules strictly: an existing file, link
	// or directory that conflicts with an entry whose overwrite is false
	// is an error (before anything is written). Without it such entries
	// are left alone with a warning, so a re-applied config converges.
	FirstBoot bool
	// DryRun plans and reports the changes without writing anything or
	// calling systemd.
	DryRun bool
}

// Change is one thing Apply changed (or, in a dry run, would change).
type Change struct {
	// Kind is file, dir, link, user, group, home, ssh-keys, unit, dropin,
	// mask, enable, hostname, hosts or update.conf.
	Kind string `json:"kind"`
	// Path is the path inside the root; empty for users and groups.
	Path string `json:"path,omitempty"`
	// Name is the user, group or unit the change belongs to.
	Name string `json:"name,omitempty"`
	// Action is create, update, replace or remove.
	Action string `json:"action"`
	// Details name what changed: content, mode, owner, target, fields of
	// an account.
	Details []string `json:"details,omitempty"`
}

// String formats the change for people: "create file /etc/foo (mode 0644)".
func (c Change) String() string {
	subject := c.Path
	if c.Name != "" && (c.Kind == "user" || c.Kind == "group") {
		subject = c.Name
	} else if c.Name != "" {
		subject += " (" + c.Name + ")"
	}
	s := fmt.Sprintf("%s %s %s", c.Action, c.Kind, subject)
	if len(c.Details) > 0 {
		s += ": " + strings.Join(c.Details, ", ")
	}
	return s
}

// UnitCommand is a systemd job Apply ran (or would run).
type UnitCommand struct {
	Unit    string `json:"unit"`
	Command string `json:"command"`
}

// Result is what Apply did.
type Result struct {
	Changes  []Change `json:"changes"`
	Warnings []string `json:"warnings"`
	// DaemonReload is set when units changed and systemd was (or, without
	// a notifier, would have to be) reloaded.
	DaemonReload bool `json:"daemon_reload"`
	// Commands are the unit jobs run through the notifier.
	Commands []UnitCommand `json:"commands"`
}

// defaultHTTPTimeout bounds a remote fetch when the caller brings no
// client.
const defaultHTTPTimeout = 5 * time.Minute

// Apply makes the root match cfg. Every decision is taken before the first
// write: the model is checked, remote contents are fetched and verified,
// owners resolved and conflicts found; any error there returns with
// nothing written. Writes are atomic per file. Applying the same cfg again
// reports no changes and rewrites nothing.
//
// Restart-like unit commands (restart, reload, try-restart, …) run only
// for units whose files changed in this apply; start and stop run every
// time, which systemd makes a no-op when the unit is in that state.
func Apply(ctx context.Context, cfg Config, opts ApplyOptions) (Result, error) {
	res := Result{Changes: []Change{}, Warnings: []string{}, Commands: []UnitCommand{}}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rep := Report{}
	checkModel(&cfg, &rep)
	if rep.HasErrors() {
		return res, fmt.Errorf("apply: %w", &ValidationError{Report: rep})
	}
	for _, w := range rep.Warnings() {
		res.Warnings = append(res.Warnings, w.String())
	}
	rf, err := openRootFS(opts.Root)
	if err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	defer rf.Close()
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if cfg.Files, err = fetchAll(ctx, client, cfg.Files); err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	p, err := buildPlan(cfg, rf)
	if err != nil {
		return res, fmt.Errorf("apply: %w", err)
	}
	res.Warnings = append(res.Warnings, p.warnings...)

	// First pass: decide everything, write nothing.
	decisions := make([]decision, len(p.ops))
	var conflicts []error
	planned := map[string]bool{}
	for i, o := range p.ops {
		d, err := rf.decide(o)
		if err != nil {
			return res, fmt.Errorf("apply: %w", err)
		}
		if o.typ == typeHardlink && d.act != actNone && !planned[o.target] && !rf.exists(o.target) {
			return res, fmt.Errorf("apply: nothing written: hard link %s: target %s does not exist and the document does not create it", o.path, o.target)
		}
		planned[o.path] = true
		if d.act == actConflict {
			if opts.FirstBoot {
				conflicts = append(conflicts, errors.New(d.conflict))
			} else {
				res.Warnings = append(res.Warnings, d.conflict+"; left alone")
			}
		}
		decisions[i] = d
	}
	if err := errors.Join(conflicts...); err != nil {
		return res, fmt.Errorf("apply: nothing written: %w", err)
	}
	if opts.DryRun {
		res.Changes, res.DaemonReload, res.Warnings = changesOf(p, decisions, res.Warnings)
		res.Commands = commandsToRun(p, decisions)
		return res, nil
	}

	// Second pass: carry out what the first pass found. An op is decided
	// again right before it runs, since an earlier op (a link, a directory)
	// may have changed what its path resolves to.
	for i, o := range p.ops {
		if decisions[i].act == actNone || decisions[i].act == actConflict {
			continue // conflicts were reported as warnings in the first pass
		}
		d, err := rf.decide(o)
		if err == nil && d.act == actConflict {
			err = errors.New(d.conflict)
		}
		if err == nil && d.act != actNone {
			if err = rf.execute(o, d); err != nil {
				err = fmt.Errorf("%s %s: %w", actionNames[d.act], o.path, err)
			}
		}
		if err != nil {
			// Report what was done before the failure.
			for k := i; k < len(decisions); k++ {
				decisions[k].act = actNone
			}
			res.Changes, res.DaemonReload, res.Warnings = changesOf(p, decisions, res.Warnings)
			return res, fmt.Errorf("apply: %w", err)
		}
		decisions[i] = d
		if d.act != actNone {
			log.Info("machine config change", "kind", o.kind, "path", o.path, "action", actionNames[d.act], "details", strings.Join(d.what, ","))
		}
	}
	res.Changes, res.DaemonReload, res.Warnings = changesOf(p, decisions, res.Warnings)
	res.Commands = commandsToRun(p, decisions)
	if opts.Systemd == nil {
		return res, nil
	}
	if res.DaemonReload {
		if err := opts.Systemd.DaemonReload(ctx); err != nil {
			return res, fmt.Errorf("apply: daemon-reload: %w", err)
		}
	}
	for _, c := range res.Commands {
		if err := opts.Systemd.RunUnitCommand(ctx, c.Unit, c.Command); err != nil {
			return res, fmt.Errorf("apply: %s %s: %w", c.Command, c.Unit, err)
		}
	}
	return res, nil
}

// changesOf turns decisions into the change list; account databases are
// reported through their users and groups.
func changesOf(p *plan, decisions []decision, warnings []string) ([]Change, bool, []string) {
	changes := []Change{}
	accountsWritten := false
	reload := false
	for i, o := range p.ops {
		d := decisions[i]
		if d.warning != "" {
			warnings = append(warnings, d.warning)
		}
		if d.act == actNone || d.act == actConflict {
			continue
		}
		if o.unit != "" {
			reload = true
		}
		if o.silent {
			accountsWritten = true
			continue
		}
		details := d.detail
		if len(details) == 0 && d.act == actUpdate {
			details = d.what
		}
		changes = append(changes, Change{Kind: o.kind, Path: o.path, Name: o.name, Action: actionNames[d.act], Details: details})
	}
	if accountsWritten {
		var acct []Change
		for _, a := range p.accounts {
			act := "update"
			if a.create {
				act = "create"
			}
			acct = append(acct, Change{Kind: a.kind, Name: a.name, Action: act, Details: a.fields})
		}
		changes = append(acct, changes...)
	}
	return changes, reload, warnings
}

// commandsToRun picks the unit commands: start and stop always, the
// restart family only for units whose files changed.
func commandsToRun(p *plan, decisions []decision) []UnitCommand {
	changed := map[string]bool{}
	for i, o := range p.ops {
		if o.unit != "" && decisions[i].act != actNone && decisions[i].act != actConflict {
			changed[o.unit] = true
		}
	}
	out := []UnitCommand{}
	for _, c := range p.commands {
		if c.Command == "start" || c.Command == "stop" || changed[c.Unit] {
			out = append(out, c)
		}
	}
	return out
}

// execute carries out one decided op.
func (rf *rootFS) execute(o op, d decision) error {
	rp := d.resolved
	if d.act == actReplace && d.cur.isDir() {
		if err := rf.removeAll(rp); err != nil {
			return err
		}
	}
	chown := rf.canChown
	uid, gid, mode := o.uid, o.gid, o.mode
	if o.keepMeta && d.cur.exists {
		uid, gid, mode = d.cur.uid, d.cur.gid, d.cur.mode
	}
	switch o.typ {
	case typeFile:
		if d.act == actUpdate && !slices.Contains(d.what, "content") {
			return rf.setMeta(rp, mode, uid, gid, chown)
		}
		return rf.writeFile(rp, d.data, mode, uid, gid, chown)
	case typeDir:
		if d.act == actReplace {
			if err := rf.remove(rp); err != nil {
				return err
			}
		}
		if d.act == actUpdate {
			return rf.setMeta(rp, mode, uid, gid, chown)
		}
		return rf.mkdir(rp, mode, uid, gid, chown)
	case typeSymlink:
		if d.act == actUpdate {
			return rf.r.Lchown(rel(rp), uid, gid)
		}
		return rf.symlink(rp, o.target, uid, gid, chown && o.ownerSet)
	case typeHardlink:
		rt, err := rf.resolve(o.target)
		if err != nil {
			return err
		}
		return rf.hardlink(rp, rt)
	case typeRemoveLink:
		return rf.remove(rp)
	}
	return nil
}

// ApplyDocument validates doc and, when the report has no errors, applies
// it. A document with errors returns a *ValidationError (wrapped) and
// writes nothing.
func ApplyDocument(ctx context.Context, doc []byte, opts ApplyOptions) (Result, Report, error) {
	cfg, rep := Validate(doc)
	if rep.HasErrors() {
		return Result{Changes: []Change{}, Warnings: []string{}, Commands: []UnitCommand{}}, rep, fmt.Errorf("apply: %w", &ValidationError{Report: rep})
	}
	res, err := Apply(ctx, cfg, opts)
	return res, rep, err
}
