package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// Config configures a run. Zero fields take the defaults in setDefaults.
type Config struct {
	// Binary is the wxbridge executable the processes are started from.
	// Default: this process's own executable.
	Binary string
	// Scenarios to run, by name; empty or "all" runs every one.
	Scenarios []string
	// Events overrides the number of events of every scenario but the
	// fan-out ones (in the cluster scenarios, events per bridge);
	// FanoutEvents overrides theirs.
	Events, FanoutEvents int
	// Users is how many bound users the named-user events go round.
	// Default 1,000.
	Users int
	// Fanout overrides the size of the role in fan-out scenarios.
	Fanout int
	// Rate overrides the publishing rate of the paced latency scenario
	// (events/s).
	Rate int
	// InFlight is the bridge's --max-in-flight and the baseline's
	// concurrency. Default 64 (the serve default), but 8 in the cluster
	// scenarios at 100 ms: they are about work bound by waiting, and three
	// bridges of 64 would be bound by the CPU of a small machine instead.
	InFlight int
	// MaxSends is the bridge's --max-sends. Default 256.
	MaxSends int
	// Kills and NATSRestarts override the chaos scenarios' counts.
	Kills, NATSRestarts int
	// Timeout bounds how long a scenario waits for its results.
	// Default 3 minutes.
	Timeout time.Duration
	// ProfileDir, if set, receives a CPU profile of the bridge for each
	// scenario without chaos (<scenario>.cpu.pprof), ProfileSeconds long
	// (default 5), taken from the first publish on, and its allocations
	// over its whole life (<scenario>.allocs.pprof).
	ProfileDir     string
	ProfileSeconds int
	// BridgeEnv is added to the bridge's environment (KEY=VALUE), for
	// experiments such as GOGC=400 or WXBRIDGE_LOG_LEVEL=warn.
	BridgeEnv []string
	// KeepDir keeps each scenario's directory (process logs, data).
	KeepDir bool
	// Seed makes the chaos schedule and faults repeatable; 0 is random.
	Seed int64
	// Progress receives one line per step. Default: discard.
	Progress io.Writer
}

func (c *Config) setDefaults() error {
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the wxbridge executable: %w", err)
		}
		c.Binary = exe
	}
	if c.Users <= 0 {
		c.Users = 1000
	}
	if c.MaxSends <= 0 {
		c.MaxSends = 256
	}
	if c.Timeout <= 0 {
		c.Timeout = 3 * time.Minute
	}
	if c.ProfileSeconds <= 0 {
		c.ProfileSeconds = 5
	}
	if c.Seed == 0 {
		c.Seed = rand.Int64()
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// Names lists the scenarios, in the order "all" runs them, with what each
// does.
func Names() [][2]string {
	var out [][2]string
	listed := map[string]bool{}
	for _, s := range scenarios() {
		switch {
		case s.group == "":
			out = append(out, [2]string{s.name, s.what})
		case !listed[s.group]:
			listed[s.group] = true
			out = append(out, [2]string{s.group, groups[s.group]})
		}
	}
	return out
}

// ErrUnknownScenario is returned for a scenario name Run does not know.
var ErrUnknownScenario = errors.New("unknown scenario")

// Run runs the chosen scenarios one after the other and returns their
// reports. A scenario that fails to set up gets a report with Error and
// the run goes on; the error returned joins those failures.
func Run(ctx context.Context, cfg Config) ([]*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	var chosen []scenario
	all := scenarios()
	if len(cfg.Scenarios) == 0 || slices.Contains(cfg.Scenarios, "all") {
		chosen = all
	} else {
		for _, name := range cfg.Scenarios {
			n := len(chosen)
			for _, s := range all {
				if s.name == name || s.group == name {
					chosen = append(chosen, s)
				}
			}
			if len(chosen) == n {
				return nil, fmt.Errorf("%w %q", ErrUnknownScenario, name)
			}
		}
	}
	var reports []*Report
	var errs []error
	for i, sc := range chosen {
		r := &run{cfg: cfg, sc: sc, rnd: rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i)))}
		r.cfg.InFlight = cmp.Or(cfg.InFlight, sc.inFlight, 64)
		rep, err := r.run(ctx)
		if err != nil {
			rep.Error = err.Error()
			errs = append(errs, fmt.Errorf("scenario %s: %w", sc.name, err))
			if ctx.Err() != nil {
				reports = append(reports, rep)
				break
			}
		}
		reports = append(reports, rep)
	}
	compareBridges(reports)
	return reports, errors.Join(errs...)
}

