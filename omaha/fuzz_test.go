package omaha

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// addSeeds adds every file matching pattern under testdata and the shared
// fixtures to the fuzz corpus.
func addSeeds(f *testing.F, patterns ...string) {
	f.Helper()
	for _, p := range patterns {
		files, err := filepath.Glob(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// FuzzParseRequest checks that ParseRequest never panics, that every error
// wraps ErrMalformed, and that a parsed request survives Marshal and a
// second parse unchanged. The only normalization is documented on
// ParseRequest: numbers are canonicalised and userid/sessionid are copied
// into empty machineid/bootid on the first parse, which makes the second
// parse a fixed point.
func FuzzParseRequest(f *testing.F) {
	addSeeds(f, "testdata/request-*.xml", filepath.Join(sharedFixtures, "*/*/request.xml"))
	f.Add([]byte(`<request protocol="3.0"><app appid="x"><event eventtype="3" eventresult="0" errorcode="-1"/></app></request>`))
	f.Add([]byte("<o:request xmlns:o=\"urn:x\" protocol=\"3.0\" version=\"a&#xD;&#xA;b\r\nc\"><app appid=\"x\" userid=\"u\"><ping/><ping a=\"-1\"/></app></request>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseRequest(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		b, err := req.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed request failed: %v", err)
		}
		again, err := ParseRequest(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-parse failed: %v\ninput: %q\nmarshalled: %s", err, data, b)
		}
		if !reflect.DeepEqual(req, again) {
			t.Fatalf("round trip changed the request\nfirst:  %+v\nsecond: %+v\nmarshalled: %s", req, again, b)
		}
	})
}

// FuzzParseResponse is FuzzParseRequest for responses. The first parse
// keeps only the first <manifest> of an updatecheck, so again the second
// parse is a fixed point.
func FuzzParseResponse(f *testing.F) {
	addSeeds(f, "testdata/response-*.xml", filepath.Join(sharedFixtures, "*/*/response.xml"))
	f.Add([]byte(`<response protocol="3.0"><app appid="x"><updatecheck status="ok"><urls></urls><manifest version="1"/><manifest version="2"/></updatecheck><updatecheck PollInterval="5"/></app></response>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, err := ParseResponse(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		for _, a := range resp.Apps {
			if a.UpdateCheck != nil {
				_ = a.UpdateCheck.Validate()
				_ = a.UpdateCheck.PayloadURLs()
			}
		}
		b, err := resp.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed response failed: %v", err)
		}
		again, err := ParseResponse(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-parse failed: %v\ninput: %q\nmarshalled: %s", err, data, b)
		}
		if !reflect.DeepEqual(resp, again) {
			t.Fatalf("round trip changed the response\nfirst:  %+v\nsecond: %+v\nmarshalled: %s", resp, again, b)
		}
	})
}

// FuzzNormalizeAppID checks that a normalized id is a fixed point.
func FuzzNormalizeAppID(f *testing.F) {
	f.Add("{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}")
	f.Add("stable")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := NormalizeAppID(s)
		if err != nil {
			return
		}
		again, err := NormalizeAppID(id)
		if err != nil || again != id {
			t.Fatalf("NormalizeAppID(%q) = %q, but NormalizeAppID(%q) = %q, %v", s, id, id, again, err)
		}
		if _, err := NormalizeAppID("{" + id + "}"); err != nil {
			t.Fatalf("braced form of %q rejected: %v", id, err)
		}
	})
}
