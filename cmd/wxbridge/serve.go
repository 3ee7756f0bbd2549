package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/console"
	"github.com/wxbridge/wxbridge/internal/embednats"
	"github.com/wxbridge/wxbridge/internal/httpserve"
	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
	"github.com/wxbridge/wxbridge/wechat"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// serveConfig is everything `serve` is configured with.
type serveConfig struct {
	RulesPath string
	NATSURL   string // "" starts an embedded server
	// Store is the state backend: bbolt (the default) or nats.
	Store string
	// KV configures the nats store.
	KV         natskv.Options
	NATSAuth   natsAuth
	NATSListen string // client address of the embedded server ("" = in-process only)
	DataDir    string
	Listen     string
	// MaxConns bounds the HTTP connections open at once (default
	// httpserve.DefaultMaxConns).
	MaxConns  int
	WeChatAPI string
	// WeChatTimeout bounds each WeChat call (default 10 s).
	WeChatTimeout time.Duration
	Emulator      bool
	// PushMode and PushFormat are how the emulator pushes callbacks
	// (with --emulator).
	PushMode, PushFormat string
	// AdminToken enables the /v1/ admin API and the console.
	AdminToken string
	// ConsoleSecureCookies and ConsoleOrigins are for a console behind a
	// proxy that terminates TLS or rewrites Host (console.Config).
	ConsoleSecureCookies bool
	ConsoleOrigins       []string
	// ReloadEvery is how often the rules file is checked for changes.
	ReloadEvery time.Duration
	// CommitLinger is how long a database commit waits for more writers.
	CommitLinger time.Duration
	Bridge       bridge.Config
	Logger       *slog.Logger

	// emulatorSetup, in tests, prepares the emulator's WeChat-side state
	// before the bridge starts consuming.
	emulatorSetup func(*wechattest.Emulator)
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("serve", stderr, "serve [flags]")
	cfg := serveConfig{Logger: newLogger(stderr)}
	f.StringVar(&cfg.RulesPath, "rules", envOr("WXBRIDGE_RULES", "rules.yaml"), "rules file (env WXBRIDGE_RULES)")
	f.StringVar(&cfg.NATSURL, "nats", envOr("WXBRIDGE_NATS_URL", ""), "NATS server URL(s), comma-separated; empty starts an embedded server (env WXBRIDGE_NATS_URL)")
	cfg.NATSAuth.register(f)
	f.StringVar(&cfg.Store, "store", envOr("WXBRIDGE_STORE", "bbolt"), "where the state lives: bbolt (DATA/wxbridge.db, one bridge) or nats (a JetStream KV bucket several bridges share) (env WXBRIDGE_STORE)")
	f.StringVar(&cfg.KV.Bucket, "kv-bucket", envOr("WXBRIDGE_KV_BUCKET", "wxbridge"), "KV bucket of --store nats (env WXBRIDGE_KV_BUCKET)")
	replicas := f.integer("replicas", "WXBRIDGE_REPLICAS", 1, "replicas of the streams and the KV bucket wxbridge creates: 3 on a cluster")
	leaseTTL := f.duration("lease-ttl", "WXBRIDGE_LEASE_TTL", 10*time.Second, "--store nats: how long a bridge that stopped renewing its lease is still taken for alive")
	f.StringVar(&cfg.NATSListen, "nats-listen", envOr("WXBRIDGE_NATS_LISTEN", "127.0.0.1:4222"), "client address of the embedded NATS server; empty for in-process only (env WXBRIDGE_NATS_LISTEN)")
	f.StringVar(&cfg.DataDir, "data", envOr("WXBRIDGE_DATA", "./data"), "data directory: bbolt file and embedded NATS store (env WXBRIDGE_DATA)")
	f.StringVar(&cfg.Listen, "listen", envOr("WXBRIDGE_LISTEN", "127.0.0.1:8080"), "HTTP address: callbacks, health, metrics, admin (env WXBRIDGE_LISTEN)")
	maxConns := f.integer("max-conns", "WXBRIDGE_MAX_CONNS", httpserve.DefaultMaxConns, "HTTP connections open at once; at the bound idle and slow ones make room, else new ones wait (keep well under ulimit -n)")
	f.StringVar(&cfg.WeChatAPI, "wechat-api", envOr("WXBRIDGE_WECHAT_API", wechat.DefaultBaseURL), "WeChat API base URL (env WXBRIDGE_WECHAT_API)")
	wxTimeout := f.duration("wechat-timeout", "WXBRIDGE_WECHAT_TIMEOUT", 10*time.Second, "bound on each WeChat call; a call that times out is in doubt")
	emu := f.boolean("emulator", "WXBRIDGE_EMULATOR", false, "run the WeChat emulator in-process and send to it")
	f.StringVar(&cfg.PushMode, "emulator-push-mode", envOr("WXBRIDGE_EMULATOR_PUSH_MODE", "safe"), "how the emulator pushes callbacks: plaintext, compatible or safe")
	f.StringVar(&cfg.PushFormat, "emulator-push-format", envOr("WXBRIDGE_EMULATOR_PUSH_FORMAT", "json"), "format of the emulator's pushes: json or xml")
	rate := f.Float64("app-rate", 0, "WeChat sends per second per app; 0 for no limit")
	linger := f.duration("commit-linger", "WXBRIDGE_COMMIT_LINGER", time.Millisecond, "how long a database commit waits for more writes to share it (fewer fsyncs, a little more latency)")
	inflight := f.integer("max-in-flight", "WXBRIDGE_MAX_IN_FLIGHT", 64, "events processed at once; each holds its body and its planned recipients in memory")
	sends := f.integer("max-sends", "WXBRIDGE_MAX_SENDS", 256, "concurrent WeChat calls")
	attempts := f.integer("max-attempts", "WXBRIDGE_MAX_ATTEMPTS", 8, "tries per recipient on transient WeChat errors")
	ackWait := f.duration("ack-wait", "WXBRIDGE_ACK_WAIT", time.Minute, "JetStream ack wait of the event consumer")
	grace := f.duration("shutdown-grace", "WXBRIDGE_SHUTDOWN_GRACE", 20*time.Second, "time in-flight events get to finish at shutdown")
	recipients := f.integer("max-recipients", "WXBRIDGE_MAX_RECIPIENTS", 5000, "recipients of one event, across its rules; those beyond get one failed/too_many_recipients result")
	maxDeliver := f.integer("max-deliver", "WXBRIDGE_MAX_DELIVER", 40, "deliveries of an event before the server gives up on it and it is dead-lettered (must exceed --max-attempts)")
	maxAckPending := f.integer("max-ack-pending", "WXBRIDGE_MAX_ACK_PENDING", 1000, "events all bridges hold together, with those waiting out a retry delay (the consumer's MaxAckPending; give every bridge the same)")
	secureCookies := f.boolean("console-secure-cookies", "WXBRIDGE_CONSOLE_SECURE_COOKIES", false, "mark the console's session cookie Secure on plain HTTP too, behind a proxy that terminates TLS")
	origins := f.String("console-origins", envOr("WXBRIDGE_CONSOLE_ORIGINS", ""), "comma-separated origins besides its own that may post to the console (https://ops.example.com), behind a proxy that rewrites Host")
	stallAfter := f.duration("stall-after", "WXBRIDGE_STALL_AFTER", 5*time.Minute, "/readyz fails when the consumer delivered nothing new for this long while events wait")
	if pos, err := f.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	if *maxConns < 1 {
		return usagef("--max-conns must be at least 1, not %d", *maxConns)
	}
	cfg.MaxConns = *maxConns
	cfg.Emulator = *emu
	if cfg.Store != "bbolt" && cfg.Store != "nats" {
		return usagef("--store %q: want bbolt or nats", cfg.Store)
	}
	cfg.KV.Replicas, cfg.KV.LeaseTTL = *replicas, *leaseTTL
	cfg.WeChatTimeout = *wxTimeout
	cfg.AdminToken = os.Getenv("WXBRIDGE_ADMIN_TOKEN")
	cfg.ConsoleSecureCookies = *secureCookies
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.ConsoleOrigins = append(cfg.ConsoleOrigins, o)
		}
	}
	cfg.CommitLinger = *linger
	cfg.ReloadEvery = 2 * time.Second
	cfg.Bridge = bridge.Config{MaxInFlight: *inflight, MaxSends: *sends, MaxAttempts: *attempts, AckWait: *ackWait,
		ShutdownGrace: *grace, AppRate: *rate, MaxRecipients: *recipients, MaxDeliver: *maxDeliver, MaxAckPending: *maxAckPending,
		StallAfter: *stallAfter, Replicas: *replicas}

	tuneGC()
	tp, exporting, err := newTracerProvider(ctx)
	if err != nil {
		return &usageError{err}
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(sctx) // flushes what the exporter holds
	}()
	cfg.Bridge.Tracer = tp
	if exporting {
		cfg.Logger.Info("exporting traces over OTLP")
	}
	svc, err := startService(ctx, cfg)
	if err != nil {
		return err
	}
	return svc.run(ctx)
}