// run is one scenario being run.
type run struct {
	cfg Config
	sc  scenario
	rnd *rand.Rand
	rep *Report
	dir string

	// nats is the server, or the nodes of the cluster; bridges the bridge
	// processes. Chaos and profiles act on the first of each.
	nats    []*natsServer
	bridges []*bridgeProc
	nc      *nats.Conn
}

func (r *run) progress(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, "[%s] %s\n", r.sc.name, fmt.Sprintf(format, args...))
}

// plan is the load: which event goes where, who expects what.
type plan struct {
	events   int
	users    int
	team     int
	rate     int
	subject  func(i int) string
	payload  func(i int) []byte
	expected map[pairKey]bool
	credits  []int // per user
}

func (r *run) plan() plan {
	p := plan{events: r.sc.events, users: r.cfg.Users, rate: r.sc.rate}
	switch {
	case r.sc.fanout == 0 && r.cfg.Events > 0:
		p.events = r.cfg.Events
	case r.sc.fanout > 0 && r.cfg.FanoutEvents > 0:
		p.events = r.cfg.FanoutEvents
	}
	if r.sc.perBridge {
		p.events *= r.bridgeCount()
	}
	if r.sc.latencyProbe && r.cfg.Rate > 0 {
		p.rate = r.cfg.Rate
	}
	text := func(i int) string { return "bench notice " + strconv.Itoa(i) }
	if r.sc.fanout > 0 {
		p.team = r.sc.fanout
		if r.cfg.Fanout > 0 {
			p.team = r.cfg.Fanout
		}
		p.users = max(p.users, p.team)
		p.subject = func(int) string { return "events.bench.team" }
		p.payload = func(i int) []byte {
			b, _ := json.Marshal(map[string]string{"team": "1", "text": text(i)})
			return b
		}
	} else {
		p.subject = func(int) string { return "events.bench.notice" }
		p.payload = func(i int) []byte {
			b, _ := json.Marshal(map[string]string{"user": userID(i % p.users), "text": text(i)})
			return b
		}
	}
	p.expected = map[pairKey]bool{}
	p.credits = make([]int, p.users)
	for i := range p.events {
		if p.team > 0 {
			for u := range p.team {
				p.expected[pairKey{eventID(i), userID(u)}] = true
				p.credits[u]++
			}
		} else {
			p.expected[pairKey{eventID(i), userID(i % p.users)}] = true
			p.credits[i%p.users]++
		}
	}
	for u := range p.credits {
		if p.credits[u] > 0 {
			p.credits[u] += 2 // slack: a credit refunded late is not a lost send
		}
	}
	return p
}

