package omaha

import "strconv"

// Event types (eventtype) defined by Google's Omaha v3 specification, plus
// the CoreRoller-era custom type Nebraska knows. update_engine sends only
// EventTypeUpdateComplete, EventTypeUpdateDownloadStarted and
// EventTypeUpdateDownloadFinished; servers should store any other value
// rather than drop it.
const (
	EventTypeUnknown                      = 0
	EventTypeDownloadComplete             = 1
	EventTypeInstallComplete              = 2
	EventTypeUpdateComplete               = 3
	EventTypeUninstall                    = 4
	EventTypeDownloadStarted              = 5
	EventTypeInstallStarted               = 6
	EventTypeNewApplicationInstallStarted = 9
	EventTypeSetupStarted                 = 10
	EventTypeSetupFinished                = 11
	EventTypeUpdateApplicationStarted     = 12
	EventTypeUpdateDownloadStarted        = 13
	EventTypeUpdateDownloadFinished       = 14
	EventTypeUpdateInstallerStarted       = 15
	EventTypeSetupUpdateBegin             = 16
	EventTypeSetupUpdateComplete          = 17
	EventTypeRegisterProductComplete      = 20
	EventTypeOEMInstallFirstCheck         = 30
	EventTypeAppSpecificCommandStarted    = 40
	EventTypeAppSpecificCommandEnded      = 41
	EventTypeUpdateCheckFailure           = 50
	EventTypeSetupFailure                 = 100
	EventTypeCOMServerFailure             = 102
	EventTypeSetupUpdateFailure           = 103
	// EventTypeCoreRollerInstalled (800, with result 1) is a custom event
	// from the CoreRoller era that Nebraska records as "Installed";
	// update_engine never sends it.
	EventTypeCoreRollerInstalled = 800
)

// Event results (eventresult) defined by Google's Omaha v3 specification.
// In the Flatcar dialect 3.2 rides on every update check ("booted and
// running"), 3.1 means the payload is installed and a reboot is pending,
// 3.0 carries an errorcode, and 3.9 means deferred (not a failure).
const (
	EventResultError                 = 0
	EventResultSuccess               = 1
	EventResultSuccessReboot         = 2
	EventResultSuccessRestartBrowser = 3
	EventResultCancelled             = 4
	EventResultErrorInstallerMSI     = 5
	EventResultErrorInstallerOther   = 6
	EventResultNoUpdate              = 7
	EventResultErrorInstallerSystem  = 8
	EventResultUpdateDeferred        = 9
	EventResultHandoffError          = 10
)

var eventTypeNames = map[int]string{
	EventTypeUnknown:                      "unknown",
	EventTypeDownloadComplete:             "download complete",
	EventTypeInstallComplete:              "install complete",
	EventTypeUpdateComplete:               "update complete",
	EventTypeUninstall:                    "uninstall",
	EventTypeDownloadStarted:              "download started",
	EventTypeInstallStarted:               "install started",
	EventTypeNewApplicationInstallStarted: "new application install started",
	EventTypeSetupStarted:                 "setup started",
	EventTypeSetupFinished:                "setup finished",
	EventTypeUpdateApplicationStarted:     "update application started",
	EventTypeUpdateDownloadStarted:        "update download started",
	EventTypeUpdateDownloadFinished:       "update download finished",
	EventTypeUpdateInstallerStarted:       "update installer started",
	EventTypeSetupUpdateBegin:             "setup update begin",
	EventTypeSetupUpdateComplete:          "setup update complete",
	EventTypeRegisterProductComplete:      "register product complete",
	EventTypeOEMInstallFirstCheck:         "OEM install first check",
	EventTypeAppSpecificCommandStarted:    "app-specific command started",
	EventTypeAppSpecificCommandEnded:      "app-specific command ended",
	EventTypeUpdateCheckFailure:           "update check failure",
	EventTypeSetupFailure:                 "setup failure",
	EventTypeCOMServerFailure:             "COM server failure",
	EventTypeSetupUpdateFailure:           "setup update failure",
	EventTypeCoreRollerInstalled:          "installed (CoreRoller)",
}

var eventResultNames = map[int]string{
	EventResultError:                 "error",
	EventResultSuccess:               "success",
	EventResultSuccessReboot:         "success, reboot",
	EventResultSuccessRestartBrowser: "success, restart browser",
	EventResultCancelled:             "cancelled",
	EventResultErrorInstallerMSI:     "installer error (MSI)",
	EventResultErrorInstallerOther:   "installer error (other)",
	EventResultNoUpdate:              "no update",
	EventResultErrorInstallerSystem:  "installer error (system)",
	EventResultUpdateDeferred:        "update deferred",
	EventResultHandoffError:          "handoff error",
}

// EventTypeName returns the specification's name for an event type, e.g.
// "update download started", or "event type N" for undefined values.
func EventTypeName(t int) string {
	if s, ok := eventTypeNames[t]; ok {
		return s
	}
	return "event type " + strconv.Itoa(t)
}

// EventResultName returns the specification's name for an event result,
// e.g. "success", or "event result N" for undefined values.
func EventResultName(r int) string {
	if s, ok := eventResultNames[r]; ok {
		return s
	}
	return "event result " + strconv.Itoa(r)
}
