// Package client is a typed Go client for flotilla's REST API (/api/v1).
//
// Create a client with New and call one method per route; every method takes
// a context first. Request and response bodies are the wire types of package
// github.com/flotilla/flotilla/api/v1.
//
//	c := client.New("http://127.0.0.1:8080", token, nil)
//	st, err := c.GroupStatus(ctx, appID, "production")
//	if client.IsNotFound(err) {
//		// no such group
//	}
//
// A non-2xx response is returned as *APIError carrying the HTTP status and
// the kind and message of the API's error envelope; branch on the kind with
// IsNotFound, IsConflict and friends (never on the message). A server that
// cannot be reached yields a *ConnError naming the URL.
//
// Path parameters (app ids, versions, names, machine ids) are sent as given,
// path-escaped; the server accepts app ids with or without braces.
package client
