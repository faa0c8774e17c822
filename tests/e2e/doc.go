// Package e2e runs the real flotilla binary as separate processes: a server
// on loopback, the CLI against it, and simulated update_engine machines
// speaking Omaha over HTTP. It holds tests only.
package e2e
