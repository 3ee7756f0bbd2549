package bench

import (
	"fmt"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// scenario is one way of loading the bridge.
type scenario struct {
	name string
	what string
	// events is the default number of events (Config.Events overrides it,
	// Config.FanoutEvents in fan-out scenarios).
	events int
	// fanout > 0: each event goes to the role held by this many users;
	// otherwise each event names one user, round robin over Config.Users.
	fanout int
	// rate > 0 publishes at this many events per second (Config.Rate
	// overrides it); otherwise as fast as JetStream acknowledges.
	rate int
	// latencyProbe: the scenario measures latency at a steady rate, which
	// Config.Rate overrides.
	latencyProbe bool
	faults       wechattest.Faults
	// baseline runs the minimal consumer on the same load first.
	baseline bool
	// kills SIGKILLs the bridge this many times during the run (one of
	// them by a failpoint right after a WeChat call) and restarts it.
	kills int
	// natsRestarts restarts the NATS server this many times during the run.
	natsRestarts int
	// args are extra `wxbridge serve` flags.
	args []string
	// group names a family of scenarios run together (cluster): Names
	// lists the family once, and --scenario takes its name.
	group string
	// bridges is how many bridge processes share the work (0: one).
	bridges int
	// cluster runs NATS as three nodes joined by routes, each a process of
	// its own so that each one's CPU is measured, and the bridges with the
	// state in a KV bucket replicated on all three (--store nats
	// --replicas 3).
	cluster bool
	// perBridge: events (the default or Config.Events) is per bridge, so
	// that every bridge count is measured for about as long.
	perBridge bool
	// inFlight is the scenario's --max-in-flight when Config.InFlight is
	// not set (0: 64).
	inFlight int
	// check adds the scenario's targets to a report.
	check func(cfg Config, r *Report)
}

// faultMix is the WeChat misbehaviour: 10% errcode -1, 5% HTTP
// 500, 2% timeouts, and the token invalidated every 1,000 sends.
var faultMix = wechattest.Faults{SystemErrorRate: 0.10, HTTP500Rate: 0.05, TimeoutRate: 0.02, InvalidateTokenEvery: 1000,
	Paths: []string{wechattest.PathSend}}

func scenarios() []scenario {
	list := []scenario{
		{name: "steady", what: "as fast as possible, WeChat at 0 ms", events: 20000, baseline: true,
			check: func(cfg Config, r *Report) {
				r.target("sends/s with durable state", ">= 5000", r.SendsPerSec >= 5000, "%.0f", r.SendsPerSec)
				if r.Baseline != nil {
					r.target("bridge / baseline", ">= 0.5", r.Ratio >= 0.5, "%.2f", r.Ratio)
				}
				r.target("peak RSS of the bridge", "<= 200 MiB", r.PeakRSSMiB <= 200, "%.0f MiB", r.PeakRSSMiB)
			}},
		{name: "latency-100ms", what: "as fast as possible, WeChat at 100 ms", events: 4000, baseline: true,
			faults: wechattest.Faults{Latency: 100 * time.Millisecond, Paths: []string{wechattest.PathSend}},
			check: func(cfg Config, r *Report) {
				want := 0.8 * float64(cfg.InFlight) / 0.1
				r.target("sends/s at 100 ms", fmtf(">= %.0f (80%% of %d in flight / 0.1 s)", want, cfg.InFlight), r.SendsPerSec >= want, "%.0f", r.SendsPerSec)
			}},
		{name: "paced-1k", what: "1,000 events/s paced, WeChat at 0 ms", events: 10000, rate: 1000, latencyProbe: true, baseline: true,
			check: func(cfg Config, r *Report) {
				r.target("p99 event → WeChat request", "<= 20 ms", r.ToWeChat.P99 <= 20, "%.1f ms", r.ToWeChat.P99)
			}},
		{name: "fanout-1000", what: "events to a role of 1,000 users", events: 5, fanout: 1000},
		{name: "faults", what: "WeChat: 10% -1, 5% HTTP 500, 2% timeouts, token invalidated every 1,000 sends", events: 5000,
			faults: faultMix, args: []string{"--wechat-timeout", "2s", "--ack-wait", "10s"}},
		{name: "bridge-kill", what: "2,000 events/s; the bridge SIGKILLed 4 times and restarted", events: 20000, rate: 2000, kills: 4,
			args: []string{"--ack-wait", "3s"}},
		{name: "nats-restart", what: "2,000 events/s; the NATS server restarted (SIGTERM, then SIGKILL)", events: 20000, rate: 2000, natsRestarts: 2,
			args: []string{"--ack-wait", "3s"}},
	}
	return append(list, clusterScenarios()...)
}

// clusterGroup is the family of cluster scenarios.
const clusterGroup = "cluster"

// groups says what each family of scenarios does, for Names.
var groups = map[string]string{
	clusterGroup: "1, 2 and 3 bridges (--store nats) on a 3-node NATS cluster, WeChat at 100 and 0 ms (one: cluster-2b-100ms)",
}

// clusterScenarios are the cluster benchmark: 1, 2 and 3 bridges
// sharing one durable consumer and the state in JetStream KV (R3) on a
// three-node cluster. At 100 ms the work is bound by waiting for WeChat
// (8 events in flight a bridge keep three bridges well inside two cores),
// so each bridge adds its in-flight ÷ latency; at 0 ms it is bound by CPU,
// and what matters is the CPU a send costs the bridges and the NATS
// servers. Events are per bridge: each bridge count runs for about as long.
func clusterScenarios() []scenario {
	var out []scenario
	for _, lat := range []time.Duration{100 * time.Millisecond, 0} {
		for n := 1; n <= 3; n++ {
			sc := scenario{name: fmt.Sprintf("cluster-%db-%dms", n, lat.Milliseconds()), group: clusterGroup,
				what:   fmt.Sprintf("%d %s, --store nats on a 3-node NATS cluster, WeChat at %d ms", n, plural(n, "bridge"), lat.Milliseconds()),
				events: 2500, bridges: n, cluster: true, perBridge: true, args: []string{"--ack-wait", "30s"}}
			if lat > 0 {
				sc.events, sc.inFlight = 600, 8
				sc.faults = wechattest.Faults{Latency: lat, Paths: []string{wechattest.PathSend}}
				// Bound by waiting, the bridges turn over their events
				// every latency plus what the rest of an event takes.
				sc.check = func(cfg Config, r *Report) {
					slots := float64(r.Bridges * cfg.InFlight)
					if r.SendsPerSec <= 0 {
						return
					}
					r.note("%.0f%% of %d×%d in flight ÷ %s: an event took %.0f ms, WeChat's %s and %.0f ms for the rest (state, ack, queueing)",
						100*r.SendsPerSec*lat.Seconds()/slots, r.Bridges, cfg.InFlight, lat, 1000*slots/r.SendsPerSec, lat,
						1000*slots/r.SendsPerSec-ms(lat))
				}
			}
			out = append(out, sc)
		}
	}
	return out
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// compareBridges sets each cluster report's Scale, its sends/s over the
// one-bridge report's at the same WeChat latency, and checks the issue's
// target: at 100 ms three bridges reach 2.5 times one.
func compareBridges(reports []*Report) {
	one := map[float64]*Report{}
	for _, r := range reports {
		if r.NATSNodes > 1 && r.Bridges == 1 && r.Error == "" && r.SendsPerSec > 0 {
			one[r.WeChatLatencyMS] = r
		}
	}
	for _, r := range reports {
		base := one[r.WeChatLatencyMS]
		if r.NATSNodes <= 1 || r.Error != "" || base == nil {
			continue
		}
		r.Scale = r.SendsPerSec / base.SendsPerSec
		if r.Bridges == 3 && r.WeChatLatencyMS == 100 {
			r.target("3 bridges / 1 bridge at 100 ms", ">= 2.5", r.Scale >= 2.5, "%.2f", r.Scale)
		}
	}
}

// noFaults reports whether f leaves the emulator well-behaved.
func noFaults(f wechattest.Faults) bool {
	return f.Latency <= 0 && f.Jitter <= 0 && f.SystemErrorRate <= 0 && f.HTTP500Rate <= 0 && f.DropRate <= 0 &&
		f.LostReplyRate <= 0 && f.TimeoutRate <= 0 && !f.QuotaExhausted && f.InvalidateTokenEvery <= 0
}