// tuneGC trades memory the bridge has plenty of for CPU it has not: at load
// a fifth of its CPU went to collecting garbage with the default GOGC=100.
// Collecting at 400% growth, with a soft memory limit that makes the
// collector work harder as the heap approaches it, cut that by about 18%
// (peak RSS 51 → 68 MiB at 5,000 sends/s). GOGC and GOMEMLIMIT in the
// environment win.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(160 << 20)
	}
}

// openState opens the state backend cfg names.
func openState(ctx context.Context, cfg serveConfig, nc *nats.Conn, log *slog.Logger) (stateStore, error) {
	hook := bridge.LedgerHook(cfg.Bridge.Prefix)
	if cfg.Store == "nats" {
		o := cfg.KV
		o.LedgerHook, o.Now, o.Logger = hook, cfg.Bridge.Now, log.With("component", "kv")
		if cfg.Bridge.Retention.Sends > 0 {
			o.Retention = cfg.Bridge.Retention
		}
		st, err := natskv.Open(ctx, nc, o)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	db, err := storage.Open(filepath.Join(cfg.DataDir, "wxbridge.db"), storage.Options{LedgerHook: hook,
		Linger: cfg.CommitLinger, Now: cfg.Bridge.Now})
	if err != nil {
		return nil, err
	}
	return db, nil
}

// stateStore is a state backend as serve holds it: the bridge's whole
// contract, the few reads operators' tools and tests make besides, and
// closing. Both backends are one.
type stateStore interface {
	bridge.Store
	console.Store
	Subscription(ctx context.Context, app, openid, templateID string) (storage.Subscription, bool, error)
	UserByOpenID(ctx context.Context, app, openid string) (string, bool, error)
	Close() error
}

var (
	_ stateStore = (*storage.DB)(nil)
	_ stateStore = (*natskv.Store)(nil)
)

// service is a running wxbridge: the composition root of `serve`.
type service struct {
	cfg    serveConfig
	log    *slog.Logger
	ns     *embednats.Server
	nc     *nats.Conn
	store  stateStore
	wx     *wechat.Client
	emu    *wechattest.Emulator
	bridge *bridge.Bridge
	ln     net.Listener      // until http owns it
	http   *httpserve.Server // set by mountHTTP
	push   *wechat.PushHandler
	// For operators: token fetch failures on /metrics (metrics.go), the
	// console (consolewire.go).
	tokenFailures *tokenFailures
	console       consoleParts
}

// startService opens everything serve needs. On error, whatever was opened
// is closed again.
func startService(ctx context.Context, cfg serveConfig) (svc *service, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ReloadEvery <= 0 {
		cfg.ReloadEvery = 2 * time.Second
	}
	set, err := rules.Load(cfg.RulesPath)
	if err != nil {
		return nil, &usageError{err}
	}
	s := &service{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}

	apiURL := cfg.WeChatAPI
	if cfg.Emulator {
		s.emu = wechattest.New(wechattest.Options{AutoUsers: true})
		apiURL = "http://" + s.ln.Addr().String() + "/emulator"
		log.Info("WeChat emulator running in-process", "url", apiURL)
	}

	// NATS first: a state backend may live there.
	natsOpts, err := cfg.NATSAuth.options()
	if err != nil {
		return nil, err
	}
	if cfg.NATSURL == "" {
		s.ns, err = embednats.Start(embednats.Options{StoreDir: filepath.Join(cfg.DataDir, "nats"), Listen: cfg.NATSListen, Logger: log})
		if err != nil {
			return nil, err
		}
		if u := s.ns.ClientURL(); u != "" {
			log.Info("embedded NATS server running", "url", u)
		}
		s.nc, err = s.ns.Connect()
	} else {
		s.nc, err = nats.Connect(cfg.NATSURL, append(natsOpts, nats.Name("wxbridge"), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))...)
		if err == nil {
			log.Info("connected to NATS", "url", s.nc.ConnectedUrlRedacted(), "auth", cfg.NATSAuth.describe())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	if s.store, err = openState(ctx, cfg, s.nc, log); err != nil {
		return nil, err
	}
	s.tokenFailures, s.console.tokens = newTokenFailures(), newTokenMemo(s.store)
	if s.wx, err = wechat.New(wechat.Config{BaseURL: apiURL, Tokens: s.console.tokens, Timeout: cfg.WeChatTimeout, Logger: log.With("component", "wechat"),
		TokenFetchFailed: s.tokenFailures.observe}); err != nil {
		return nil, &usageError{err}
	}

	bc := cfg.Bridge
	bc.Conn, bc.Store, bc.WeChat, bc.Logger = s.nc, s.store, s.wx, log
	bc.LegacyIDsBefore = s.store.LegacyIDsBefore()
	if s.bridge, err = bridge.New(bc); err != nil {
		return nil, err
	}
	s.applyRules(set)
	if s.emu != nil && cfg.emulatorSetup != nil {
		cfg.emulatorSetup(s.emu)
	}
	if err = s.buildConsole(); err != nil {
		return nil, err
	}
	s.mountHTTP()
	return s, nil
}

// Limits of the routes on the public listener, from when a request's
// headers are in (they get httpserve.DefaultReadHeaderTimeout). Every
// route has a deadline and a body limit, so that clients that send or read
// slowly cannot hold connections: see httpserve.
var (
	// WeChat sends a push of a few hundred bytes at once and waits 5 s
	// for the answer; Handle has wechat.DefaultPushHandleTimeout.
	callbackLimits = httpserve.Limits{MaxBody: wechat.DefaultPushMaxBody, Read: 5 * time.Second, Write: 10 * time.Second}
	// Probes and scrapes take no body; /readyz pings JetStream for up to 2 s.
	probeLimits  = httpserve.Limits{Write: 5 * time.Second}
	scrapeLimits = httpserve.Limits{Write: 10 * time.Second}
	// The admin API only reads (GET), with bbolt scans behind it.
	adminLimits = httpserve.Limits{Write: 30 * time.Second}
	// The emulator (--emulator) takes bodies up to its own 1 MiB limit and
	// may delay its answers (latency faults).
	emulatorLimits = httpserve.Limits{MaxBody: 1 << 20, Read: 10 * time.Second, Write: time.Minute}
	// A CPU profile or a trace runs for ?seconds= (a profile 30 by
	// default) before a byte is written; pprof refuses one longer than the
	// server-wide httpserve.DefaultWriteTimeout.
	pprofLimits = httpserve.Limits{Write: httpserve.DefaultWriteTimeout}
	// The symbol lookup takes addresses in a POST body.
	pprofSymbolLimits = httpserve.Limits{MaxBody: 1 << 20, Read: 10 * time.Second, Write: 30 * time.Second}
)

// mountHTTP serves everything on the one listener: WeChat callbacks,
// health, readiness, metrics and the admin API, each with its limits.
func (s *service) mountHTTP() {
	mux := http.NewServeMux()
	reg := s.bridge.Registry()
	s.http = httpserve.New(s.ln, mux, httpserve.Config{MaxConns: s.cfg.MaxConns,
		Registerer: prometheus.WrapRegistererWithPrefix("wxbridge_", reg)})
	handle := func(pattern string, h http.Handler, l httpserve.Limits) { mux.Handle(pattern, s.http.Route(h, l)) }

	push := &wechat.PushHandler{Config: s.bridge.PushConfig, Handle: s.bridge.HandlePush, Logger: s.log.With("component", "callback")}
	s.push = push
	handle("/wechat/callback/{app}", push, callbackLimits)
	handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }), probeLimits)
	handle("GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := s.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	}), probeLimits)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(s.serveCollectors()...)
	handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), scrapeLimits)
	handle("/v1/", s.bridge.AdminHandler(s.cfg.AdminToken), adminLimits)
	handle("/console/", s.console.handler, consoleLimits)
	if s.emu != nil {
		handle("/emulator/", http.StripPrefix("/emulator", s.emu), emulatorLimits)
	}
	if os.Getenv("WXBRIDGE_PPROF") == "1" {
		// Profiles expose internals: only when asked for (wxbridge bench --profile).
		handle("/debug/pprof/", http.HandlerFunc(pprof.Index), pprofLimits)
		handle("/debug/pprof/profile", http.HandlerFunc(pprof.Profile), pprofLimits)
		handle("/debug/pprof/symbol", http.HandlerFunc(pprof.Symbol), pprofSymbolLimits)
		handle("/debug/pprof/trace", http.HandlerFunc(pprof.Trace), pprofLimits)
	}
}

