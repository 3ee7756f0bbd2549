package natskv_test

import (
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wxbridge/wxbridge/internal/embednats"
	"github.com/wxbridge/wxbridge/storage/natskv"
	"github.com/wxbridge/wxbridge/storage/storagetest"
)

// The cases of two bridges on one state, on an R3 bucket of a three-node
// cluster, each bridge connected to another node: reads may come from a
// replica a write has not reached yet, and writes go through the leader.
func TestSharedOnCluster(t *testing.T) {
	c, err := embednats.StartCluster(embednats.ClusterOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	urls := c.URLs()
	var next atomic.Int64
	dial := func(*testing.T) func(...nats.Option) (*nats.Conn, error) {
		url := urls[int(next.Add(1))%len(urls)]
		return func(opts ...nats.Option) (*nats.Conn, error) { return nats.Connect(url, opts...) }
	}
	storagetest.RunShared(t, sharedOpener(dial, 3))
	t.Run("LostAcknowledgement", func(t *testing.T) {
		testLostAck(t, open(t, connect(t, dial(t)), natskv.Options{Bucket: newBucket(), Replicas: 3, LedgerHook: subsHook}))
	})
	t.Run("ThreeRoundTripsPerRecipient", func(t *testing.T) {
		testRoundTrips(t, open(t, connect(t, dial(t)), natskv.Options{Bucket: newBucket(), Replicas: 3}))
	})
}
