package bench_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/internal/bench"
)

// TestSmoke runs two scenarios at a tiny size against a freshly built
// wxbridge, so that the bench keeps working as the code under it changes.
func TestSmoke(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "wxbridge")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/wxbridge/wxbridge/cmd/wxbridge").CombinedOutput()
	if err != nil {
		t.Fatalf("build wxbridge: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	reports, err := bench.Run(ctx, bench.Config{Binary: bin, Scenarios: []string{"steady", "bridge-kill"},
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
