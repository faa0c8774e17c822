// Package docker runs flotilla in containers on the local Docker engine:
// the binary built statically into a FROM scratch image, one server and
// several agents on a private network, and network partitions made with
// `docker network disconnect`. It holds tests only; they skip when docker
// is not available (or with -short).
package docker
