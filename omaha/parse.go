package omaha

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrMalformed is wrapped by every error that means "this document is not
// something the Omaha dialect allows": not XML, the wrong root element, the
// wrong protocol, a missing or non-numeric required attribute, or a body
// beyond the size limits. Branch on it with errors.Is to answer HTTP 400
// rather than 500.
var ErrMalformed = errors.New("malformed Omaha XML")

// Limits applied by ParseRequest and ParseResponse. They bound memory and
// keep error messages readable; real documents are a few KiB.
const (
	// MaxDocumentSize is the largest body accepted, in bytes. Nebraska caps
	// requests at 64 KiB; responses with many packages can be larger.
	MaxDocumentSize = 1 << 20
	// MaxAttributeLength is the longest attribute value accepted, in bytes.
	// It leaves room for signed CDN URLs and RSA signatures.
	MaxAttributeLength = 8 << 10
	// maxDepth bounds element nesting; the deepest legal path is
	// response/app/updatecheck/manifest/packages/package (6).
	maxDepth = 32
)

// ParseRequest reads and checks an Omaha <request> document. It is tolerant
// of what real clients send (extra attributes, non-semver versions, upper
// case GUIDs, empty track) and rejects, with an error wrapping ErrMalformed,
// what a server cannot act on: a body that is not XML, a root other than
// <request>, a protocol other than "3.0", an <app> without appid, or an
// <event> without a numeric eventtype and eventresult.
//
// Normalization: when an app has no machineid (or bootid) but the request
// carries the Google-spec userid (or sessionid), ParseRequest copies it into
// the app, as go-omaha clients intend. Numeric attributes are canonicalised
// ("+03" becomes 3), and absent optional numbers read as 0.
func ParseRequest(r io.Reader) (*Request, error) {
	const op = "parse request"
	data, err := readDocument(r, op, "request")
	if err != nil {
		return nil, err
	}
	var raw rawRequest
	if err := xml.Unmarshal(data, &raw); err != nil {
		return nil, malformed(op, "the body is not a well-formed Omaha request: %s", describeXMLError(err))
	}
	req, err := raw.convert()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return req, nil
}

// ParseResponse reads and checks an Omaha <response> document. It rejects,
// with an error wrapping ErrMalformed, a body that is not XML, a root other
// than <response>, a protocol other than "3.0", an <app> without appid, and
// non-numeric sizes or intervals. It does not judge whether update_engine
// would accept the offered update; use UpdateCheckResponse.Validate.
func ParseResponse(r io.Reader) (*Response, error) {
	const op = "parse response"
	data, err := readDocument(r, op, "response")
	if err != nil {
		return nil, err
	}
	var raw rawResponse
	if err := xml.Unmarshal(data, &raw); err != nil {
		return nil, malformed(op, "the body is not a well-formed Omaha response: %s", describeXMLError(err))
	}
	resp, err := raw.convert()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return resp, nil
}

// malformed builds an ErrMalformed error with the operation prefix.
func malformed(op, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", op, ErrMalformed, fmt.Sprintf(format, args...))
}

// invalid builds an ErrMalformed error without a prefix; the parser adds it.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// readDocument reads at most MaxDocumentSize bytes and checks, token by
// token, that they form a single well-formed XML element named root with
// bounded nesting and attribute sizes. Doing this before xml.Unmarshal lets
// the errors name the actual problem instead of a generic decode failure.
func readDocument(r io.Reader, op, root string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read body: %w", op, err)
	}
	if len(data) > MaxDocumentSize {
		return nil, malformed(op, "the body is larger than %d bytes; an Omaha %s is a few KiB", MaxDocumentSize, root)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, malformed(op, "the body is empty; expected an Omaha <%s> XML document", root)
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	depth, sawRoot := 0, false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, malformed(op, "the body is not well-formed XML: %s", describeXMLError(err))
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if sawRoot {
					return nil, malformed(op, "the body has a second top-level element <%s> after <%s>; send exactly one <%s>", clip(t.Name.Local), root, root)
				}
				sawRoot = true
				if t.Name.Local != root {
					return nil, malformed(op, "the root element is <%s>, expected <%s>", clip(t.Name.Local), root)
				}
			}
			depth++
			if depth > maxDepth {
				return nil, malformed(op, "elements are nested more than %d deep", maxDepth)
			}
			for _, a := range t.Attr {
				if len(a.Value) > MaxAttributeLength {
					return nil, malformed(op, "attribute %s of <%s> is %d bytes long, more than the %d allowed", clip(a.Name.Local), clip(t.Name.Local), len(a.Value), MaxAttributeLength)
				}
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(t)) > 0 {
				if !sawRoot {
					return nil, malformed(op, "the body is not XML: it starts with text instead of a <%s> element", root)
				}
				return nil, malformed(op, "the body has text after the <%s> element", root)
			}
		}
	}
	if !sawRoot {
		return nil, malformed(op, "the body contains no XML element; expected <%s>", root)
	}
	return data, nil
}

