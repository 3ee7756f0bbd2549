package embednats

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// ForTest starts a server with its store in a temporary directory of tb,
// and a connection to it; both end with the test.
func ForTest(tb testing.TB) (*Server, *nats.Conn) {
	tb.Helper()
	ns, err := Start(Options{StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ns.Shutdown)
	nc, err := ns.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return ns, nc
}
