package cli

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	v1 "github.com/flotilla/flotilla/api/v1"
)

func newPackageCmd(g *globals) *cobra.Command {
	return parentCmd("package", "Manage release packages",
		newPackageCreateCmd(g), newPackageListCmd(g), newPackageShowCmd(g), newPackageDeleteCmd(g))
}

type packageCreateOptions struct {
	app, version, arch string
	url, file          string
	size               int64
	sha1, sha256       string
	releaseNotes       string
	extraFiles         []string
	sizeChanged        bool
}

func newPackageCreateCmd(g *globals) *cobra.Command {
	var o packageCreateOptions
	cmd := &cobra.Command{
		Use:   "create --app APPID --version V --url BASE_URL --file NAME --size BYTES --sha256 HASH",
		Short: "Register a release payload",
		Long: `Register a release payload: machines are offered BASE_URL/NAME.

Hashes are the base64 of the raw digest, as Omaha sends them; a hex digest
(as printed by sha256sum) is accepted and converted.`,
		Example: `  flotilla package create --app $APP --version 3815.2.0 \
    --url https://update.release.flatcar-linux.net/amd64-usr/3815.2.0 \
    --file flatcar_production_update.gz --size 465000000 \
    --sha256 "$(sha256sum flatcar_production_update.gz | cut -d' ' -f1)"`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.sizeChanged = cmd.Flags().Changed("size")
			return runPackageCreate(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "application id (required)")
	f.StringVar(&o.version, "version", "", "release version, e.g. 3815.2.0 (required)")
	f.StringVar(&o.arch, "arch", "amd64", "architecture")
	f.StringVar(&o.url, "url", "", "base URL the payload is downloaded from (required)")
	f.StringVar(&o.file, "file", "", "payload file name under --url (required)")
	f.Int64Var(&o.size, "size", 0, "payload size in bytes (required)")
	f.StringVar(&o.sha256, "sha256", "", "SHA-256 of the payload, base64 or hex (required)")
	f.StringVar(&o.sha1, "sha1", "", "SHA-1 of the payload, base64 or hex")
	f.StringVar(&o.releaseNotes, "release-notes", "", "release notes text or URL")
	f.StringArrayVar(&o.extraFiles, "extra-file", nil, "extra file as name:size:sha1:sha256 (hashes may be empty; repeatable)")
	return cmd
}

func runPackageCreate(ctx context.Context, g *globals, o packageCreateOptions) error {
	if err := requireFlags("app", o.app, "version", o.version, "url", o.url, "file", o.file, "sha256", o.sha256); err != nil {
		return err
	}
	if !o.sizeChanged {
		return usagef("missing required flag --size")
	}
	if o.size <= 0 {
		return usagef("--size must be positive")
	}
	if o.arch == "" {
		return usagef("--arch must not be empty")
	}
	p := v1.Package{
		AppID:        o.app,
		Version:      o.version,
		Arch:         o.arch,
		URL:          o.url,
		File:         o.file,
		Size:         o.size,
		ReleaseNotes: o.releaseNotes,
	}
	var err error
	if p.SHA256, err = digestArg("sha256", o.sha256, 32); err != nil {
		return err
	}
	if o.sha1 != "" {
		if p.SHA1, err = digestArg("sha1", o.sha1, 20); err != nil {
			return err
		}
	}
	for _, s := range o.extraFiles {
		pf, err := parseExtraFile(s)
		if err != nil {
			return err
		}
		p.ExtraFiles = append(p.ExtraFiles, pf)
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	out, err := c.CreatePackage(ctx, o.app, p)
	if err != nil {
		return apiFailed("create package", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, out)
	}
	fmt.Fprintf(g.stdout, "package %s (%s) created\n", out.Version, out.Arch)
	return nil
}

// digestArg checks a digest flag and returns it as base64. Hex input (as
// printed by sha256sum) is converted.
func digestArg(flag, s string, size int) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*size {
		if b, err := hex.DecodeString(s); err == nil {
			return base64.StdEncoding.EncodeToString(b), nil
		}
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != size {
		return "", usagef("--%s %q: want the base64 (or hex) of a %d-byte digest", flag, s, size)
	}
	return s, nil
}

// parseExtraFile parses name:size:sha1:sha256 (hashes may be empty).
func parseExtraFile(s string) (v1.PackageFile, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 || parts[0] == "" {
		return v1.PackageFile{}, usagef("--extra-file %q: want name:size:sha1:sha256", s)
	}
	size, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || size <= 0 {
		return v1.PackageFile{}, usagef("--extra-file %q: size must be a positive number of bytes", s)
	}
	pf := v1.PackageFile{Name: parts[0], Size: size}
	if parts[2] != "" {
		if pf.SHA1, err = digestArg("extra-file sha1", parts[2], 20); err != nil {
			return v1.PackageFile{}, err
		}
	}
	if parts[3] != "" {
		if pf.SHA256, err = digestArg("extra-file sha256", parts[3], 32); err != nil {
			return v1.PackageFile{}, err
		}
	}
	return pf, nil
}

type packageListOptions struct {
	app string
}

func newPackageListCmd(g *globals) *cobra.Command {
	var o packageListOptions
	cmd := &cobra.Command{
		Use:   "list --app APPID",
		Short: "List an application's packages, newest first",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPackageList(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.app, "app", "", "application id (required)")
	return cmd
}

func runPackageList(ctx context.Context, g *globals, o packageListOptions) error {
	if err := requireFlags("app", o.app); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	pkgs, err := c.ListPackages(ctx, o.app)
	if err != nil {
		return apiFailed("list packages", err)
	}
	if g.jsonOutput() {
		if pkgs == nil {
			pkgs = []v1.Package{}
		}
		return printJSON(g.stdout, pkgs)
	}
	t := newTable(g.stdout, "VERSION", "ARCH", "FILE", "SIZE", "EXTRA FILES", "CREATED")
	for _, p := range pkgs {
		t.row(p.Version, p.Arch, p.File, byteSize(p.Size), strconv.Itoa(len(p.ExtraFiles)), date(p.CreatedAt))
	}
	return t.flush()
}

// byteSize formats a size in bytes with a binary unit: "443.5 MiB".
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

type packageRefOptions struct {
	app, version, arch string
}

func (o *packageRefOptions) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.app, "app", "", "application id (required)")
	f.StringVar(&o.version, "version", "", "release version (required)")
	f.StringVar(&o.arch, "arch", "amd64", "architecture")
}

func newPackageShowCmd(g *globals) *cobra.Command {
	var o packageRefOptions
	cmd := &cobra.Command{
		Use:   "show --app APPID --version V [--arch ARCH]",
		Short: "Show one package",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPackageShow(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	return cmd
}

func runPackageShow(ctx context.Context, g *globals, o packageRefOptions) error {
	if err := requireFlags("app", o.app, "version", o.version, "arch", o.arch); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	p, err := c.GetPackage(ctx, o.app, o.version, o.arch)
	if err != nil {
		return apiFailed("show package", err)
	}
	if g.jsonOutput() {
		return printJSON(g.stdout, p)
	}
	f := newFields(g.stdout)
	f.add("App", p.AppID)
	f.add("Version", p.Version)
	f.add("Arch", p.Arch)
	f.add("URL", p.URL)
	f.add("File", p.File)
	f.add("Size", fmt.Sprintf("%d (%s)", p.Size, byteSize(p.Size)))
	f.add("SHA-256", p.SHA256)
	f.add("SHA-1", p.SHA1)
	for _, ef := range p.ExtraFiles {
		f.add("Extra file", fmt.Sprintf("%s %d sha1=%s sha256=%s", ef.Name, ef.Size, ef.SHA1, ef.SHA256))
	}
	f.add("Release notes", p.ReleaseNotes)
	f.add("Created", timestamp(p.CreatedAt))
	return f.flush()
}

func newPackageDeleteCmd(g *globals) *cobra.Command {
	var o packageRefOptions
	cmd := &cobra.Command{
		Use:   "delete --app APPID --version V [--arch ARCH]",
		Short: "Delete one package",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPackageDelete(cmd.Context(), g, o)
		},
	}
	o.bind(cmd)
	return cmd
}

func runPackageDelete(ctx context.Context, g *globals, o packageRefOptions) error {
	if err := requireFlags("app", o.app, "version", o.version, "arch", o.arch); err != nil {
		return err
	}
	c, err := g.apiClient()
	if err != nil {
		return err
	}
	if err := c.DeletePackage(ctx, o.app, o.version, o.arch); err != nil {
		return apiFailed("delete package", err)
	}
	if !g.jsonOutput() {
		fmt.Fprintf(g.stdout, "package %s (%s) deleted\n", o.version, o.arch)
	}
	return nil
}
