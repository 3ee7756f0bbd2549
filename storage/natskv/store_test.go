package natskv_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/internal/embednats"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
	"github.com/wxbridge/wxbridge/storage/storagetest"
)

// The KV store is the bridge's whole state contract: checked by the
// compiler, not at run time.
var _ bridge.Store = (*natskv.Store)(nil)

// srv is one embedded server (R1) for the package's tests; each test has
// a bucket of its own.
var srv *embednats.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "natskv")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv, err = embednats.Start(embednats.Options{StoreDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	srv.Shutdown()
	os.RemoveAll(dir)
	os.Exit(code)
}

var buckets atomic.Int64

func newBucket() string { return fmt.Sprintf("t%d", buckets.Add(1)) }

// connect opens a connection of its own for one store, closed with the test.
func connect(t testing.TB, connect func(...nats.Option) (*nats.Conn, error)) *nats.Conn {
	t.Helper()
	nc, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// open opens a store on bucket; closed with the test.
func open(t testing.TB, nc *nats.Conn, opts natskv.Options) *natskv.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := natskv.Open(ctx, nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	storagetest.Run(t, storagetest.Backend{
		Open: func(t *testing.T, c *storagetest.Clock, hook storage.LedgerHook) storagetest.Store {
			return open(t, connect(t, srv.Connect), natskv.Options{Bucket: newBucket(), Now: c.Now, LedgerHook: hook})
		},
		Shared: sharedOpener(func(t *testing.T) func(...nats.Option) (*nats.Conn, error) { return srv.Connect }, 1),
	})
}

// sharedOpener opens two stores (two bridges) on one bucket, each on a
// connection of its own, with a short lease.
func sharedOpener(dial func(t *testing.T) func(...nats.Option) (*nats.Conn, error), replicas int) storagetest.SharedOpener {
	return func(t *testing.T, c *storagetest.Clock, hook storage.LedgerHook) (storagetest.Store, storagetest.Store, func()) {
		bucket := newBucket()
		opts := natskv.Options{Bucket: bucket, Replicas: replicas, Now: c.Now, LedgerHook: hook, LeaseTTL: 2 * time.Second}
		a := open(t, connect(t, dial(t)), opts)
		b := open(t, connect(t, dial(t)), opts)
		return a, b, a.StopRenewals
	}
}