func (r *run) run(ctx context.Context) (_ *Report, err error) {
	r.rep = &Report{Scenario: r.sc.name, What: r.sc.what, Outcomes: map[string]int{}}
	setupStart := time.Now()
	if r.dir, err = os.MkdirTemp("", "wxbridge-bench-"+r.sc.name+"-"); err != nil {
		return r.rep, err
	}
	defer func() {
		if r.cfg.KeepDir || (err != nil && ctx.Err() == nil) {
			r.rep.note("logs and data kept in %s", r.dir)
			return
		}
		_ = os.RemoveAll(r.dir)
	}()
	p := r.plan()
	r.rep.Events, r.rep.Recipients, r.rep.PublishRate = p.events, len(p.expected), p.rate
	r.rep.Bridges, r.rep.WeChatLatencyMS = r.bridgeCount(), ms(r.sc.faults.Latency)

	defer r.stopNATS() // the nodes that started, if one failed to
	if err := r.startNATS(ctx); err != nil {
		return r.rep, err
	}
	r.rep.NATSNodes = len(r.nats)
	r.nc, err = nats.Connect(r.natsURL(), nats.Name("wxbridge-bench"), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(64<<20))
	if err != nil {
		return r.rep, fmt.Errorf("connect to NATS: %w", err)
	}
	defer r.nc.Close()
	if err := r.createStreams(ctx); err != nil {
		return r.rep, err
	}

	if r.sc.baseline {
		baselineStart := time.Now()
		if err := r.runBaseline(ctx, p); err != nil {
			return r.rep, fmt.Errorf("baseline: %w", err)
		}
		setupStart = setupStart.Add(time.Since(baselineStart)) // setup is what the bridge needs
	}

	wx, err := startWeChat()
	if err != nil {
		return r.rep, err
	}
	defer wx.close()
	profile := r.cfg.ProfileDir != "" && r.sc.kills == 0 && r.sc.natsRestarts == 0
	defer r.stopBridges()
	defer func() {
		for _, b := range r.bridges {
			if b.cur != nil {
				b.cur.kill() // on any early return; a no-op after stop
			}
		}
	}()
	if err := r.startBridges(ctx, wx, profile); err != nil {
		return r.rep, err
	}

	r.progress("binding %d users, %d in the role, granting %d credits", p.users, p.team, sum(p.credits))
	if err := seed(ctx, r.nc, p.users, p.team, func(i int) int { return p.credits[i] }); err != nil {
		return r.rep, fmt.Errorf("seed: %w", err)
	}
	r.rep.SetupSeconds = time.Since(setupStart).Seconds()
	if f := r.sc.faults; !noFaults(f) {
		f.Seed = r.cfg.Seed
		wx.emu.SetFaults(f)
	}

	col, err := startCollector(ctx, r.nc, p.expected)
	if err != nil {
		return r.rep, err
	}
	defer col.stop()
	pub, err := newPublisher(r.nc, p.events, p.subject, p.payload)
	if err != nil {
		return r.rep, err
	}
	for _, b := range r.bridges {
		b.beginMeasure()
	}
	natsStart, benchStart := r.natsCPUs(), selfCPU()

	var bg sync.WaitGroup
	defer bg.Wait()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	if profile {
		if err := os.MkdirAll(r.cfg.ProfileDir, 0o755); err != nil {
			return r.rep, err
		}
		for _, b := range r.bridges {
			bg.Add(1)
			go func() {
				defer bg.Done()
				path := filepath.Join(r.cfg.ProfileDir, r.profileName(b, "cpu"))
				if err := b.profile(ctx, r.cfg.ProfileSeconds, path); err != nil {
					r.progress("profile of %s: %v", b.name, err)
				} else {
					r.progress("CPU profile in %s", path)
				}
			}()
		}
	}
	pubErr := make(chan error, 1)
	bg.Add(1)
	go func() {
		defer bg.Done()
		pubErr <- pub.run(runCtx, p.rate)
	}()
	// chaosErr holds the chaos goroutine's failure, if any; it is read
	// once by wait, or after the goroutine ended.
	chaosErr := make(chan error, 1)
	var chaosWG sync.WaitGroup
	chaosWG.Add(1)
	go func() {
		defer chaosWG.Done()
		if err := r.chaos(runCtx, col); err != nil {
			chaosErr <- err
		}
	}()
	r.progress("publishing %d events (%s)", p.events, rateText(p.rate))

	err = r.wait(ctx, col, pub, pubErr, chaosErr)
	stopRun()
	chaosWG.Wait()
	select {
	case e := <-chaosErr:
		err = cmp.Or(err, e)
	default:
	}
	if ctx.Err() != nil {
		return r.rep, ctx.Err()
	}
	// Late duplicates (a request WeChat held through a timeout) land now.
	time.Sleep(500 * time.Millisecond)
	if profile {
		// Allocations since each bridge started (setup included).
		for _, b := range r.bridges {
			path := filepath.Join(r.cfg.ProfileDir, r.profileName(b, "allocs"))
			if err := b.fetchProfile(ctx, "allocs", path); err != nil {
				r.progress("allocs profile of %s: %v", b.name, err)
			}
		}
	}
	for i, c := range r.natsCPUs() {
		used := max(0, c-natsStart[i]).Seconds()
		r.rep.NATSCPUSeconds += used
		if len(r.nats) > 1 {
			r.rep.NATSCPUByNode = append(r.rep.NATSCPUByNode, used)
		}
	}
	r.rep.BenchCPUSeconds = (selfCPU() - benchStart).Seconds()
	for _, b := range r.bridges {
		b.endMeasure()
	}
	r.stopBridges()
	for _, b := range r.bridges {
		r.rep.PeakRSSMiB = max(r.rep.PeakRSSMiB, float64(b.peak)/(1<<20))
		r.rep.CPUSeconds += b.cpu.Seconds()
		if len(r.bridges) > 1 {
			r.rep.CPUByBridge = append(r.rep.CPUByBridge, b.cpu.Seconds())
		}
	}
	r.analyse(p, wx, pub, col)
	if err != nil && !errors.Is(err, errIncomplete) {
		return r.rep, err
	}
	if r.sc.check != nil {
		r.sc.check(r.cfg, r.rep)
	}
	r.rep.target("lost sends", "0", r.rep.Lost == 0, "%d", r.rep.Lost)
	r.rep.target("duplicate sends not in doubt", "0", r.rep.Duplicates == 0, "%d", r.rep.Duplicates)
	return r.rep, nil
}

