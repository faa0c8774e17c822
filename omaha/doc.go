// Package omaha implements the Omaha v3 protocol dialect that CoreOS
// Container Linux and Flatcar update_engine speak, so that flotilla's
// update server, agent and load generator share one definition of the wire
// format.
//
// The dialect differs from Google's Omaha v3 specification in ways that
// matter to a server:
// identity travels in non-standard <app> attributes (machineid, bootid,
// track, oem, alephversion, …), an update check carries an <event> (3.2)
// alongside <updatecheck>, versions are three-part, package metadata lives
// on the postinstall <action>, and every reported errorcode is an
// update_engine exit code with high flag bits OR-ed in.
//
// The package is deliberately small and free of I/O apart from [Client]:
//
//   - [Request] and [Response] are the wire types, with encoding/xml tags
//     naming attributes exactly as update_engine writes and reads them.
//   - [ParseRequest] and [ParseResponse] decode a body and reject documents a
//     server cannot act on with plain-language errors wrapping
//     [ErrMalformed]. They accept everything real clients have been seen to
//     send, including ChromeOS-era update_engine builds.
//   - [Request.Marshal] and [Response.Marshal] produce what update_engine
//     parses, with the XML header.
//   - [DecodeErrorCode] turns a raw errorcode into a name, flags and an
//     operator hint; [NormalizeAppID] and [LegacyTrack] canonicalise the
//     identifiers clients send.
//
// Parsing never panics: both parsers are fuzzed (FuzzParseRequest,
// FuzzParseResponse) and a document that parses re-marshals and re-parses to
// an equal value.
package omaha
