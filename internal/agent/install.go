package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/flotilla/flotilla/internal/gpt"
	"github.com/flotilla/flotilla/internal/payload"
	"github.com/flotilla/flotilla/omaha"
)

// install drives the pending update through its steps, persisting each
// before acting on it. It returns when the update is applied, failed (and
// reported), or ctx ended (the work stays pending and resumes).
func (a *Agent) install(ctx context.Context) {
	for {
		p := a.pending()
		if p == nil || ctx.Err() != nil {
			return
		}
		var ferr *failure
		switch p.Step {
		case stepDownload:
			ferr = a.stepDownload(ctx, p)
		case stepVerify:
			ferr = a.stepVerify(ctx, p)
		case stepWrite:
			ferr = a.stepWrite(ctx, p)
		case stepCommit:
			ferr = a.stepCommit(ctx, p)
		default:
			ferr = fail(omaha.CodeError, "install: unknown step %q in the saved state", p.Step)
		}
		if ferr != nil {
			if ctx.Err() != nil {
				return
			}
			a.reportFailure(ctx, ferr)
			a.cleanStaging("")
			return
		}
	}
}

func (a *Agent) payloadPath(p *Pending) string {
	return filepath.Join(a.stagingDir(), p.SHA256+".payload")
}

// cleanStaging removes staging files except keep (a payload whose
// download may resume).
func (a *Agent) cleanStaging(keep string) {
	entries, err := os.ReadDir(a.stagingDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		if keep != "" && strings.HasPrefix(e.Name(), keep) {
			continue
		}
		_ = os.Remove(filepath.Join(a.stagingDir(), e.Name()))
	}
}

func (a *Agent) stepDownload(ctx context.Context, p *Pending) *failure {
	_ = a.update(func(s *State) { s.Status = StatusDownloading })
	a.cleanStaging(p.SHA256)
	if !p.Sent13 {
		a.sendEvent(ctx, omaha.Event{Type: omaha.EventTypeUpdateDownloadStarted, Result: omaha.EventResultSuccess})
		_ = a.update(func(s *State) { s.Pending.Sent13 = true })
	}
	resumed, sh, ferr := a.download(ctx, p, a.payloadPath(p))
	if resumed {
		_ = a.update(func(s *State) { s.Pending.Resumed = true })
	}
	if ferr != nil {
		return ferr
	}
	a.sendEvent(ctx, omaha.Event{Type: omaha.EventTypeUpdateDownloadFinished, Result: omaha.EventResultSuccess})
	// A stream that was not a payload leaves the digest empty; the verify
	// step then reads the file and reports exactly what is wrong with it.
	dataSize, dataSHA, _ := sh.data.Sum()
	if ferr := a.advance(func(s *State) {
		s.Pending.Sent14 = true
		s.Pending.Step = stepVerify
		s.Pending.DataSize, s.Pending.DataSHA256 = dataSize, dataSHA
	}); ferr != nil {
		return ferr
	}
	return nil
}

// stepVerify authenticates the staged payload before any slot is touched:
// a trusted signature over the header, then every data byte against the
// signed digests. It also picks the target slot.
func (a *Agent) stepVerify(ctx context.Context, p *Pending) *failure {
	pl, closeFn, ferr := a.openVerified(p, StatusVerifying)
	if ferr != nil {
		return ferr
	}
	defer closeFn()
	h := pl.Header()
	if h.Version != p.Version {
		return fail(omaha.CodeDownloadPayloadVerification, "verify: the payload is signed for version %q but the server offered %q", h.Version, p.Version)
	}
	// The data section was hashed as it arrived; the signed header must
	// name that digest. Without it (a payload staged by an older agent, or
	// junk) every byte is read and checked now.
	if p.DataSHA256 != "" {
		if h.DataSize != p.DataSize || h.DataSHA256 != p.DataSHA256 {
			return fail(omaha.CodeDownloadPayloadVerification, "verify: the downloaded data (%d bytes, SHA-256 %s) is not what the signed header names (%d bytes, %s)",
				p.DataSize, p.DataSHA256, h.DataSize, h.DataSHA256)
		}
	} else if err := pl.VerifyData(ctx, a.progressFunc()); err != nil {
		return payloadFailure("verify", err)
	}
	disk, target, ferr := a.openTarget()
	if ferr != nil {
		return ferr
	}
	defer disk.Close()
	if size := target.size; h.ImageSize > size {
		return fail(omaha.CodeDownloadNewPartitionInfo, "verify: the image is %d bytes but slot %s holds %d", h.ImageSize, target.Name, size)
	}
	a.log.Info("payload verified", "version", h.Version, "image_size", h.ImageSize, "target", target.Name)
	if ferr := a.advance(func(s *State) {
		s.Pending.Step = stepWrite
		s.Pending.TargetPartUUID = target.GUID.String()
		s.Pending.ImageSHA256 = h.ImageSHA256
		s.Pending.ImageSize = h.ImageSize
	}); ferr != nil {
		return ferr
	}
	return nil
}