// natsCPUs is the CPU each NATS server used so far (its current
// incarnation; restarts make the figure an underestimate).
func (r *run) natsCPUs() []time.Duration {
	out := make([]time.Duration, len(r.nats))
	for i, n := range r.nats {
		if u, err := readUsage(n.p.pid()); err == nil {
			out[i] = u.cpu
		}
	}
	return out
}

// natsCPU is the CPU the NATS servers used so far, together.
func (r *run) natsCPU() time.Duration {
	var total time.Duration
	for _, c := range r.natsCPUs() {
		total += c
	}
	return total
}

// bridgeCount is how many bridges the scenario runs.
func (r *run) bridgeCount() int { return max(1, r.sc.bridges) }

// natsURL is the URL clients are given: every node of a cluster.
func (r *run) natsURL() string {
	urls := make([]string, len(r.nats))
	for i, n := range r.nats {
		urls[i] = n.url()
	}
	return strings.Join(urls, ",")
}

// startNATS starts the NATS server, or the three nodes of a cluster, each
// as a process of its own.
func (r *run) startNATS(ctx context.Context) error {
	if !r.sc.cluster {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		r.nats = []*natsServer{{bin: r.cfg.Binary, dir: r.dir, addr: addr}}
		r.progress("starting NATS on %s", addr)
		return r.nats[0].start(ctx)
	}
	const nodes = 3
	addrs, err := freeAddrs(2 * nodes)
	if err != nil {
		return err
	}
	for i := range nodes {
		var routes []string
		for j := range nodes {
			if j != i {
				routes = append(routes, "nats://"+addrs[nodes+j])
			}
		}
		r.nats = append(r.nats, &natsServer{bin: r.cfg.Binary, dir: r.dir, addr: addrs[i], name: fmt.Sprintf("n%d", i),
			clusterAddr: addrs[nodes+i], routes: routes})
	}
	r.progress("starting a NATS cluster of %d nodes on %s", nodes, strings.Join(addrs[:nodes], ", "))
	for _, n := range r.nats {
		if err := n.start(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) stopNATS() {
	var wg sync.WaitGroup
	for _, n := range r.nats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.stop()
		}()
	}
	wg.Wait()
}