// describeXMLError turns encoding/xml errors into a sentence: truncation is
// by far the most common cause in practice and deserves its own wording.
func describeXMLError(err error) string {
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		if strings.Contains(se.Msg, "unexpected EOF") {
			return fmt.Sprintf("it ends at line %d before the document is complete (truncated body?)", se.Line)
		}
		return fmt.Sprintf("line %d: %s", se.Line, se.Msg)
	}
	msg := err.Error()
	if strings.Contains(msg, "CharsetReader") {
		return "it declares a character encoding other than UTF-8; send UTF-8"
	}
	return strings.TrimPrefix(msg, "xml: ")
}

// clip shortens attacker-controlled names and values so that error messages
// stay readable.
func clip(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// quote is strconv.Quote of a clipped value.
func quote(s string) string { return strconv.Quote(clip(s)) }

// parseInt reads an optional integer attribute; empty means 0. Surrounding
// space is tolerated, as encoding/xml itself does.
func parseInt(where, attr, v string, bits int) (int64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, bits)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, invalid("%s: %s=%s is out of range", where, attr, quote(v))
		}
		return 0, invalid("%s: %s=%s is not a whole number", where, attr, quote(v))
	}
	return n, nil
}

// parseRequiredInt is parseInt for attributes that must be present.
func parseRequiredInt(where, attr, v string, bits int) (int64, error) {
	if strings.TrimSpace(v) == "" {
		return 0, invalid("%s has no %s attribute; it is required", where, attr)
	}
	return parseInt(where, attr, v, bits)
}

// parseNonNegative is parseInt for counts and sizes.
func parseNonNegative(where, attr, v string, bits int) (int64, error) {
	n, err := parseInt(where, attr, v, bits)
	if err == nil && n < 0 {
		return 0, invalid("%s: %s=%s must not be negative", where, attr, quote(v))
	}
	return n, err
}

// parseBool reads an optional boolean attribute; empty means false. It
// accepts what strconv.ParseBool does ("true", "True", "1", …) because
// ChromeOS-era servers wrote "True".
func parseBool(where, attr, v string) (bool, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid("%s: %s=%s is not true or false", where, attr, quote(v))
	}
	return b, nil
}

// checkProtocol enforces protocol="3.0"; other versions have different
// semantics that this package does not implement.
func checkProtocol(root, v string) error {
	if v == "" {
		return invalid("<%s> has no protocol attribute; expected protocol=%q", root, ProtocolVersion)
	}
	if v != ProtocolVersion {
		return invalid("<%s> has protocol=%s; only Omaha protocol %q is supported", root, quote(v), ProtocolVersion)
	}
	return nil
}

// rawRequest mirrors Request with every non-string attribute as a string so
// that conversion can report which attribute is wrong and where.
type rawRequest struct {
	Protocol       string   `xml:"protocol,attr"`
	Version        string   `xml:"version,attr"`
	UpdaterVersion string   `xml:"updaterversion,attr"`
	InstallSource  string   `xml:"installsource,attr"`
	IsMachine      string   `xml:"ismachine,attr"`
	RequestID      string   `xml:"requestid,attr"`
	UserID         string   `xml:"userid,attr"`
	SessionID      string   `xml:"sessionid,attr"`
	OS             *OS      `xml:"os"`
	Apps           []rawApp `xml:"app"`
}

