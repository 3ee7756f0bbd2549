package bridge

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbridge/wxbridge/internal/embednats"
)

// Three bridges starting at the same moment on a fresh three-node cluster
// all provision their streams and consumers: the settling cluster leaves
// some of the racing requests unanswered (without the retries every run
// timed out), and each is tried again.
func TestProvisionConcurrentlyOnAFreshCluster(t *testing.T) {
	c, err := embednats.StartCluster(embednats.ClusterOptions{N: 3, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	took := make([]time.Duration, 3)
	for i, url := range c.URLs() {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		cfg := Config{Conn: nc, Replicas: 3, Registry: prometheus.NewRegistry()}
		cfg.setDefaults()
		b := &Bridge{cfg: cfg}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[i] = b.provision(context.Background())
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("bridge %d: %v", i, err)
		}
	}
	t.Logf("provisioned in %v", took)
}
