package embednats_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/internal/embednats"
)

// Three servers keep an R3 stream writable while the node leading it is
// down, and the node comes back on its store and ports.
func TestClusterSurvivesItsLeader(t *testing.T) {
	c, err := embednats.StartCluster(embednats.ClusterOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	leader := waitLeader(t, c, "S", -1)
	c.Stop(leader)
	waitLeader(t, c, "S", leader)
	publish(ctx, t, js, "s.2")
	if err := c.Start(leader); err != nil {
		t.Fatal(err)
	}
	publish(ctx, t, js, "s.3")
	info, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 3 {
		t.Fatalf("%d messages, want 3", n)
	}
	if len(c.URLs()) != 3 {
		t.Fatalf("urls %v", c.URLs())
	}
}

// waitLeader waits for a leader of stream other than not.
func waitLeader(t *testing.T, c *embednats.Cluster, stream string, not int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if l := c.LeaderOf(stream); l >= 0 && l != not {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader of %s", stream)
	return -1
}

// publish retries while the cluster elects a leader.
func publish(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string) {
	t.Helper()
	for {
		_, err := js.Publish(ctx, subject, []byte(subject), jetstream.WithRetryAttempts(0))
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