type rawApp struct {
	AppID           string       `xml:"appid,attr"`
	Version         string       `xml:"version,attr"`
	Track           string       `xml:"track,attr"`
	FromTrack       string       `xml:"from_track,attr"`
	BootID          string       `xml:"bootid,attr"`
	OEM             string       `xml:"oem,attr"`
	OEMVersion      string       `xml:"oemversion,attr"`
	AlephVersion    string       `xml:"alephversion,attr"`
	MachineID       string       `xml:"machineid,attr"`
	MachineAlias    string       `xml:"machinealias,attr"`
	Lang            string       `xml:"lang,attr"`
	Board           string       `xml:"board,attr"`
	HardwareClass   string       `xml:"hardware_class,attr"`
	DeltaOkay       string       `xml:"delta_okay,attr"`
	MultiManifestOK string       `xml:"multi_manifest_ok,attr"`
	Ping            *rawPing     `xml:"ping"`
	UpdateCheck     *UpdateCheck `xml:"updatecheck"`
	Events          []rawEvent   `xml:"event"`
}

type rawPing struct {
	Active string `xml:"active,attr"`
	A      string `xml:"a,attr"`
	R      string `xml:"r,attr"`
}

type rawEvent struct {
	Type            string `xml:"eventtype,attr"`
	Result          string `xml:"eventresult,attr"`
	ErrorCode       string `xml:"errorcode,attr"`
	PreviousVersion string `xml:"previousversion,attr"`
	NextVersion     string `xml:"nextversion,attr"`
}

func (raw *rawRequest) convert() (*Request, error) {
	if err := checkProtocol("request", raw.Protocol); err != nil {
		return nil, err
	}
	isMachine, err := parseInt("<request>", "ismachine", raw.IsMachine, 32)
	if err != nil {
		return nil, err
	}
	req := &Request{
		Protocol:       raw.Protocol,
		Version:        raw.Version,
		UpdaterVersion: raw.UpdaterVersion,
		InstallSource:  raw.InstallSource,
		IsMachine:      int(isMachine),
		RequestID:      raw.RequestID,
		UserID:         raw.UserID,
		SessionID:      raw.SessionID,
		OS:             raw.OS,
	}
	for i := range raw.Apps {
		app, err := raw.Apps[i].convert(i+1, req)
		if err != nil {
			return nil, err
		}
		req.Apps = append(req.Apps, app)
	}
	return req, nil
}

func (raw *rawApp) convert(n int, req *Request) (App, error) {
	where := fmt.Sprintf("<app> number %d", n)
	if strings.TrimSpace(raw.AppID) == "" {
		return App{}, invalid("%s has no appid attribute; every app must name its application id", where)
	}
	where = fmt.Sprintf("<app appid=%s>", quote(raw.AppID))
	app := App{
		AppID:         raw.AppID,
		Version:       raw.Version,
		Track:         raw.Track,
		FromTrack:     raw.FromTrack,
		BootID:        raw.BootID,
		OEM:           raw.OEM,
		OEMVersion:    raw.OEMVersion,
		AlephVersion:  raw.AlephVersion,
		MachineID:     raw.MachineID,
		MachineAlias:  raw.MachineAlias,
		Lang:          raw.Lang,
		Board:         raw.Board,
		HardwareClass: raw.HardwareClass,
		UpdateCheck:   raw.UpdateCheck,
	}
	// go-omaha-style clients identify themselves with the Google-spec
	// request attributes; fill the dialect's fields so servers need to look
	// in one place only.
	app.MachineID = req.MachineIDOf(&app)
	app.BootID = req.BootIDOf(&app)
	var err error
	if app.DeltaOkay, err = parseBool(where, "delta_okay", raw.DeltaOkay); err != nil {
		return App{}, err
	}
	if app.MultiManifestOK, err = parseBool(where, "multi_manifest_ok", raw.MultiManifestOK); err != nil {
		return App{}, err
	}
	if raw.Ping != nil {
		p, err := raw.Ping.convert(where + " <ping>")
		if err != nil {
			return App{}, err
		}
		app.Ping = p
	}
	for i := range raw.Events {
		ev, err := raw.Events[i].convert(fmt.Sprintf("%s <event> number %d", where, i+1))
		if err != nil {
			return App{}, err
		}
		app.Events = append(app.Events, ev)
	}
	return app, nil
}

