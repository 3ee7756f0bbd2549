package console_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/console"
	"github.com/wxbridge/wxbridge/internal/embednats"
	"github.com/wxbridge/wxbridge/internal/httpserve"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// waitLimit bounds every wait for something that should happen: generous,
// for a loaded machine; a passing test never waits it out.
const waitLimit = 30 * time.Second

const (
	appID = "wx00000000000000c1"
	tplID = "TPL_statement_issued"
)

// world is a whole bridge in-process, with its console: an embedded NATS,
// a bbolt state, the WeChat emulator, the bridge consuming events and
// publishing results into the WXBRIDGE stream, and the console served on
// a real listener through httpserve, as serve mounts it.
type world struct {
	t      *testing.T
	url    string
	nc     *nats.Conn
	js     jetstream.JetStream
	db     *storage.DB
	store  *unionStore
	emu    *wechattest.Emulator
	model  *console.Model
	rules  *console.Rules
	tokens *tokenSpy
	reg    *prometheus.Registry
}

// unionStore is the bbolt state with the unionid lookup the console
// declares (the state has no unionid index yet): it remembers the bindings
// made through it.
type unionStore struct {
	*storage.DB
	mu       sync.Mutex
	bindings []storage.Binding
}

func (s *unionStore) BindingsByUnionID(_ context.Context, unionid string) ([]storage.Binding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storage.Binding
	for _, b := range s.bindings {
		if b.UnionID == unionid {
			out = append(out, b)
		}
	}
	return out, nil
}

// tokenSpy keeps the state's access tokens and remembers every one, so
// that a test can look for them in the console's pages.
type tokenSpy struct {
	*storage.DB
	mu   sync.Mutex
	seen []string
}

func (s *tokenSpy) SaveToken(ctx context.Context, key, token string, exp time.Time) error {
	s.mu.Lock()
	s.seen = append(s.seen, token)
	s.mu.Unlock()
	return s.DB.SaveToken(ctx, key, token, exp)
}

func (s *tokenSpy) tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// consoleLimits are the route limits the report asks serve to mount the
// console with.
var consoleLimits = httpserve.Limits{MaxBody: 1 << 20, Read: 10 * time.Second, Write: 30 * time.Second}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, consoleLimits)
}

