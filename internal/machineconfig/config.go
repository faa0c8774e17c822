package machineconfig

import (
	"fmt"
	"io/fs"
	"strings"
)

// Format names the document format a Config came from.
type Format string

// Document formats Validate recognises.
const (
	FormatCloudConfig Format = "cloud-config"
	FormatIgnition    Format = "ignition"
)

// Config is the machine configuration that both formats map into. Zero
// values mean "leave alone": an empty Hostname does not clear the host
// name, a nil Unit.Enable neither enables nor disables.
type Config struct {
	Format Format `json:"format"`
	// Version is the Ignition spec version of the document ("3.4.0");
	// empty for cloud-config.
	Version string `json:"version,omitempty"`

	Hostname string `json:"hostname,omitempty"`
	// ManageEtcHosts is cloud-config's manage_etc_hosts; only "localhost"
	// is defined.
	ManageEtcHosts string `json:"manage_etc_hosts,omitempty"`

	Files       []File      `json:"files,omitempty"`
	Directories []Directory `json:"directories,omitempty"`
	Links       []Link      `json:"links,omitempty"`
	Users       []User      `json:"users,omitempty"`
	Groups      []Group     `json:"groups,omitempty"`
	Units       []Unit      `json:"units,omitempty"`
	Update      *UpdateConf `json:"update,omitempty"`

	// FirstBoot holds what only a machine's first boot can do; Apply
	// reports it and leaves it alone.
	FirstBoot FirstBoot `json:"first_boot"`
}

// Owner names a file's owner by id or by name. Names are looked up in the
// target root's /etc/passwd and /etc/group (including users and groups the
// same document creates); an unset owner is root.
type Owner struct {
	UID   *int   `json:"uid,omitempty"`
	GID   *int   `json:"gid,omitempty"`
	User  string `json:"user,omitempty"`
	Group string `json:"group,omitempty"`
}

// Content is a file's data: inline bytes (already decoded: base64, gzip
// and data: URLs are resolved by the parser) or a remote http(s) source
// that Apply fetches before it writes anything.
type Content struct {
	Inline []byte `json:"inline,omitempty"`
	// Source is an http or https URL; empty for inline data.
	Source string `json:"source,omitempty"`
	// Compression is "gzip" when the fetched data must be decompressed.
	Compression string `json:"compression,omitempty"`
	// Hash is "sha512-<hex>" or "sha256-<hex>" of the decompressed data.
	Hash string `json:"hash,omitempty"`
	// Headers are sent with the request for Source.
	Headers []Header `json:"headers,omitempty"`
}

// Header is one HTTP header of a remote source.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// IsRemote reports whether the content has to be fetched.
func (c Content) IsRemote() bool { return c.Source != "" }

// File is a regular file to write.
type File struct {
	Path string `json:"path"`
	// Contents nil means none given: an existing file keeps its data, a
	// missing one is created empty (Ignition semantics).
	Contents *Content `json:"contents,omitempty"`
	// Append fragments follow Contents (or the existing data).
	Append []Content   `json:"append,omitempty"`
	Mode   fs.FileMode `json:"mode"`
	Owner  Owner       `json:"owner"`
	// Overwrite replaces an existing file with different data or of
	// another type. cloud-config's write_files always overwrites;
	// Ignition defaults to false.
	Overwrite bool `json:"overwrite"`

	at pos
}

// Directory is a directory to create.
type Directory struct {
	Path      string      `json:"path"`
	Mode      fs.FileMode `json:"mode"`
	Owner     Owner       `json:"owner"`
	Overwrite bool        `json:"overwrite"`

	at pos
}

// Link is a symbolic link, or a hard link when Hard is set.
type Link struct {
	Path      string `json:"path"`
	Target    string `json:"target"`
	Hard      bool   `json:"hard,omitempty"`
	Owner     Owner  `json:"owner"`
	Overwrite bool   `json:"overwrite"`

	at pos
}

// User is an account. An existing account keeps its uid; the other fields
// that are set replace the current values, supplementary groups are added
// and SSH keys replace flotilla's managed block in authorized_keys.
type User struct {
	Name string `json:"name"`
	// PasswordHash nil leaves the password alone ("*" for new users).
	PasswordHash      *string  `json:"password_hash,omitempty"`
	SSHAuthorizedKeys []string `json:"ssh_authorized_keys,omitempty"`
	UID               *int     `json:"uid,omitempty"`
	Gecos             string   `json:"gecos,omitempty"`
	HomeDir           string   `json:"home_dir,omitempty"`
	NoCreateHome      bool     `json:"no_create_home,omitempty"`
	PrimaryGroup      string   `json:"primary_group,omitempty"`
	Groups            []string `json:"groups,omitempty"`
	NoUserGroup       bool     `json:"no_user_group,omitempty"`
	System            bool     `json:"system,omitempty"`
	Shell             string   `json:"shell,omitempty"`

	at pos
}

// Group is a group account.
type Group struct {
	Name         string  `json:"name"`
	GID          *int    `json:"gid,omitempty"`
	PasswordHash *string `json:"password_hash,omitempty"`
	System       bool    `json:"system,omitempty"`

	at pos
}

