package omaha

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeErrorCode(t *testing.T) {
	tests := []struct {
		raw   int64
		code  int
		name  string
		flags []string
		str   string
	}{
		{0, 0, "Success", nil, "Success (0)"},
		{1, 1, "Error", nil, "Error (1)"},
		{10, 10, "PayloadHashMismatch", nil, "PayloadHashMismatch (10)"},
		{12, 12, "DownloadPayloadVerification", nil, "DownloadPayloadVerification (12)"},
		{34, 34, "OmahaResponseInvalid", nil, "OmahaResponseInvalid (34)"},
		{268435490, 34, "OmahaResponseInvalid", []string{"TestOmahaUrl"}, "OmahaResponseInvalid (34) [TestOmahaUrl]"},
		{268435466, 10, "PayloadHashMismatch", []string{"TestOmahaUrl"}, "PayloadHashMismatch (10) [TestOmahaUrl]"},
		{268435500, 44, "RollbackError", []string{"TestOmahaUrl"}, "RollbackError (44) [TestOmahaUrl]"},
		{44, 44, "RollbackError", nil, "RollbackError (44)"},
		{1<<30 | 1<<28 | 9, 9, "DownloadTransfer", []string{"Resumed", "TestOmahaUrl"}, "DownloadTransfer (9) [Resumed, TestOmahaUrl]"},
		{1<<31 | 1<<29 | 21, 21, "DownloadInvalidMetadataMagicString", []string{"DevMode", "TestImage"}, "DownloadInvalidMetadataMagicString (21) [DevMode, TestImage]"},
		// update_engine prints a DevMode-flagged code with %d: negative.
		{-2147483638, 10, "PayloadHashMismatch", []string{"DevMode"}, "PayloadHashMismatch (10) [DevMode]"},
		{1<<31 | 1<<30 | 1<<29 | 1<<28 | 34, 34, "OmahaResponseInvalid", []string{"DevMode", "Resumed", "TestImage", "TestOmahaUrl"}, "OmahaResponseInvalid (34) [DevMode, Resumed, TestImage, TestOmahaUrl]"},
		{2503, 2503, "OmahaRequestHTTPResponse503", nil, "OmahaRequestHTTPResponse503 (2503)"},
		{2000 + 999 | 1<<28, 2999, "OmahaRequestHTTPResponse999", []string{"TestOmahaUrl"}, "OmahaRequestHTTPResponse999 (2999) [TestOmahaUrl]"},
		{100, 100, "DownloadIncomplete", nil, "DownloadIncomplete (100)"},
		{45, 45, "Unknown", nil, "Unknown (45)"},
		{1<<28 | 3000, 3000, "Unknown", []string{"TestOmahaUrl"}, "Unknown (3000) [TestOmahaUrl]"},
		{1 << 40, 0, "Unknown", nil, "Unknown (0)"},
	}
	for _, tt := range tests {
		got := DecodeErrorCode(tt.raw)
		if got.Raw != tt.raw || got.Code != tt.code || got.Name != tt.name {
			t.Errorf("DecodeErrorCode(%d) = %+v, want code %d name %s", tt.raw, got, tt.code, tt.name)
		}
		if diff := cmp.Diff(tt.flags, got.Flags); diff != "" {
			t.Errorf("DecodeErrorCode(%d).Flags (-want +got):\n%s", tt.raw, diff)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("DecodeErrorCode(%d).String() = %q, want %q", tt.raw, s, tt.str)
		}
		if got.Description == "" {
			t.Errorf("DecodeErrorCode(%d) has no description", tt.raw)
		}
	}
}

// TestErrorCodeTable checks every code of the update_engine table has a
// name, a one-sentence description and, where given, a hint.
func TestErrorCodeTable(t *testing.T) {
	want := map[int]string{
		0: "Success", 1: "Error", 2: "OmahaRequestError", 3: "OmahaResponseHandler", 4: "FilesystemCopier",
		5: "PostinstallRunner", 6: "SetBootableFlag", 7: "InstallDeviceOpen", 8: "KernelDeviceOpen", 9: "DownloadTransfer",
		10: "PayloadHashMismatch", 11: "PayloadSizeMismatch", 12: "DownloadPayloadVerification",
		13: "DownloadNewPartitionInfo", 14: "DownloadWrite", 15: "NewRootfsVerification", 16: "NewKernelVerification",
		17: "SignedDeltaPayloadExpected", 18: "DownloadPayloadPubKeyVerification", 19: "PostinstallBootedFromFirmwareB",
		20: "DownloadStateInitialization", 21: "DownloadInvalidMetadataMagicString", 22: "DownloadSignatureMissingInManifest",
		23: "DownloadManifestParse", 24: "DownloadMetadataSignature", 25: "DownloadMetadataSignatureVerification",
		26: "DownloadMetadataSignatureMismatch", 27: "DownloadOperationHashVerification", 28: "DownloadOperationExecution",
		29: "DownloadOperationHashMismatch", 30: "OmahaRequestEmptyResponse", 31: "OmahaRequestXMLParse",
		32: "DownloadInvalidMetadataSize", 33: "DownloadInvalidMetadataSignature", 34: "OmahaResponseInvalid",
		35: "OmahaUpdateIgnoredPerPolicy", 36: "OmahaUpdateDeferredPerPolicy", 37: "OmahaErrorInHTTPResponse",
		38: "DownloadOperationHashMissing", 39: "DownloadMetadataSignatureMissing", 40: "OmahaUpdateDeferredForBackoff",
		41: "PostinstallPowerwash", 42: "NewPCRPolicyVerification", 43: "NewPCRPolicyHTTP", 44: "RollbackError",
		100: "DownloadIncomplete",
	}
	for code, name := range want {
		c := DecodeErrorCode(int64(code))
		if c.Name != name {
			t.Errorf("code %d: name %q, want %q", code, c.Name, name)
		}
		if c.Description == "" || strings.ContainsAny(c.Description[:1], "ABCDEFGHIJKLMNOPQRSTUVWXYZ") || strings.HasSuffix(c.Description, ".") {
			t.Errorf("code %d: description %q should be a lower-case clause without final period", code, c.Description)
		}
		if c.Hint != "" && !strings.HasSuffix(c.Hint, ".") {
			t.Errorf("code %d: hint %q should be a full sentence", code, c.Hint)
		}
	}
	if len(codes) != len(want) {
		t.Errorf("table has %d codes, test expects %d", len(codes), len(want))
	}
	if got := DecodeErrorCode(10).Description; got != "the payload's hash did not match the hash the server announced" {
		t.Errorf("description of 10 = %q", got)
	}
}

func TestIsRollback(t *testing.T) {
	for raw, want := range map[int64]bool{
		44: true, 268435500: true, 1<<31 | 44: true, -2147483604: true,
		34: false, 0: false, 2044: false, 268435490: false,
	} {
		if got := IsRollback(raw); got != want {
			t.Errorf("IsRollback(%d) = %v, want %v", raw, got, want)
		}
	}
}

func TestHTTPHints(t *testing.T) {
	for status, want := range map[int]string{404: "/v1/update/", 503: "PollInterval", 502: "proxy", 403: "authentication", 400: "rejected", 200: ""} {
		got := DecodeErrorCode(int64(CodeOmahaRequestHTTPResponseBase + status)).Hint
		if want == "" && got != "" || !strings.Contains(got, want) {
			t.Errorf("hint for HTTP %d = %q, want mention of %q", status, got, want)
		}
	}
}
