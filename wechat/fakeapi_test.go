package wechat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

// Secrets the tests look for in every error and log line. They are long
// and unusual so that finding one is never a coincidence.
const (
	testAppID  = "wx00000000000000a1"
	testSecret = "SECRET-5f1d2c8e9b7a4e3d8c2b1a0f9e8d7c6b"
	testCode   = "JSCODE-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d"
)

// apiFake is a scripted WeChat for fault sequences: it records every call
// and answers with the functions a test sets. Tokens it issues by default
// are "TOKEN-<appid>-<n>", valid 7200 s.
type apiFake struct {
	srv *httptest.Server

	mu     sync.Mutex
	tokens []tokenCall
	sends  []sendCall
	issued int
	// token answers a token request; nil issues a new token.
	token func(tokenCall) any
	// send answers a send; nil accepts it with a msgid.
	send func(sendCall) any
	// other answers any other path.
	other func(r *http.Request) any
}

type tokenCall struct {
	Path, Method, AppID, Secret string
	Force                       bool
	ctx                         context.Context // the request's; not recorded
}

type sendCall struct {
	Token string
	Body  map[string]any
}

func newAPIFake(t *testing.T) *apiFake {
	t.Helper()
	f := &apiFake{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *apiFake) URL() string { return f.srv.URL }

func (f *apiFake) serve(w http.ResponseWriter, r *http.Request) {
	// Read the whole body: only then does the server notice a client that
	// hangs up, and cancel r.Context().
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var answer any
	switch r.URL.Path {
	case "/cgi-bin/stable_token", "/cgi-bin/token":
		c := tokenCall{Path: r.URL.Path, Method: r.Method, ctx: r.Context()}
		if r.Method == http.MethodPost {
			var body struct {
				AppID        string `json:"appid"`
				Secret       string `json:"secret"`
				ForceRefresh bool   `json:"force_refresh"`
			}
			_ = json.NewDecoder(r.Body).Decode(&body)
			c.AppID, c.Secret, c.Force = body.AppID, body.Secret, body.ForceRefresh
		} else {
			c.AppID, c.Secret = r.URL.Query().Get("appid"), r.URL.Query().Get("secret")
		}
		f.mu.Lock()
		rec := c
		rec.ctx = nil
		f.tokens = append(f.tokens, rec)
		fn := f.token
		f.mu.Unlock()
		if fn != nil {
			answer = fn(c)
		} else {
			answer = f.newToken(c.AppID, 7200)
		}
	case "/cgi-bin/message/subscribe/send":
		c := sendCall{Token: r.URL.Query().Get("access_token")}
		_ = json.NewDecoder(r.Body).Decode(&c.Body)
		f.mu.Lock()
		f.sends = append(f.sends, c)
		n := len(f.sends)
		fn := f.send
		f.mu.Unlock()
		if fn != nil {
			answer = fn(c)
		} else {
			answer = json.RawMessage(fmt.Sprintf(`{"errcode":0,"errmsg":"ok","msgid":%d}`, 1864323726461255680+n))
		}
	default:
		f.mu.Lock()
		fn := f.other
		f.mu.Unlock()
		if fn == nil {
			http.NotFound(w, r)
			return
		}
		answer = fn(r)
	}
	switch a := answer.(type) {
	case nil: // the function wrote the answer itself
	case int:
		w.WriteHeader(a)
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a)
	}
}

// newToken issues the next token of appid.
func (f *apiFake) newToken(appid string, expiresIn int) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.issued++
	return map[string]any{"access_token": fmt.Sprintf("TOKEN-%s-%d", appid, f.issued), "expires_in": expiresIn}
}

func (f *apiFake) tokenCalls() []tokenCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]tokenCall(nil), f.tokens...)
}

func (f *apiFake) sendCalls() []sendCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sendCall(nil), f.sends...)
}

func (f *apiFake) setToken(fn func(tokenCall) any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = fn
}

func (f *apiFake) setSend(fn func(sendCall) any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.send = fn
}

func (f *apiFake) setOther(fn func(*http.Request) any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.other = fn
}

func errAnswer(code int, msg string) map[string]any {
	return map[string]any{"errcode": code, "errmsg": msg + " rid: 6933e8f6-48ac74fd-2c498819"}
}

// apiClock is the clock the client runs on; tests move it by hand.
type apiClock struct {
	mu  sync.Mutex
	now time.Time
}

func newAPIClock() *apiClock {
	return &apiClock{now: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
}

func (c *apiClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *apiClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// apiLogs collects a client's log output.
type apiLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *apiLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *apiLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *apiLogs) count(msg string) int {
	return strings.Count(l.String(), "msg=\""+msg+"\"")
}

func newLogger(l *apiLogs) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testStore is a TokenStore that reports every save on saved, so a test can
// wait until a background fetch has finished.
type testStore struct {
	mu    sync.Mutex
	m     map[string]storedValue
	saved chan string
}

type storedValue struct {
	token string
	exp   time.Time
}

func newTestStore() *testStore {
	return &testStore{m: map[string]storedValue{}, saved: make(chan string, 1000)}
}

func (s *testStore) LoadToken(_ context.Context, key string) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.m[key]
	return v.token, v.exp, nil
}

func (s *testStore) SaveToken(_ context.Context, key, token string, exp time.Time) error {
	s.mu.Lock()
	s.m[key] = storedValue{token, exp}
	s.mu.Unlock()
	select {
	case s.saved <- key:
	default: // nobody is waiting for this many saves
	}
	return nil
}

func (s *testStore) get(key string) storedValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key]
}

// waitSaved waits until the store saved key.
func (s *testStore) waitSaved(t *testing.T, key string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case k := <-s.saved:
			if k == key {
				return
			}
		case <-timeout:
			t.Fatalf("store never saved %s", key)
		}
	}
}

// testEnv is a client wired to a fake, a hand-moved clock, a store and a
// log sink, with app "main" registered in stable-token mode.
type testEnv struct {
	client *wechat.Client
	fake   *apiFake
	clock  *apiClock
	store  *testStore
	logs   *apiLogs
}

func newTestEnv(t *testing.T, tweak ...func(*wechat.Config)) *testEnv {
	t.Helper()
	e := &testEnv{fake: newAPIFake(t), clock: newAPIClock(), store: newTestStore(), logs: &apiLogs{}}
	cfg := wechat.Config{
		BaseURL: e.fake.URL(),
		Tokens:  e.store,
		Logger:  newLogger(e.logs),
		Now:     e.clock.Now,
		Timeout: 5 * time.Second,
	}
	for _, fn := range tweak {
		fn(&cfg)
	}
	c, err := wechat.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	c.SetApp("main", wechat.App{AppID: testAppID, Secret: testSecret})
	e.client = c
	return e
}

var testMessage = wechat.Message{ToUser: "o-user-1", TemplateID: "TPL-1", Data: map[string]string{"thing1": "hello"}}

func (e *testEnv) send(t *testing.T) (string, error) {
	t.Helper()
	return e.client.Send(context.Background(), "main", testMessage)
}

func (e *testEnv) mustSend(t *testing.T) string {
	t.Helper()
	id, err := e.send(t)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return id
}

// assertNoSecrets fails when s contains a secret.
func assertNoSecrets(t *testing.T, what, s string, extra ...string) {
	t.Helper()
	for _, secret := range append([]string{testSecret, testCode, "TOKEN-"}, extra...) {
		if strings.Contains(s, secret) {
			t.Errorf("%s contains secret %q: %s", what, secret, s)
		}
	}
}
