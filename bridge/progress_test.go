package bridge

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbridge/wxbridge/storage/storagetest"
)

// Progress reports a consumer that delivers nothing new while events wait,
// and clears once events flow again; with nothing waiting it never alarms.
func TestProgressReportsAStalledConsumer(t *testing.T) {
	rig := newPullRig(t, 1000)
	clock := storagetest.NewClock()
	cfg := Config{Conn: rig.nc, StallAfter: time.Minute, Now: clock.Now, Registry: prometheus.NewRegistry()}
	cfg.setDefaults()
	b := &Bridge{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	check := func(wantStalled bool) {
		t.Helper()
		err := b.Progress(ctx)
		if (err != nil) != wantStalled || (err != nil && !strings.Contains(err.Error(), "stalled")) {
			t.Fatalf("at %s: progress %v, want stalled %v", clock.Now().Format(time.TimeOnly), err, wantStalled)
		}
	}
	check(false)
	clock.Advance(time.Hour)
	check(false) // nothing waits: idle is not stuck
	rig.publish(t, 3)
	// The consumer counts new events shortly after the stream stored them.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		info, err := rig.cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer counts %d events waiting, want 3", info.NumPending)
		}
	}
	check(false) // events wait, but the clock of no progress only starts now
	clock.Advance(59 * time.Second)
	check(false)
	clock.Advance(2 * time.Second)
	check(true)
	// A delivery is progress.
	msg, err := rig.cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	_ = msg.Ack()
	check(false)
	clock.Advance(2 * time.Minute)
	check(true)
}