func newWorldWith(t *testing.T, limits httpserve.Limits) *world {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	ns, err := embednats.Start(embednats.Options{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(filepath.Join(dir, "wxbridge.db"), storage.Options{NoSync: true, LedgerHook: bridge.LedgerHook("wxbridge")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })

	emu := wechattest.New(wechattest.Options{})
	t.Cleanup(func() { _ = emu.Close() })
	emu.AddApp(appID, appSecret)
	emu.AddTemplate(appID, wechattest.Template{ID: tplID, Title: "Statement issued", Kind: wechattest.OneTime,
		Keywords: map[string]string{"thing1": "thing", "thing2": "thing", "character_string3": "character_string", "time4": "time"}})
	emuSrv := httptest.NewServer(emu)
	t.Cleanup(emuSrv.Close)

	spy := &tokenSpy{DB: db}
	wx, err := wechat.New(wechat.Config{BaseURL: emuSrv.URL, Tokens: spy, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wx.Close() })
	set := loadRules(t)
	wx.SetApp("main", wechat.App{AppID: appID, Secret: appSecret})

	reg := prometheus.NewRegistry()
	b, err := bridge.New(bridge.Config{Conn: nc, Store: db, WeChat: wx, Logger: log, Registry: reg,
		RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, ShutdownGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b.SetRules(set)
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	running.Add(2)
	go func() {
		defer running.Done()
		if err := b.Run(ctx); err != nil {
			t.Errorf("bridge: %v", err)
		}
	}()
	w := &world{t: t, nc: nc, js: js, db: db, store: &unionStore{DB: db}, emu: emu, tokens: spy, reg: reg,
		model: console.NewModel(console.ModelConfig{MaxLiveClients: 4}), rules: &console.Rules{}}
	w.rules.Loaded(set, time.Now())
	go func() {
		defer running.Done()
		_ = w.model.Follow(ctx, js, console.FeedConfig{})
	}()
	// Stopped before the state and NATS close (cleanups run last first).
	t.Cleanup(func() {
		cancel()
		running.Wait()
	})
	waitFor(t, "the bridge to consume", b.Ready)

	c, err := console.New(console.Config{Token: adminToken, Store: w.store, Rules: w.rules, Model: w.model,
		InFlight: console.GaugesOf(reg), JetStream: js, Secrets: spy.tokens, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httpserve.New(ln, mux, httpserve.Config{})
	mux.Handle("/console/", srv.Route(c, limits))
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })
	w.url = "http://" + ln.Addr().String()
	return w
}

// waitFor polls ok until it holds, or fails the test after waitLimit.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", waitLimit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bind binds a user as the bind command does, with a unionid.
func (w *world) bind(user, openid, unionid string) {
	w.t.Helper()
	b := storage.Binding{App: "main", UserID: user, OpenID: openid, UnionID: unionid}
	if _, err := w.db.Bind(context.Background(), b); err != nil {
		w.t.Fatal(err)
	}
	w.store.mu.Lock()
	w.store.bindings = append(w.store.bindings, b)
	w.store.mu.Unlock()
	w.emu.AddUser(appID, openid)
}

// grant gives the user one credit, in WeChat and in the ledger (as the
// client's report of wx.requestSubscribeMessage does).
func (w *world) grant(openid string) {
	w.t.Helper()
	w.emu.Accept(appID, openid, tplID)
	_, err := w.db.ApplySubscription(context.Background(), storage.SubscriptionChange{App: "main", OpenID: openid, TemplateID: tplID,
		Status: storage.StatusAccept, Kind: storage.KindOneTime, Source: storage.SourceClient})
	if err != nil {
		w.t.Fatal(err)
	}
}

// publish publishes an event the way a domain service does.
func (w *world) publish(id string, data any) {
	w.t.Helper()
	m := nats.NewMsg("events.statement.issued")
	m.Data, _ = json.Marshal(data)
	m.Header.Set(nats.MsgIdHdr, id)
	if _, err := w.js.PublishMsg(context.Background(), m); err != nil {
		w.t.Fatal(err)
	}
}

// statement is a statement.issued payload for applicant.
func statement(applicant, id string) map[string]any {
	return map[string]any{"statement_id": id, "applicant_id": applicant, "buyer_id": "42",
		"buyer_name": "Shanghai Acme International Trading Co", "seller_name": "Supplier Ltd", "month": "2026-10",
		"created_at": "2026-11-01T09:00:00+08:00"}
}

// awaitResult waits until the model has read a result of event id for the
// person.
func (w *world) awaitResult(user, eventID, status string) bridge.Result {
	w.t.Helper()
	var got bridge.Result
	waitFor(w.t, "result "+status+" of "+eventID+" for "+user, func() bool {
		for _, r := range w.model.PersonResults(user) {
			if r.EventID == eventID && r.Status == status {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// story is the scenario: u-17 bound with one credit, a reconciler
// u-18 who is not bound, two statements; the first is sent to u-17, the
// second skipped for lack of a credit. u-19 meets a configuration error
// (41030: a page the mini program does not have), and a body that is not
// JSON is dead-lettered.
func (w *world) story() {
	w.t.Helper()
	w.bind("u-17", "o-alice", "un-alice")
	w.grant("o-alice")
	if err := w.db.UpdateRoles(context.Background(), "u-18", []storage.Role{{Role: "reconciler", Scope: "buyer:42"}}, nil); err != nil {
		w.t.Fatal(err)
	}
	w.publish("evt-1", statement("u-17", "S-1"))
	w.awaitResult("u-17", "evt-1", "sent")
	w.publish("evt-2", statement("u-17", "S-2"))
	w.awaitResult("u-17", "evt-2", "skipped")

	w.bind("u-19", "o-carol", "")
	w.grant("o-carol")
	w.emu.SetPages(appID, "pages/index/index")
	w.publish("evt-3", statement("u-19", "S-3"))
	w.awaitResult("u-19", "evt-3", "failed")

	m := nats.NewMsg("events.statement.issued")
	m.Data = []byte("not json")
	m.Header.Set(nats.MsgIdHdr, "evt-bad")
	if _, err := w.js.PublishMsg(context.Background(), m); err != nil {
		w.t.Fatal(err)
	}
	waitFor(w.t, "the dead letter", func() bool { return w.model.Status().Dead > 0 })
	waitFor(w.t, "the ledger changes", func() bool { return w.model.Status().Changes >= 4 })
}