// startBridges starts the scenario's bridges one after the other (the
// first creates the streams, the consumer and the state's bucket).
func (r *run) startBridges(ctx context.Context, wx *fakeWeChat, profile bool) error {
	rulesPath := filepath.Join(r.dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rulesYAML()), 0o600); err != nil {
		return err
	}
	args := []string{"--rules", rulesPath, "--nats", r.natsURL(), "--wechat-api", wx.url,
		"--max-in-flight", strconv.Itoa(r.cfg.InFlight), "--max-sends", strconv.Itoa(r.cfg.MaxSends),
		"--shutdown-grace", "5s"}
	if r.sc.cluster {
		args = append(args, "--store", "nats", "--replicas", strconv.Itoa(len(r.nats)))
	}
	args = append(args, r.sc.args...)
	env := append([]string(nil), r.cfg.BridgeEnv...)
	if profile {
		env = append(env, "WXBRIDGE_PPROF=1")
	}
	listens, err := freeAddrs(r.bridgeCount())
	if err != nil {
		return err
	}
	for i, listen := range listens {
		name := "bridge"
		if i > 0 {
			name = fmt.Sprintf("bridge%d", i+1)
		}
		b := &bridgeProc{bin: r.cfg.Binary, dir: r.dir, listen: listen, name: name, args: args, env: env}
		r.bridges = append(r.bridges, b)
		r.progress("starting %s on %s", name, listen)
		if err := b.start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// stopBridges stops every bridge at once (SIGTERM, then SIGKILL).
func (r *run) stopBridges() {
	var wg sync.WaitGroup
	for _, b := range r.bridges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.stop()
		}()
	}
	wg.Wait()
}

// profileName is the file a profile of b goes to: <scenario>.cpu.pprof
// for the first bridge, <scenario>.bridge2.cpu.pprof for the second.
func (r *run) profileName(b *bridgeProc, kind string) string {
	if b.name == "bridge" {
		return r.sc.name + "." + kind + ".pprof"
	}
	return r.sc.name + "." + b.name + "." + kind + ".pprof"
}

// selfCPU is the CPU the bench process used so far: the emulator, the
// publisher and the results reader.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func rateText(rate int) string {
	if rate > 0 {
		return fmt.Sprintf("paced at %d/s", rate)
	}
	return "as fast as JetStream takes them"
}

