package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/wxbridge/wxbridge/internal/bench"
)

const benchSynopsis = `bench [--scenario NAME[,NAME...]|all] [--json FILE] [--profile DIR] [flags]

Measures wxbridge the way its users load it. Each scenario starts a NATS
server and the bridge as separate processes (this binary: nats-server and
serve), runs the WeChat emulator in this process, binds users and grants
them credits through the bridge's NATS commands, publishes events and waits
for every result. It prints events/s, sends/s, latency from publish to the
WeChat request and to the result, the bridge's peak RSS and CPU, and the
lost, duplicate and in-doubt sends found by checking the emulator's record.

The cluster scenarios run 1, 2 and 3 bridges (--store nats --replicas 3)
on three NATS servers joined by routes, each a process of its own, and add
a table of what more bridges bought (sends/s over one bridge's at the same
WeChat latency) and the CPU a send cost the bridges and the NATS servers.

Scenarios:
`

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var list strings.Builder
	for _, s := range bench.Names() {
		fmt.Fprintf(&list, "  %-14s %s\n", s[0], s[1])
	}
	f := newFlags("bench", stderr, benchSynopsis+list.String())
	scenario := f.str("scenario", "", "all", "scenarios to run, comma-separated, or all")
	jsonPath := f.str("json", "", "", "also write the reports as JSON to this file")
	profile := f.str("profile", "", "", "write a CPU profile of the bridge per scenario into this directory")
	bridgeEnv := f.str("bridge-env", "", "", "comma-separated KEY=VALUE added to the bridge's environment (e.g. GOGC=400)")
	cfg := bench.Config{}
	f.IntVar(&cfg.Events, "events", 0, "events per scenario but fanout-1000, per bridge in cluster (0: each scenario's default)")
	f.IntVar(&cfg.FanoutEvents, "fanout-events", 0, "events of fanout-1000, each to the whole role (0: 5)")
	f.IntVar(&cfg.Users, "users", 1000, "bound users the events go round")
	f.IntVar(&cfg.Fanout, "fanout", 0, "users in the role of the fan-out scenario (0: 1000)")
	f.IntVar(&cfg.Rate, "rate", 0, "events/s of paced-1k (0: 1000)")
	f.IntVar(&cfg.InFlight, "max-in-flight", 0, "the bridge's --max-in-flight, and the baseline's concurrency (0: 64, 8 in the cluster scenarios at 100 ms)")
	f.IntVar(&cfg.MaxSends, "max-sends", 256, "the bridge's --max-sends")
	f.IntVar(&cfg.Kills, "kills", 0, "SIGKILLs of the bridge in bridge-kill (0: 4)")
	f.IntVar(&cfg.NATSRestarts, "nats-restarts", 0, "NATS restarts in nats-restart (0: 2)")
	f.IntVar(&cfg.ProfileSeconds, "profile-seconds", 5, "length of each CPU profile")
	f.DurationVar(&cfg.Timeout, "timeout", 0, "how long a scenario waits for its results (0: 3m)")
	f.Int64Var(&cfg.Seed, "seed", 0, "seed of the chaos schedule and the faults (0: random)")
	f.BoolVar(&cfg.KeepDir, "keep", false, "keep each scenario's directory (process logs, data)")
	if pos, err := f.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	for _, s := range strings.Split(*scenario, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Scenarios = append(cfg.Scenarios, s)
		}
	}
	cfg.ProfileDir = *profile
	for _, kv := range strings.Split(*bridgeEnv, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			if !strings.Contains(kv, "=") {
				return usagef("--bridge-env wants KEY=VALUE, got %q", kv)
			}
			cfg.BridgeEnv = append(cfg.BridgeEnv, kv)
		}
	}
	cfg.Progress = stderr
	reports, err := bench.Run(ctx, cfg)
	if errors.Is(err, bench.ErrUnknownScenario) {
		return &usageError{err}
	}
	if len(reports) > 0 {
		fmt.Fprintln(stdout)
		bench.PrintTable(stdout, reports)
		if *jsonPath != "" {
			if werr := bench.WriteJSON(*jsonPath, reports); werr != nil {
				return errors.Join(err, werr)
			}
		}
	}
	return err
}