// ready is nil when NATS is connected, JetStream answers, the database is
// open and the bridge consumes events.
func (s *service) ready() error {
	if !s.nc.IsConnected() {
		return errors.New("NATS disconnected")
	}
	if !s.bridge.Ready() {
		return errors.New("bridge not consuming")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.bridge.JetStreamReady(ctx); err != nil {
		return fmt.Errorf("JetStream: %w", err)
	}
	if err := s.bridge.Progress(ctx); err != nil {
		return err
	}
	if err := s.store.Ping(); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	return nil
}

// applyRules puts a rule set in force: the WeChat client learns its apps,
// the emulator its templates, and the bridge its rules.
func (s *service) applyRules(set *rules.Set) {
	for name, a := range set.Apps {
		mode := wechat.TokenStable
		if a.TokenMode == "token" {
			mode = wechat.TokenLegacy
		}
		s.wx.SetApp(name, wechat.App{AppID: a.AppID, Secret: a.Secret, TokenMode: mode})
	}
	if s.emu != nil {
		configureEmulator(s.emu, set)
		s.emulatorCallbacks(set)
	}
	s.bridge.SetRules(set)
	s.console.rules.Loaded(set, time.Now())
	s.log.Info("rules in force", "file", set.File, "apps", len(set.Apps), "templates", len(set.Templates), "rules", len(set.Rules))
}

// emulatorCallbacks points the emulator's pushes at this process's own
// callback endpoint, so `serve --emulator` shows the whole subscription
// flow: a user accepts in the emulator, WeChat pushes, the ledger counts.
func (s *service) emulatorCallbacks(set *rules.Set) {
	push := pushConfig{base: "http://" + s.ln.Addr().String() + "/wechat/callback", mode: wechattest.Safe, format: wechattest.JSON, sentEvents: true}
	var err error
	if push.mode, err = wechattest.ParseMode(s.cfg.PushMode); err != nil {
		s.log.Warn("emulator push mode", "err", err)
		push.mode = wechattest.Safe
	}
	if push.format, err = wechattest.ParseFormat(s.cfg.PushFormat); err != nil {
		s.log.Warn("emulator push format", "err", err)
		push.format = wechattest.JSON
	}
	if err := configureCallbacks(s.emu, set, push, s.log); err != nil {
		s.log.Warn("emulator callbacks", "err", err)
	}
}

// watchRules reloads the rules when the file changes or on SIGHUP. A file
// that fails the checks is refused and the rules in force keep running.
func (s *service) watchRules(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	last := fileStamp(s.cfg.RulesPath)
	tick := time.NewTicker(s.cfg.ReloadEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-tick.C:
			cur := fileStamp(s.cfg.RulesPath)
			if cur == last {
				continue
			}
			// A file being written (truncated, then filled) is read once it
			// holds still, or at the next tick.
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(s.cfg.ReloadEvery/4, 250*time.Millisecond)):
			}
			if fileStamp(s.cfg.RulesPath) != cur {
				continue
			}
			last = cur
		}
		s.reload()
	}
}

