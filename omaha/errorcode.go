package omaha

import (
	"fmt"
	"math"
	"strings"
)

// update_engine exit codes (action_processor.h), as reported in the errorcode
// attribute of a 3.0 event. A reported value also carries flag bits; mask
// with CodeMask (or use DecodeErrorCode) before comparing.
const (
	CodeSuccess                               = 0
	CodeError                                 = 1
	CodeOmahaRequestError                     = 2
	CodeOmahaResponseHandler                  = 3
	CodeFilesystemCopier                      = 4
	CodePostinstallRunner                     = 5
	CodeSetBootableFlag                       = 6
	CodeInstallDeviceOpen                     = 7
	CodeKernelDeviceOpen                      = 8
	CodeDownloadTransfer                      = 9
	CodePayloadHashMismatch                   = 10
	CodePayloadSizeMismatch                   = 11
	CodeDownloadPayloadVerification           = 12
	CodeDownloadNewPartitionInfo              = 13
	CodeDownloadWrite                         = 14
	CodeNewRootfsVerification                 = 15
	CodeNewKernelVerification                 = 16
	CodeSignedDeltaPayloadExpected            = 17
	CodeDownloadPayloadPubKeyVerification     = 18
	CodePostinstallBootedFromFirmwareB        = 19
	CodeDownloadStateInitialization           = 20
	CodeDownloadInvalidMetadataMagicString    = 21
	CodeDownloadSignatureMissingInManifest    = 22
	CodeDownloadManifestParse                 = 23
	CodeDownloadMetadataSignature             = 24
	CodeDownloadMetadataSignatureVerification = 25
	CodeDownloadMetadataSignatureMismatch     = 26
	CodeDownloadOperationHashVerification     = 27
	CodeDownloadOperationExecution            = 28
	CodeDownloadOperationHashMismatch         = 29
	CodeOmahaRequestEmptyResponse             = 30
	CodeOmahaRequestXMLParse                  = 31
	CodeDownloadInvalidMetadataSize           = 32
	CodeDownloadInvalidMetadataSignature      = 33
	CodeOmahaResponseInvalid                  = 34
	CodeOmahaUpdateIgnoredPerPolicy           = 35
	CodeOmahaUpdateDeferredPerPolicy          = 36
	CodeOmahaErrorInHTTPResponse              = 37
	CodeDownloadOperationHashMissing          = 38
	CodeDownloadMetadataSignatureMissing      = 39
	CodeOmahaUpdateDeferredForBackoff         = 40
	CodePostinstallPowerwash                  = 41
	CodeNewPCRPolicyVerification              = 42
	CodeNewPCRPolicyHTTP                      = 43
	CodeRollbackError                         = 44
	CodeDownloadIncomplete                    = 100
	// CodeOmahaRequestHTTPResponseBase + N reports HTTP status N (0–999)
	// on the update check request.
	CodeOmahaRequestHTTPResponseBase = 2000
)

// Flag bits update_engine ORs into every reported code.
const (
	// FlagDevMode is set when the boot mode was not normal (older builds).
	FlagDevMode = 1 << 31
	// FlagResumed is set when the failed attempt resumed a download.
	FlagResumed = 1 << 30
	// FlagTestImage is set on non-official (developer) builds.
	FlagTestImage = 1 << 29
	// FlagTestOmahaUrl is set whenever SERVER differs from the built-in
	// production URL, i.e. on every self-hosted fleet. It is not a fault.
	FlagTestOmahaUrl = 1 << 28
	// CodeMask removes the flag bits, leaving the exit code.
	CodeMask = 0x0FFFFFFF
)

// ErrorCode is a decoded errorcode attribute.
type ErrorCode struct {
	// Raw is the value as reported, flags included.
	Raw int64
	// Code is Raw masked with CodeMask.
	Code int
	// Name is the update_engine name, e.g. "OmahaResponseInvalid", or
	// "Unknown".
	Name string
	// Flags names the set flag bits, highest first: "DevMode", "Resumed",
	// "TestImage", "TestOmahaUrl".
	Flags []string
	// Description is one plain-language sentence about what failed.
	Description string
	// Hint says what an operator can do, when there is something useful to
	// say; it may be empty.
	Hint string
}

// String formats the code as "Name (code) [Flag, Flag]", e.g.
// "OmahaResponseInvalid (34) [TestOmahaUrl]".
func (c ErrorCode) String() string {
	s := fmt.Sprintf("%s (%d)", c.Name, c.Code)
	if len(c.Flags) > 0 {
		s += " [" + strings.Join(c.Flags, ", ") + "]"
	}
	return s
}

// IsRollback reports whether a raw errorcode means the machine booted back
// into its previous version (code 44), whatever flags are set. A server
// must not offer that version again automatically.
func IsRollback(raw int64) bool {
	return raw&CodeMask == CodeRollbackError
}

// flagNames lists the flag bits highest first, the order used in Flags.
var flagNames = []struct {
	bit  int64
	name string
}{
	{FlagDevMode, "DevMode"},
	{FlagResumed, "Resumed"},
	{FlagTestImage, "TestImage"},
	{FlagTestOmahaUrl, "TestOmahaUrl"},
}