// stepWrite clears the target's boot attributes (one GPT write) so a
// half-written slot can never be booted, writes the verified image, and
// reads it back.
func (a *Agent) stepWrite(ctx context.Context, p *Pending) *failure {
	// The staged file could have been replaced since the verify step
	// (crash, tampering on disk): authenticate it again, cheaply — the
	// signed header binds the image digest the read-back checks.
	pl, closeFn, ferr := a.openVerified(p, StatusFinalizing)
	if ferr != nil {
		return ferr
	}
	defer closeFn()
	if pl.Header().ImageSHA256 != p.ImageSHA256 {
		return fail(omaha.CodeDownloadPayloadVerification, "write: the staged payload changed since it was verified")
	}
	disk, target, ferr := a.openTarget()
	if ferr != nil {
		return ferr
	}
	defer disk.Close()
	if target.GUID.String() != p.TargetPartUUID {
		return fail(omaha.CodeInstallDeviceOpen, "write: the target slot changed since verification (%s, was %s)", target.GUID, p.TargetPartUUID)
	}
	t, err := disk.Table()
	if err != nil {
		return fail(omaha.CodeInstallDeviceOpen, "write: %w", err)
	}
	if tp, ok := t.ByGUID(target.GUID); ok && tp.Attributes != tp.Attributes.WithPriority(0).WithTries(0).WithSuccessful(false) {
		if err := gpt.ClearSlot(t, target.GUID); err != nil {
			return fail(omaha.CodeSetBootableFlag, "write: %w", err)
		}
		if err := disk.Commit(t); err != nil {
			return fail(omaha.CodeSetBootableFlag, "write: clear slot attributes: %w", err)
		}
	}
	progress := a.progressFunc()
	crashed := false
	// Every chunk is read back from the partition and hashed beside the
	// writing; the digest of what was read must be the signed image digest.
	dst := struct {
		io.ReaderAt
		io.WriterAt
	}{disk.PartitionReader(target.Partition), disk.PartitionWriter(target.Partition)}
	err = pl.WriteImageReadBack(ctx, dst, target.size, func(done, total int64) {
		progress(done, total)
		if !crashed && done > 0 && done < total {
			crashed = true
			a.crashpoint("write")
		}
	})
	if err != nil {
		return payloadFailure("write", err)
	}
	if err := disk.Sync(); err != nil {
		return fail(omaha.CodeDownloadWrite, "write: sync %s: %w", disk.Path(), err)
	}
	if ferr := a.advance(func(s *State) { s.Pending.Step = stepCommit; s.Pending.BootID = a.cfg.BootID }); ferr != nil {
		return ferr
	}
	return nil
}

