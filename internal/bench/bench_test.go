package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/internal/bench"
)

// binary is a wxbridge built from this tree for the tests, by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wxbridge-bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "wxbridge")
	out, err := exec.Command("go", "build", "-o", binary, "github.com/wxbridge/wxbridge/cmd/wxbridge").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build wxbridge: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestSmoke runs two scenarios at a tiny size against a freshly built
// wxbridge, so that the bench keeps working as the code under it changes.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	reports, err := bench.Run(ctx, bench.Config{Binary: binary, Scenarios: []string{"steady", "bridge-kill"},
		Events: 300, Users: 20, Kills: 1, Timeout: time.Minute, Seed: 1, Progress: &progress})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, progress.String())
	}
	var table bytes.Buffer
	bench.PrintTable(&table, reports)
	t.Log("\n" + table.String())
	for _, r := range reports {
		if r.Incomplete || r.Lost != 0 || r.Duplicates != 0 || r.WeChatSends < r.Recipients {
			t.Errorf("%s: lost %d, duplicates %d, %d sends for %d recipients", r.Scenario, r.Lost, r.Duplicates, r.WeChatSends, r.Recipients)
		}
	}
	steady := reports[0]
	if steady.SendsPerSec <= 0 {
		t.Errorf("steady: %.0f sends/s", steady.SendsPerSec)
	}
	// The baseline promises one post per event, not one send: with 64
	// workers and 20 users, two posts to one user may overlap and WeChat
	// refuses the second (43108), which the baseline does not retry.
	// Anything else failing would be a broken baseline.
	if b := steady.Baseline; b == nil {
		t.Error("steady: no baseline")
	} else {
		refused := b.FailedBy["errcode 43108"]
		if b.Sends+b.Failed != 300 || b.Failed != refused {
			t.Errorf("steady baseline: %d sends + %d failed (%v) for 300 events; only 43108 may fail", b.Sends, b.Failed, b.FailedBy)
		}
	}
	if !strings.Contains(table.String(), "bridge-kill") {
		t.Errorf("table lacks a scenario:\n%s", table.String())
	}
}

// TestClusterSmoke runs the cluster scenarios with one and two bridges at
// a tiny size: three NATS processes and the bridges on --store nats, each
// measured on its own, and two bridges compared with one.
func TestClusterSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	reports, err := bench.Run(ctx, bench.Config{Binary: binary, Scenarios: []string{"cluster-1b-0ms", "cluster-2b-0ms"},
		Events: 150, Users: 50, Timeout: time.Minute, Seed: 1, Progress: &progress})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, progress.String())
	}
	var table bytes.Buffer
	bench.PrintTable(&table, reports)
	t.Log("\n" + table.String())
	if len(reports) != 2 {
		t.Fatalf("%d reports, want 2", len(reports))
	}
	for i, r := range reports {
		bridges := i + 1
		// Events are per bridge: two bridges get twice the load.
		if r.Events != 150*bridges || r.Recipients != r.Events {
			t.Errorf("%s: %d events, %d recipients; want %d of each", r.Scenario, r.Events, r.Recipients, 150*bridges)
		}
		if r.Incomplete || r.Lost != 0 || r.Duplicates != 0 || r.WeChatSends < r.Recipients {
			t.Errorf("%s: lost %d, duplicates %d, %d sends for %d recipients", r.Scenario, r.Lost, r.Duplicates, r.WeChatSends, r.Recipients)
		}
		if r.Bridges != bridges || r.NATSNodes != 3 || len(r.NATSCPUByNode) != 3 {
			t.Errorf("%s: %d bridges, %d NATS nodes, %d node CPU figures; want %d, 3, 3", r.Scenario, r.Bridges, r.NATSNodes, len(r.NATSCPUByNode), bridges)
		}
		// The NATS servers are measured apart from the bridges: both did
		// work for the sends.
		if r.CPUSeconds <= 0 || r.NATSCPUSeconds <= 0 {
			t.Errorf("%s: bridge CPU %.2f s, NATS CPU %.2f s; both must be measured", r.Scenario, r.CPUSeconds, r.NATSCPUSeconds)
		}
		if r.SendsPerSec <= 0 || r.Scale <= 0 {
			t.Errorf("%s: %.0f sends/s, %.2f × one bridge", r.Scenario, r.SendsPerSec, r.Scale)
		}
	}
	if got := reports[1].CPUByBridge; len(got) != 2 {
		t.Errorf("two bridges: CPU of %d bridges reported (%v)", len(got), got)
	}
	if reports[0].Scale != 1 {
		t.Errorf("one bridge: %.2f × itself", reports[0].Scale)
	}
	for _, want := range []string{"× 1 bridge", "NATS µs/send", "cluster-2b-0ms"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}