type codeInfo struct {
	name, desc, hint string
}

// Hints shared by several codes.
const (
	hintJournal   = "Read `journalctl -u update-engine` on the machine around the time of the report."
	hintSignature = "Serve the payload exactly as the OS vendor signed it; re-built, re-compressed or truncated files fail this check."
	hintDisk      = "Check the machine's disk for I/O errors and the partition table for damage."
)

// codes describes every exit code update_engine defines.
var codes = map[int]codeInfo{
	CodeSuccess: {"Success", "the operation succeeded", ""},
	CodeError:   {"Error", "update_engine hit a generic error it did not classify further", hintJournal},
	CodeOmahaRequestError: {"OmahaRequestError", "the update check request to the server failed",
		"Check that the machine can reach the SERVER URL in update.conf and that the server answers."},
	CodeOmahaResponseHandler: {"OmahaResponseHandler", "update_engine could not act on the server's answer", hintJournal},
	CodeFilesystemCopier:     {"FilesystemCopier", "copying the filesystem to the inactive partition failed", hintDisk},
	CodePostinstallRunner: {"PostinstallRunner", "the post-install step on the new partition failed",
		"Look at the flatcar-postinst output in the update-engine journal; it also downloads the extra OEM and sysext packages listed in the response."},
	CodeSetBootableFlag:   {"SetBootableFlag", "marking the new partition bootable failed (a code current update_engine no longer uses)", ""},
	CodeInstallDeviceOpen: {"InstallDeviceOpen", "the inactive partition could not be opened for writing", hintDisk},
	CodeKernelDeviceOpen:  {"KernelDeviceOpen", "the kernel partition could not be opened", hintDisk},
	CodeDownloadTransfer: {"DownloadTransfer", "downloading the payload failed or was interrupted",
		"Check that the machine can reach the payload URL and that the server delivers the whole file."},
	CodePayloadHashMismatch: {"PayloadHashMismatch", "the payload's hash did not match the hash the server announced",
		"Make sure the postinstall action's sha256 is the base64 SHA-256 of exactly the file served at the URL; a proxy or CDN may have altered the file."},
	CodePayloadSizeMismatch: {"PayloadSizeMismatch", "the payload's size did not match the size the server announced",
		"Make the package size equal to the served file's length in bytes; a proxy may have truncated it."},
	CodeDownloadPayloadVerification: {"DownloadPayloadVerification", "the payload's signature did not verify against the key built into the OS image", hintSignature},
	CodeDownloadNewPartitionInfo:    {"DownloadNewPartitionInfo", "the payload did not describe the new partition correctly", hintSignature},
	CodeDownloadWrite:               {"DownloadWrite", "writing the payload to the inactive partition failed", hintDisk},
	CodeNewRootfsVerification:       {"NewRootfsVerification", "the new root filesystem did not verify after it was written", hintDisk},
	CodeNewKernelVerification:       {"NewKernelVerification", "the new kernel did not verify after it was written", hintDisk},
	CodeSignedDeltaPayloadExpected: {"SignedDeltaPayloadExpected", "a delta payload arrived without the signature update_engine requires",
		"Serve full payloads; Flatcar clients do not accept deltas."},
	CodeDownloadPayloadPubKeyVerification: {"DownloadPayloadPubKeyVerification", "the payload's public-key signature check failed", hintSignature},
	CodePostinstallBootedFromFirmwareB:    {"PostinstallBootedFromFirmwareB", "post-install refused to run because the machine booted from firmware B (a ChromeOS-era check)", ""},
	CodeDownloadStateInitialization:       {"DownloadStateInitialization", "update_engine could not prepare its download state", hintDisk},
	CodeDownloadInvalidMetadataMagicString: {"DownloadInvalidMetadataMagicString", "the downloaded file is not an update payload",
		"The URL probably serves the wrong file (an HTML error page, a disk image, a different package); check the codebase URL and package name."},
	CodeDownloadSignatureMissingInManifest:    {"DownloadSignatureMissingInManifest", "the payload carries no signature", hintSignature},
	CodeDownloadManifestParse:                 {"DownloadManifestParse", "the payload's internal manifest could not be parsed", hintSignature},
	CodeDownloadMetadataSignature:             {"DownloadMetadataSignature", "the payload's metadata signature was malformed", hintSignature},
	CodeDownloadMetadataSignatureVerification: {"DownloadMetadataSignatureVerification", "the payload's metadata signature did not verify", hintSignature},
	CodeDownloadMetadataSignatureMismatch:     {"DownloadMetadataSignatureMismatch", "the payload's metadata signature did not match its metadata", hintSignature},
	CodeDownloadOperationHashVerification:     {"DownloadOperationHashVerification", "an install operation's hash could not be verified", hintSignature},
	CodeDownloadOperationExecution:            {"DownloadOperationExecution", "an install operation from the payload failed to run", hintDisk},
	CodeDownloadOperationHashMismatch:         {"DownloadOperationHashMismatch", "an install operation's data did not match its hash", hintSignature},
	CodeOmahaRequestEmptyResponse: {"OmahaRequestEmptyResponse", "the update server answered with an empty body",
		"Check the server's logs and any proxy in front of it; the answer must be an Omaha <response>."},
	CodeOmahaRequestXMLParse: {"OmahaRequestXMLParse", "the update server's answer was not valid XML",
		"A proxy, captive portal or wrong SERVER URL may be answering instead of the update server."},
	CodeDownloadInvalidMetadataSize:      {"DownloadInvalidMetadataSize", "the payload's metadata size was invalid", hintSignature},
	CodeDownloadInvalidMetadataSignature: {"DownloadInvalidMetadataSignature", "the payload's metadata signature was invalid", hintSignature},
	CodeOmahaResponseInvalid: {"OmahaResponseInvalid", "the server's answer was not a usable update response (an error-* status, or an offer missing its URL, package size or sha256)",
		"Throttling must answer updatecheck status \"noupdate\", never error-*; for an \"ok\" answer check the URL, package name and size, and the postinstall action's sha256."},
	CodeOmahaUpdateIgnoredPerPolicy:  {"OmahaUpdateIgnoredPerPolicy", "the machine ignored the offered update because of local policy", ""},
	CodeOmahaUpdateDeferredPerPolicy: {"OmahaUpdateDeferredPerPolicy", "the machine deferred the offered update because of local policy", ""},
	CodeOmahaErrorInHTTPResponse: {"OmahaErrorInHTTPResponse", "the update server answered with an HTTP error status",
		"Check the server's logs; HTTP 500 and 503 also make clients back off for up to 4 hours."},
	CodeDownloadOperationHashMissing:     {"DownloadOperationHashMissing", "an install operation in the payload had no hash", hintSignature},
	CodeDownloadMetadataSignatureMissing: {"DownloadMetadataSignatureMissing", "the payload's metadata signature was missing", hintSignature},
	CodeOmahaUpdateDeferredForBackoff: {"OmahaUpdateDeferredForBackoff", "the machine postponed the download because it is backing off after earlier failures",
		"Not a fault by itself; fix the earlier failures, or set DisablePayloadBackoff=\"true\" on the postinstall action."},
	CodePostinstallPowerwash:     {"PostinstallPowerwash", "the post-install powerwash failed (a ChromeOS-era step)", ""},
	CodeNewPCRPolicyVerification: {"NewPCRPolicyVerification", "the new TPM PCR policy did not verify", hintJournal},
	CodeNewPCRPolicyHTTP:         {"NewPCRPolicyHTTP", "fetching the new TPM PCR policy failed", hintJournal},
	CodeRollbackError: {"RollbackError", "the machine booted back into the version it ran before the update",
		"Do not offer the same version to this machine again automatically; check the console and journal of the failed boot."},
	CodeDownloadIncomplete: {"DownloadIncomplete", "the download had not finished (an internal code that is not normally reported)", ""},
}