// stepCommit is the single commit point: one GPT write gives the target
// priority 2 with one try and the other slot priority 1. Before it the old
// slot boots; after it the new one gets exactly one chance.
func (a *Agent) stepCommit(ctx context.Context, p *Pending) *failure {
	disk, target, ferr := a.openTarget()
	if ferr != nil {
		return ferr
	}
	defer disk.Close()
	if target.GUID.String() != p.TargetPartUUID {
		return fail(omaha.CodeInstallDeviceOpen, "commit: the target slot changed (%s, was %s)", target.GUID, p.TargetPartUUID)
	}
	t, err := disk.Table()
	if err != nil {
		return fail(omaha.CodeSetBootableFlag, "commit: %w", err)
	}
	if err := gpt.CommitUpdate(t, target.GUID); err != nil {
		return fail(omaha.CodeSetBootableFlag, "commit: %w", err)
	}
	a.crashpoint("before-commit")
	if err := disk.Commit(t); err != nil {
		return fail(omaha.CodeSetBootableFlag, "commit: %w", err)
	}
	a.crashpoint("after-commit")
	from := a.currentVersion()
	// The marker goes first: whoever sees UPDATED_NEED_REBOOT finds it.
	if a.cfg.RebootRequiredFile != "" {
		if err := os.WriteFile(a.cfg.RebootRequiredFile, nil, 0o644); err != nil {
			a.log.Warn("cannot write the reboot-required marker", "path", a.cfg.RebootRequiredFile, "err", err)
		}
	}
	a.setProgress(1)
	if err := a.update(func(s *State) {
		s.recordSlot(p.TargetPartUUID, SlotRecord{Version: p.Version, ImageSHA256: p.ImageSHA256, ImageSize: p.ImageSize, WrittenAt: a.cfg.Now()})
		s.RebootPending = &RebootPending{
			Version: p.Version, TargetPartUUID: p.TargetPartUUID, FromVersion: from,
			FromPartUUID: a.cfg.BootedPartUUID, BootID: a.cfg.BootID, AppliedAt: a.cfg.Now(),
		}
		s.Pending = nil
		s.Status = StatusUpdatedNeedReboot
	}); err != nil {
		return fail(omaha.CodeDownloadStateInitialization, "commit: %w", err)
	}
	a.cleanStaging("")
	a.metrics.applied.Inc()
	a.log.Info("update applied; reboot required", "version", p.Version, "slot", target.Name)
	a.sendEvent(ctx, omaha.Event{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccess})
	return nil
}

func (a *Agent) progressFunc() func(done, total int64) {
	return func(done, total int64) {
		if total > 0 {
			a.setProgress(float64(done) / float64(total))
		}
	}
}