func (raw *rawPing) convert(where string) (*Ping, error) {
	active, err := parseInt(where, "active", raw.Active, 32)
	if err != nil {
		return nil, err
	}
	a, err := parseInt(where, "a", raw.A, 32)
	if err != nil {
		return nil, err
	}
	r, err := parseInt(where, "r", raw.R, 32)
	if err != nil {
		return nil, err
	}
	return &Ping{Active: int(active), LastActiveDays: int(a), LastRollCallDays: int(r)}, nil
}

func (raw *rawEvent) convert(where string) (Event, error) {
	t, err := parseRequiredInt(where, "eventtype", raw.Type, 32)
	if err != nil {
		return Event{}, err
	}
	r, err := parseRequiredInt(where, "eventresult", raw.Result, 32)
	if err != nil {
		return Event{}, err
	}
	// errorcode is a signed 64-bit read: update_engine formats the 32-bit
	// code with %d, so codes with the DevMode bit arrive negative, while
	// other clients write the same bits as a large positive number.
	code, err := parseInt(where, "errorcode", raw.ErrorCode, 64)
	if err != nil {
		return Event{}, err
	}
	return Event{
		Type:            int(t),
		Result:          int(r),
		ErrorCode:       code,
		PreviousVersion: raw.PreviousVersion,
		NextVersion:     raw.NextVersion,
	}, nil
}

// rawResponse mirrors Response with non-string attributes as strings.
type rawResponse struct {
	Protocol string           `xml:"protocol,attr"`
	Server   string           `xml:"server,attr"`
	DayStart rawDayStart      `xml:"daystart"`
	Apps     []rawResponseApp `xml:"app"`
}

type rawDayStart struct {
	ElapsedSeconds string `xml:"elapsed_seconds,attr"`
}

type rawResponseApp struct {
	AppID       string          `xml:"appid,attr"`
	Status      string          `xml:"status,attr"`
	Ping        *PingResponse   `xml:"ping"`
	Events      []EventResponse `xml:"event"`
	UpdateCheck *rawUpdateCheck `xml:"updatecheck"`
}

type rawUpdateCheck struct {
	Status       string        `xml:"status,attr"`
	PollInterval string        `xml:"PollInterval,attr"`
	URLs         []URL         `xml:"urls>url"`
	Manifests    []rawManifest `xml:"manifest"`
}

type rawManifest struct {
	Version     string       `xml:"version,attr"`
	IsFloor     string       `xml:"is_floor,attr"`
	FloorReason string       `xml:"floor_reason,attr"`
	IsTarget    string       `xml:"is_target,attr"`
	Packages    []rawPackage `xml:"packages>package"`
	Actions     []rawAction  `xml:"actions>action"`
}

type rawPackage struct {
	Name       string `xml:"name,attr"`
	Size       string `xml:"size,attr"`
	Hash       string `xml:"hash,attr"`
	HashSHA256 string `xml:"hash_sha256,attr"`
	Required   string `xml:"required,attr"`
}

type rawAction struct {
	Event                 string `xml:"event,attr"`
	SHA256                string `xml:"sha256,attr"`
	DisablePayloadBackoff string `xml:"DisablePayloadBackoff,attr"`
	MaxFailureCountPerURL string `xml:"MaxFailureCountPerUrl,attr"`
	IsDeltaPayload        string `xml:"IsDeltaPayload,attr"`
	DisplayVersion        string `xml:"DisplayVersion,attr"`
	ChromeOSVersion       string `xml:"ChromeOSVersion,attr"`
	NeedsAdmin            string `xml:"needsadmin,attr"`
	IsDelta               string `xml:"IsDelta,attr"`
	MetadataSignatureRsa  string `xml:"MetadataSignatureRsa,attr"`
	MetadataSize          string `xml:"MetadataSize,attr"`
	Deadline              string `xml:"deadline,attr"`
}