// DecodeErrorCode classifies a raw errorcode attribute. It accepts both the
// positive form (268435490) and the negative form update_engine produces
// when the DevMode bit is set, because it formats a 32-bit value with %d.
// Codes it does not know get Name "Unknown"; flags are decoded regardless.
func DecodeErrorCode(raw int64) ErrorCode {
	c := ErrorCode{Raw: raw, Code: int(raw & CodeMask)}
	bits := raw & 0xFFFFFFFF // the two's-complement bits of a 32-bit code
	for _, f := range flagNames {
		if bits&f.bit != 0 {
			c.Flags = append(c.Flags, f.name)
		}
	}
	switch info, ok := codes[c.Code]; {
	case raw < math.MinInt32 || raw > math.MaxUint32:
		c.Name = "Unknown"
		c.Description = "the value does not fit in 32 bits, so it is not an update_engine exit code"
	case ok:
		c.Name, c.Description, c.Hint = info.name, info.desc, info.hint
	case c.Code >= CodeOmahaRequestHTTPResponseBase && c.Code < CodeOmahaRequestHTTPResponseBase+1000:
		status := c.Code - CodeOmahaRequestHTTPResponseBase
		c.Name = fmt.Sprintf("OmahaRequestHTTPResponse%d", status)
		c.Description = fmt.Sprintf("the update server answered the update check with HTTP status %d", status)
		c.Hint = httpHint(status)
	default:
		c.Name = "Unknown"
		c.Description = "update_engine does not define this exit code"
	}
	return c
}

// httpHint suggests a fix for an HTTP status seen by update_engine.
func httpHint(status int) string {
	switch {
	case status == 404 || status == 405 || status == 501:
		return "Check the path of the SERVER URL in update.conf; Omaha servers listen on /v1/update/."
	case status == 500 || status == 503:
		return "The server failed or is overloaded; clients now back off for up to 4 hours. Keep HTTP 200 and answer \"noupdate\" with a PollInterval to slow clients down instead."
	case status >= 500:
		return "The server or a proxy in front of it failed; check their logs."
	case status == 401 || status == 403:
		return "Something in front of the update server requires authentication; update_engine cannot provide any."
	case status >= 400:
		return "The server rejected the request; check its logs for the reason."
	default:
		return ""
	}
}