// Unit is a systemd unit and what to do with it.
type Unit struct {
	Name string `json:"name"`
	// Contents nil leaves the unit file alone (drop-ins, enable and mask
	// still apply).
	Contents *string `json:"contents,omitempty"`
	// Enable true creates the [Install] symlinks, false removes them.
	Enable *bool `json:"enable,omitempty"`
	// Mask true replaces the unit by a link to /dev/null, false removes
	// such a link.
	Mask *bool `json:"mask,omitempty"`
	// Runtime places the unit, its drop-ins, mask and enable links under
	// /run (lost at reboot) instead of /etc.
	Runtime bool `json:"runtime,omitempty"`
	// Command is run through systemd after the files are in place: start,
	// stop, restart, reload, try-restart, reload-or-restart or
	// reload-or-try-restart.
	Command string   `json:"command,omitempty"`
	DropIns []DropIn `json:"drop_ins,omitempty"`

	at pos
}

// DropIn is a unit drop-in file, NAME.d/<Name>.
type DropIn struct {
	Name     string `json:"name"`
	Contents string `json:"contents"`
}

// UpdateConf holds update.conf settings (coreos.update and
// coreos.locksmith); empty fields leave the file's value alone.
type UpdateConf struct {
	Group              string `json:"group,omitempty"`
	Server             string `json:"server,omitempty"`
	RebootStrategy     string `json:"reboot_strategy,omitempty"`
	RebootWindowStart  string `json:"reboot_window_start,omitempty"`
	RebootWindowLength string `json:"reboot_window_length,omitempty"`
	LocksmithGroup     string `json:"locksmith_group,omitempty"`
	LocksmithEndpoint  string `json:"locksmith_endpoint,omitempty"`
}

// UpdateConfPath is where Apply writes UpdateConf, relative to the root;
// the flotilla agent reads it first.
const UpdateConfPath = "/etc/flotilla/update.conf"

// Pairs returns the set keys as update.conf lines would name them, sorted
// by key.
func (u UpdateConf) Pairs() [][2]string {
	all := [][2]string{
		{"GROUP", u.Group},
		{"LOCKSMITHD_ENDPOINT", u.LocksmithEndpoint},
		{"LOCKSMITHD_GROUP", u.LocksmithGroup},
		{"LOCKSMITHD_REBOOT_WINDOW_LENGTH", u.RebootWindowLength},
		{"LOCKSMITHD_REBOOT_WINDOW_START", u.RebootWindowStart},
		{"REBOOT_STRATEGY", u.RebootStrategy},
		{"SERVER", u.Server},
	}
	var out [][2]string
	for _, kv := range all {
		if kv[1] != "" {
			out = append(out, kv)
		}
	}
	return out
}

// FirstBoot lists the parts of an Ignition config that only the first boot
// of a machine can carry out. Apply never touches disks.
type FirstBoot struct {
	Disks            []Disk       `json:"disks,omitempty"`
	RAID             []RAID       `json:"raid,omitempty"`
	Filesystems      []Filesystem `json:"filesystems,omitempty"`
	LUKS             []LUKS       `json:"luks,omitempty"`
	KernelArgsAdd    []string     `json:"kernel_args_add,omitempty"`
	KernelArgsRemove []string     `json:"kernel_args_remove,omitempty"`
}

// Empty reports whether there is nothing first-boot-only.
func (f FirstBoot) Empty() bool {
	return len(f.Disks)+len(f.RAID)+len(f.Filesystems)+len(f.LUKS)+len(f.KernelArgsAdd)+len(f.KernelArgsRemove) == 0
}

// Summary describes each first-boot item in one line each.
func (f FirstBoot) Summary() []string {
	var out []string
	for _, d := range f.Disks {
		out = append(out, fmt.Sprintf("disk %s: %d partition(s), wipe table %t", d.Device, len(d.Partitions), d.WipeTable))
	}
	for _, r := range f.RAID {
		out = append(out, fmt.Sprintf("raid %s: level %s on %s", r.Name, r.Level, strings.Join(r.Devices, ", ")))
	}
	for _, fsys := range f.Filesystems {
		out = append(out, fmt.Sprintf("filesystem %s: format %s, path %s", fsys.Device, orDash(fsys.Format), orDash(fsys.Path)))
	}
	for _, l := range f.LUKS {
		out = append(out, fmt.Sprintf("luks %s on %s", l.Name, orDash(l.Device)))
	}
	if len(f.KernelArgsAdd)+len(f.KernelArgsRemove) > 0 {
		out = append(out, fmt.Sprintf("kernel arguments: add %q, remove %q", f.KernelArgsAdd, f.KernelArgsRemove))
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Disk is a partitioned disk of storage.disks.
type Disk struct {
	Device     string      `json:"device"`
	WipeTable  bool        `json:"wipe_table,omitempty"`
	Partitions []Partition `json:"partitions,omitempty"`
}

// Partition is one entry of a Disk.
type Partition struct {
	Label    string `json:"label,omitempty"`
	Number   int    `json:"number,omitempty"`
	SizeMiB  *int   `json:"size_mib,omitempty"`
	StartMiB *int   `json:"start_mib,omitempty"`
	TypeGUID string `json:"type_guid,omitempty"`
}

// RAID is a software RAID array of storage.raid.
type RAID struct {
	Name    string   `json:"name"`
	Level   string   `json:"level,omitempty"`
	Devices []string `json:"devices,omitempty"`
}

// Filesystem is a filesystem of storage.filesystems.
type Filesystem struct {
	Device         string `json:"device"`
	Format         string `json:"format,omitempty"`
	Path           string `json:"path,omitempty"`
	Label          string `json:"label,omitempty"`
	WipeFilesystem bool   `json:"wipe_filesystem,omitempty"`
}

// LUKS is an encrypted volume of storage.luks.
type LUKS struct {
	Name   string `json:"name"`
	Device string `json:"device,omitempty"`
}
