package bench

import (
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
	// check adds the scenario's targets to a report.
	check func(cfg Config, r *Report)
}

// faultMix is the WeChat misbehaviour: 10% errcode -1, 5% HTTP
// 500, 2% timeouts, and the token invalidated every 1,000 sends.
var faultMix = wechattest.Faults{SystemErrorRate: 0.10, HTTP500Rate: 0.05, TimeoutRate: 0.02, InvalidateTokenEvery: 1000,
	Paths: []string{wechattest.PathSend}}

func scenarios() []scenario {
	return []scenario{
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
}

// noFaults reports whether f leaves the emulator well-behaved.
func noFaults(f wechattest.Faults) bool {
	return f.Latency <= 0 && f.Jitter <= 0 && f.SystemErrorRate <= 0 && f.HTTP500Rate <= 0 && f.DropRate <= 0 &&
		f.LostReplyRate <= 0 && f.TimeoutRate <= 0 && !f.QuotaExhausted && f.InvalidateTokenEvery <= 0
}