// wait waits until every recipient has an outcome, the time limit passes
// or something fails, printing progress every few seconds.
func (r *run) wait(ctx context.Context, col *collector, pub *publisher, pubErr, chaosErr <-chan error) error {
	limit := time.NewTimer(r.cfg.Timeout)
	defer limit.Stop()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-col.all:
			r.progress("all %d recipients have an outcome", len(col.expected))
			return nil
		case err := <-pubErr:
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			pubErr = nil
		case err := <-chaosErr:
			return err
		case <-tick.C:
			r.progress("published %d/%d, outcomes %d/%d", pub.done.Load(), len(pub.at), col.progress(), len(col.expected))
		case <-limit.C:
			r.rep.Incomplete = true
			r.rep.note("gave up after %s with %d of %d outcomes", r.cfg.Timeout, col.progress(), len(col.expected))
			return errIncomplete
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// chaos kills the bridge or restarts NATS while the run goes on.
func (r *run) chaos(ctx context.Context, col *collector) error {
	kills, restarts := r.sc.kills, r.sc.natsRestarts
	if kills > 0 && r.cfg.Kills > 0 {
		kills = r.cfg.Kills
	}
	if restarts > 0 && r.cfg.NATSRestarts > 0 {
		restarts = r.cfg.NATSRestarts
	}
	pause := func(lo, spread time.Duration) bool {
		select {
		case <-time.After(lo + time.Duration(r.rnd.Int64N(int64(spread)))):
			return true
		case <-col.all:
		case <-ctx.Done():
		}
		return false
	}
	bridge := r.bridges[0]
	for k := 0; k < kills; k++ {
		if !pause(500*time.Millisecond, 1500*time.Millisecond) {
			return nil
		}
		r.progress("SIGKILL the bridge (%d of %d)", k+1, kills)
		bridge.kill()
		r.rep.Kills++
		var env []string
		if k == 0 && kills > 1 {
			// The next incarnation kills itself right after a WeChat call
			// returns, before the outcome is recorded: the worst moment.
			n := 100 + r.rnd.IntN(900)
			env = append(env, fmt.Sprintf("WXBRIDGE_FAILPOINTS=after-send=kill@%d", n))
			r.rep.note("kill %d was a failpoint: SIGKILL right after WeChat call %d of an incarnation, before its record", k+2, n)
		}
		if err := bridge.start(ctx, env...); err != nil {
			return fmt.Errorf("restart the bridge: %w", err)
		}
		if len(env) > 0 {
			select {
			case <-bridge.cur.done:
				r.progress("the bridge killed itself at the failpoint (%d of %d)", k+2, kills)
				r.rep.Kills++
				bridge.account()
				if err := bridge.start(ctx); err != nil {
					return fmt.Errorf("restart the bridge: %w", err)
				}
			case <-col.all:
				return nil
			case <-ctx.Done():
				return nil
			}
			k++
		}
	}
	for k := range restarts {
		if !pause(time.Second, time.Second) {
			return nil
		}
		hard := k%2 == 1
		how := "SIGTERM"
		if hard {
			how = "SIGKILL"
		}
		r.progress("restarting NATS with %s (%d of %d)", how, k+1, restarts)
		if err := r.nats[0].restart(ctx, hard, 500*time.Millisecond); err != nil {
			return fmt.Errorf("restart NATS: %w", err)
		}
		r.rep.NATSRestarts++
	}
	return nil
}

// createStreams creates the events stream the bridge consumes (as a
// deployment would have it, replicated on every node of a cluster) and the
// baseline's twin of it. A cluster that has only just started may still be
// electing its JetStream leader: creation is tried again for a while.
func (r *run) createStreams(ctx context.Context) error {
	js, err := jetstream.New(r.nc)
	if err != nil {
		return err
	}
	streams := []struct{ name, subject string }{{"EVENTS", "events.>"}}
	if r.sc.baseline {
		streams = append(streams, struct{ name, subject string }{baselineStream, "baseline.>"})
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range streams {
		for {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := js.CreateStream(cctx, jetstream.StreamConfig{Name: s.name, Subjects: []string{s.subject},
				Storage: jetstream.FileStorage, MaxAge: 24 * time.Hour, Duplicates: 2 * time.Minute, Replicas: len(r.nats)})
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil || time.Now().After(deadline) {
				return fmt.Errorf("create stream %s: %w", s.name, err)
			}
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// runBaseline runs the minimal consumer on the same events (on its own
// stream) against an emulator of its own with the same latency.
func (r *run) runBaseline(ctx context.Context, p plan) error {
	wx, err := startWeChat()
	if err != nil {
		return err
	}
	defer wx.close()
	if f := r.sc.faults; f.Latency > 0 {
		wx.emu.SetFaults(wechattest.Faults{Latency: f.Latency, Paths: f.Paths})
	}
	b := newBaseline(wx, r.cfg.InFlight)
	pub, err := newPublisher(r.nc, p.events, func(int) string { return baselineSubject }, p.payload)
	if err != nil {
		return err
	}
	// The consumer and the publisher end before the emulator closes.
	bctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	var runErr, pubErr error
	runDone := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(runDone)
		runErr = b.run(bctx, r.nc)
	}()
	go func() {
		defer wg.Done()
		pubErr = pub.run(bctx, p.rate)
	}()
	r.progress("baseline: publishing %d events (%s)", p.events, rateText(p.rate))
	natsStart, selfStart := r.natsCPU(), selfCPU()
	deadline := time.After(r.cfg.Timeout)
	for b.ok.Load()+b.fails.Load() < int64(p.events) {
		select {
		case <-runDone:
			return fmt.Errorf("baseline consumer stopped early: %w", cmp.Or(runErr, errors.New("no error")))
		case <-deadline:
			return fmt.Errorf("baseline: %d of %d sends after %s", b.ok.Load(), p.events, r.cfg.Timeout)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	natsCPU, selfCPU := r.natsCPU()-natsStart, selfCPU()-selfStart
	stop()
	wg.Wait()
	if runErr != nil {
		return runErr
	}
	if pubErr != nil && !errors.Is(pubErr, context.Canceled) {
		return pubErr
	}
	arrivals, sends, _ := wx.snapshot()
	first := pub.published(0)
	var last time.Time
	var lat []time.Duration
	for k, a := range arrivals {
		if a.last.After(last) {
			last = a.last
		}
		if i, ok := eventIndex(k.event); ok {
			lat = append(lat, a.first.Sub(pub.published(i)))
		}
	}
	secs := last.Sub(first).Seconds()
	r.rep.Baseline = &BaselineReport{Sends: len(sends), Failed: int(b.fails.Load()), FailedBy: b.failureReasons(), Seconds: secs,
		SendsPerSec: float64(len(sends)) / secs, ToWeChat: latencyOf(lat), CPUSeconds: selfCPU.Seconds(), NATSCPUSeconds: natsCPU.Seconds()}
	r.progress("baseline: %d sends in %.2f s (%.0f/s)", len(sends), secs, r.rep.Baseline.SendsPerSec)
	return nil
}

func eventIndex(id string) (int, bool) {
	s, ok := strings.CutPrefix(id, "e")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil
}

// analyse checks WeChat's record against the load and the results.
func (r *run) analyse(p plan, wx *fakeWeChat, pub *publisher, col *collector) {
	arrivals, sends, requests := wx.snapshot()
	rep := r.rep
	rep.WeChatSends, rep.WeChatRequests = len(sends), requests
	if errs := wx.emu.Errors(); len(errs) > 0 {
		rep.WeChatErrors = errs
	}
	perPair := map[pairKey]int{}
	for _, s := range sends {
		perPair[pairKey{s.Data["character_string1"], userOf(s.ToUser)}]++
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	first := pub.published(0)
	var lastArrival, lastResult time.Time
	var toWeChat, toResult []time.Duration
	for k := range p.expected {
		i, _ := eventIndex(k.event)
		at := pub.published(i)
		o := col.outcomes[k]
		n := perPair[k]
		switch {
		case n > 1 && o != nil && o.inDoubt:
			rep.InDoubtDuplicates++
		case n > 1:
			rep.Duplicates++
		}
		if o != nil && o.inDoubt {
			rep.InDoubt++
		}
		if n == 0 && (o == nil || o.status == "" || o.sent) {
			rep.Lost++
		}
		if n > 0 && (o == nil || o.status == "") {
			rep.NoResult++
		}
		if a, ok := arrivals[k]; ok {
			toWeChat = append(toWeChat, a.first.Sub(at))
			if a.last.After(lastArrival) {
				lastArrival = a.last
			}
		}
		if o != nil && o.status != "" {
			toResult = append(toResult, o.at.Sub(at))
			if o.at.After(lastResult) {
				lastResult = o.at
			}
			key := o.status
			if o.reason != "" {
				key += "/" + o.reason
			}
			rep.Outcomes[key]++
		} else {
			rep.Outcomes["none"]++
		}
	}
	for k, n := range perPair {
		if !p.expected[k] {
			rep.note("WeChat received %d sends nobody asked for (%s to %s)", n, k.event, k.user)
		}
	}
	if col.stray > 0 {
		rep.note("%d results for recipients the bench did not expect", col.stray)
	}
	rep.Seconds = lastArrival.Sub(first).Seconds()
	if rep.Seconds > 0 {
		rep.SendsPerSec = float64(len(sends)) / rep.Seconds
	}
	if d := lastResult.Sub(first).Seconds(); d > 0 {
		rep.EventsPerSec = float64(p.events) / d
	}
	rep.ToWeChat, rep.ToResult = latencyOf(toWeChat), latencyOf(toResult)
	if rep.Baseline != nil && rep.Baseline.SendsPerSec > 0 {
		rep.Ratio = rep.SendsPerSec / rep.Baseline.SendsPerSec
	}
	if rep.InDoubt > 0 {
		rep.note("%d recipients in doubt: the bridge could not know whether WeChat had the message (a SIGKILL between "+
			"the call and its record, or a call that timed out) and sent again (at_least_once); %d of them reached WeChat twice",
			rep.InDoubt, rep.InDoubtDuplicates)
	}
	if p.rate == 0 {
		rep.note("published as fast as possible: latencies include the queue of events waiting to be consumed")
	}
}