func (a *Agent) openPayload(p *Pending) (*payload.Payload, func(), *failure) {
	f, err := os.Open(a.payloadPath(p))
	if err != nil {
		// The staged file is gone: download again.
		_ = a.update(func(s *State) { s.Pending.Step = stepDownload })
		return nil, nil, fail(omaha.CodeDownloadStateInitialization, "open staged payload: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fail(omaha.CodeDownloadStateInitialization, "open staged payload: %w", err)
	}
	pl, err := payload.Open(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, nil, payloadFailure("open payload", err)
	}
	return pl, func() { f.Close() }, nil
}

// verifySignature fails closed: without a trusted key nothing installs.
func (a *Agent) verifySignature(pl *payload.Payload) *failure {
	kr, err := payload.LoadKeyring(a.cfg.PayloadKeyPaths...)
	if err != nil {
		return fail(omaha.CodeDownloadPayloadPubKeyVerification, "verify: load payload keys: %w", err)
	}
	id, err := pl.VerifySignature(kr)
	if err != nil {
		if errors.Is(err, payload.ErrNoTrustedKeys) {
			return fail(omaha.CodeDownloadPayloadPubKeyVerification, "verify: %w (looked in %s)", err, strings.Join(a.cfg.PayloadKeyPaths, ", "))
		}
		return payloadFailure("verify", err)
	}
	a.log.Debug("payload signature verified", "key_id", id)
	return nil
}

// payloadFailure maps payload errors to update_engine's codes.
func payloadFailure(op string, err error) *failure {
	code := omaha.CodeDownloadPayloadVerification
	switch {
	case errors.Is(err, payload.ErrNoTrustedKeys):
		code = omaha.CodeDownloadPayloadPubKeyVerification
	case errors.Is(err, payload.ErrUnsigned):
		code = omaha.CodeDownloadSignatureMissingInManifest
	case errors.Is(err, payload.ErrBadMagic):
		code = omaha.CodeDownloadInvalidMetadataMagicString
	case errors.Is(err, payload.ErrUnsupportedVersion), errors.Is(err, payload.ErrMalformed):
		code = omaha.CodeDownloadManifestParse
	case errors.Is(err, payload.ErrTooLarge):
		code = omaha.CodeDownloadNewPartitionInfo
	case errors.Is(err, payload.ErrImageMismatch) && op == "write":
		code = omaha.CodeNewRootfsVerification
	case errors.Is(err, payload.ErrSignature), errors.Is(err, payload.ErrDataMismatch), errors.Is(err, payload.ErrImageMismatch):
		code = omaha.CodeDownloadPayloadVerification
	case op == "write":
		code = omaha.CodeDownloadWrite
	}
	return &failure{code: code, err: fmt.Errorf("%s: %w", op, err)}
}

// openTarget opens the disk and picks the slot to write: the USR slot
// (by type GUID and label) that is not the booted one. It refuses when the
// booted slot is unknown or is not one of the two.
func (a *Agent) openTarget() (*gpt.Disk, slot, *failure) {
	if a.cfg.Disk == "" {
		return nil, slot{}, fail(omaha.CodeInstallDeviceOpen, "no disk configured (--disk)")
	}
	disk, err := gpt.Open(a.cfg.Disk)
	if err != nil {
		return nil, slot{}, fail(omaha.CodeInstallDeviceOpen, "open disk: %w", err)
	}
	t, err := disk.Table()
	if err != nil {
		disk.Close()
		return nil, slot{}, fail(omaha.CodeInstallDeviceOpen, "read GPT of %s: %w", a.cfg.Disk, err)
	}
	slotA, slotB, err := gpt.FindUSR(t)
	if err != nil {
		disk.Close()
		return nil, slot{}, fail(omaha.CodeInstallDeviceOpen, "%s: %w", a.cfg.Disk, err)
	}
	booted := strings.ToLower(a.cfg.BootedPartUUID)
	var target gpt.Partition
	switch booted {
	case slotA.GUID.String():
		target = slotB
	case slotB.GUID.String():
		target = slotA
	case "":
		disk.Close()
		return nil, slot{}, fail(omaha.CodeInstallDeviceOpen, "the booted /usr partition is unknown (no mount.usr/verity.usr PARTUUID on the kernel command line; pass --booted-partuuid); refusing to pick a target")
	default:
		disk.Close()
		return nil, slot{}, fail(omaha.CodeInstallDeviceOpen, "the booted /usr partition %s is neither USR-A (%s) nor USR-B (%s) on %s; refusing to write", booted, slotA.GUID, slotB.GUID, a.cfg.Disk)
	}
	if target.GUID.String() == booted {
		disk.Close()
		return nil, slot{}, fail(omaha.CodeInstallDeviceOpen, "the target slot %s is the booted one; refusing to write", target.Name)
	}
	return disk, slot{Partition: target, size: target.Size(t.SectorSize)}, nil
}

// slot is the chosen target partition and its size in bytes.
type slot struct {
	gpt.Partition
	size int64
}

// openVerified sets the status, opens the staged payload and checks its
// signature: the start of every step that reads the payload.
func (a *Agent) openVerified(p *Pending, status string) (*payload.Payload, func(), *failure) {
	_ = a.update(func(s *State) { s.Status = status })
	a.setProgress(0)
	pl, closeFn, ferr := a.openPayload(p)
	if ferr != nil {
		return nil, nil, ferr
	}
	if ferr := a.verifySignature(pl); ferr != nil {
		closeFn()
		return nil, nil, ferr
	}
	return pl, closeFn, nil
}

// advance records the next step; the step must not run on a state that
// could not be saved.
func (a *Agent) advance(fn func(s *State)) *failure {
	if err := a.update(fn); err != nil {
		return fail(omaha.CodeDownloadStateInitialization, "install: %w", err)
	}
	return nil
}