// reload loads the rules file and, if it passes, puts it in force.
func (s *service) reload() bool {
	set, err := loadReload(s.cfg.RulesPath)
	if err != nil {
		var list rules.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				s.log.Error("rules reload refused; the previous rules keep running", "problem", e.Error())
			}
		} else {
			s.log.Error("rules reload refused; the previous rules keep running", "file", s.cfg.RulesPath, "err", err)
		}
		s.console.rules.Refused(s.cfg.RulesPath, err, time.Now())
		return false
	}
	s.applyRules(set)
	return true
}

// loadReload loads the rules for a reload. An empty file is refused: rules
// meant to send nothing are far less likely than a file caught while it is
// written, and taking it would drop every rule until the next save.
func loadReload(path string) (*rules.Set, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	if len(bytes.TrimSpace(src)) == 0 {
		return nil, fmt.Errorf("%s is empty (being written?)", path)
	}
	return rules.Parse(path, src, os.LookupEnv)
}

// fileStamp changes when the file's content does (a hash: editors and
// config management may keep the size and even the modification time).
func fileStamp(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "missing"
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// run serves until ctx ends, then shuts down in order: stop taking events,
// finish in-flight ones, stop HTTP, close NATS and the database.
func (s *service) run(ctx context.Context) error {
	defer s.close()
	httpErr := make(chan error, 1)
	go func() {
		if err := s.http.Serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr <- err
		}
		close(httpErr)
	}()
	s.log.Info("listening", "addr", s.ln.Addr().String())

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.watchRules(runCtx)
	}()
	defer func() { <-watchDone }()
	consoleDone := s.runConsole(runCtx)
	defer consoleDone()
	bridgeErr := make(chan error, 1)
	go func() { bridgeErr <- s.bridge.Run(runCtx) }()

	var err error
	select {
	case err = <-bridgeErr:
		bridgeErr = nil
	case err = <-httpErr:
		err = fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	cancel()
	if bridgeErr != nil {
		if berr := <-bridgeErr; err == nil {
			err = berr
		}
	}
	shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = s.http.Shutdown(shutCtx)
	for range httpErr { // the server goroutine has returned
	}
	return err
}

func (s *service) close() {
	if s.emu != nil {
		_ = s.emu.Close()
	}
	if s.http != nil {
		_ = s.http.Close()
	} else if s.ln != nil {
		_ = s.ln.Close()
	}
	if s.push != nil {
		// A push answered 500 for overrunning its deadline may still be
		// writing: the state closes after it.
		s.push.Wait()
	}
	if s.wx != nil {
		_ = s.wx.Close()
	}
	// The state before the connection: a store on NATS gives up its lease
	// as it closes.
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.log.Warn("close database", "err", err)
		}
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.ns != nil {
		s.ns.Shutdown()
	}
}
