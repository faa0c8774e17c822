package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ReadMachineID reads a machine-id file (32 hex digits).
func ReadMachineID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("machine id: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", fmt.Errorf("machine id: %s does not hold 32 lowercase hex digits", path)
	}
	return id, nil
}

// ReadBootID reads the kernel's boot id (a UUID, new on every boot).
func ReadBootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// BootedPartUUIDFromCmdline finds the /usr partition the kernel was told
// to use: verity.usr=PARTUUID=… or mount.usr=PARTUUID=… (or usr=…), as
// Flatcar's grub.cfg writes them. "" when absent.
func BootedPartUUIDFromCmdline(cmdline string) string {
	for _, key := range []string{"verity.usr=", "mount.usr=", "usr="} {
		for _, f := range strings.Fields(cmdline) {
			v, ok := strings.CutPrefix(f, key)
			if !ok {
				continue
			}
			if u, ok := strings.CutPrefix(v, "PARTUUID="); ok {
				return strings.ToLower(u)
			}
		}
	}
	return ""
}

// DiskOfPartUUID finds the whole disk that holds the partition with this
// unique GUID, through udev's /dev/disk/by-partuuid and sysfs.
func DiskOfPartUUID(partUUID string) (string, error) {
	link := filepath.Join("/dev/disk/by-partuuid", strings.ToLower(partUUID))
	dev, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("find disk of partition %s: %w", partUUID, err)
	}
	sys, err := filepath.EvalSymlinks(filepath.Join("/sys/class/block", filepath.Base(dev)))
	if err != nil {
		return "", fmt.Errorf("find disk of partition %s: %w", partUUID, err)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err != nil {
		return "", fmt.Errorf("find disk of partition %s: %s is not a partition", partUUID, dev)
	}
	return filepath.Join("/dev", filepath.Base(filepath.Dir(sys))), nil
}

// ReadKeyValueFile reads an os-release style file; a missing file gives an
// empty map.
func ReadKeyValueFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return out, sc.Err()
}