func (raw *rawResponse) convert() (*Response, error) {
	if err := checkProtocol("response", raw.Protocol); err != nil {
		return nil, err
	}
	elapsed, err := parseInt("<daystart>", "elapsed_seconds", raw.DayStart.ElapsedSeconds, 64)
	if err != nil {
		return nil, err
	}
	resp := &Response{
		Protocol: raw.Protocol,
		Server:   raw.Server,
		DayStart: DayStart{ElapsedSeconds: elapsed},
	}
	for i := range raw.Apps {
		a := &raw.Apps[i]
		if strings.TrimSpace(a.AppID) == "" {
			return nil, invalid("<app> number %d has no appid attribute; every app must name its application id", i+1)
		}
		app := ResponseApp{AppID: a.AppID, Status: a.Status, Ping: a.Ping, Events: a.Events}
		if a.UpdateCheck != nil {
			uc, err := a.UpdateCheck.convert(fmt.Sprintf("<app appid=%s> <updatecheck>", quote(a.AppID)))
			if err != nil {
				return nil, err
			}
			app.UpdateCheck = uc
		}
		resp.Apps = append(resp.Apps, app)
	}
	return resp, nil
}

func (raw *rawUpdateCheck) convert(where string) (*UpdateCheckResponse, error) {
	poll, err := parseNonNegative(where, "PollInterval", raw.PollInterval, 32)
	if err != nil {
		return nil, err
	}
	uc := &UpdateCheckResponse{Status: raw.Status, PollInterval: int(poll), URLs: raw.URLs}
	if len(raw.Manifests) == 0 {
		return uc, nil
	}
	// Only the first manifest is kept, as update_engine reads only that one.
	m := &raw.Manifests[0]
	where += " <manifest>"
	man := &Manifest{Version: m.Version, FloorReason: m.FloorReason}
	if man.IsFloor, err = parseBool(where, "is_floor", m.IsFloor); err != nil {
		return nil, err
	}
	if man.IsTarget, err = parseBool(where, "is_target", m.IsTarget); err != nil {
		return nil, err
	}
	for i := range m.Packages {
		p := &m.Packages[i]
		pw := fmt.Sprintf("%s <package> number %d", where, i+1)
		size, err := parseNonNegative(pw, "size", p.Size, 64)
		if err != nil {
			return nil, err
		}
		req, err := parseBool(pw, "required", p.Required)
		if err != nil {
			return nil, err
		}
		man.Packages = append(man.Packages, Package{Name: p.Name, Size: size, Hash: p.Hash, HashSHA256: p.HashSHA256, Required: req})
	}
	for i := range m.Actions {
		a, err := m.Actions[i].convert(fmt.Sprintf("%s <action> number %d", where, i+1))
		if err != nil {
			return nil, err
		}
		man.Actions = append(man.Actions, a)
	}
	uc.Manifest = man
	return uc, nil
}

func (raw *rawAction) convert(where string) (Action, error) {
	a := Action{
		Event:                raw.Event,
		SHA256:               raw.SHA256,
		DisplayVersion:       raw.DisplayVersion,
		ChromeOSVersion:      raw.ChromeOSVersion,
		NeedsAdmin:           raw.NeedsAdmin,
		IsDelta:              raw.IsDelta,
		MetadataSignatureRsa: raw.MetadataSignatureRsa,
		MetadataSize:         raw.MetadataSize,
		Deadline:             raw.Deadline,
	}
	var err error
	if a.DisablePayloadBackoff, err = parseBool(where, "DisablePayloadBackoff", raw.DisablePayloadBackoff); err != nil {
		return Action{}, err
	}
	if a.IsDeltaPayload, err = parseBool(where, "IsDeltaPayload", raw.IsDeltaPayload); err != nil {
		return Action{}, err
	}
	n, err := parseNonNegative(where, "MaxFailureCountPerUrl", raw.MaxFailureCountPerURL, 32)
	if err != nil {
		return Action{}, err
	}
	a.MaxFailureCountPerURL = int(n)
	return a, nil
}
