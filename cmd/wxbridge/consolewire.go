package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/wxbridge/wxbridge/console"
	"github.com/wxbridge/wxbridge/internal/httpserve"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
	"github.com/wxbridge/wxbridge/wechat"
)

// The console reads through the same store interfaces on every backend.
var (
	_ console.Store = (*storage.DB)(nil)
	_ console.Store = (*natskv.Store)(nil)
)

// consoleLimits: the console's pages answer in well under the write
// deadline, and its forms (a dry run's pasted event) are small. The live
// tail lifts both deadlines itself and sets one per message.
var consoleLimits = httpserve.Limits{MaxBody: 1 << 20, Read: 10 * time.Second, Write: 30 * time.Second}

// consoleParts are the operator console (package console) as serve runs
// it, on the listener of /v1/ and behind the same admin token: no token,
// no console (every page answers 403).
type consoleParts struct {
	// rules is what the rules page shows; applyRules and reload keep it.
	rules console.Rules
	// tokens hands the WeChat client's access tokens to and from the
	// state, remembering the ones in use for the console to scrub.
	tokens  *tokenMemo
	js      jetstream.JetStream
	model   *console.Model // nil without a console
	handler http.Handler
	// stopping ends the console's requests under way when serve stops:
	// Shutdown waits for them, and a live tail would otherwise hold it for
	// its whole timeout and then be cut off mid-stream.
	stopping context.Context
	stop     context.CancelFunc
}

// buildConsole makes the console, once the bridge (whose registry holds
// the in-flight gauges) and the rules are there.
func (s *service) buildConsole() error {
	p := &s.console
	p.stopping, p.stop = context.WithCancel(context.Background())
	cfg := console.Config{Token: s.cfg.AdminToken, SecureCookies: s.cfg.ConsoleSecureCookies, TrustedOrigins: s.cfg.ConsoleOrigins}
	if cfg.Token != "" {
		js, err := jetstream.New(s.nc)
		if err != nil {
			return fmt.Errorf("console: JetStream: %w", err)
		}
		p.js, p.model = js, console.NewModel(console.ModelConfig{})
		n := s.bridge.Names()
		cfg.Store, cfg.Rules, cfg.Model = s.store, &p.rules, p.model
		cfg.InFlight = console.GaugesOf(s.bridge.Registry())
		cfg.JetStream, cfg.EventStream, cfg.Consumer, cfg.EventPrefix = js, n.EventStream, n.Consumer, n.EventPrefix
		cfg.Logger = s.log.With("component", "console")
		cfg.Secrets = p.tokens.secrets
	}
	c, err := console.New(cfg)
	if err != nil {
		return err
	}
	p.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer context.AfterFunc(p.stopping, cancel)()
		c.ServeHTTP(w, r.WithContext(ctx))
	})
	return nil
}

// runConsole keeps the console's read model up to date from the output
// stream until ctx ends, and then ends the console's requests under way.
// The function it returns waits until all of that has stopped.
func (s *service) runConsole(ctx context.Context) (wait func()) {
	var g errgroup.Group
	g.Go(func() error {
		<-ctx.Done()
		s.console.stop()
		return nil
	})
	if m := s.console.model; m != nil {
		n := s.bridge.Names()
		fc := console.FeedConfig{Stream: n.OutputStream, Prefix: n.Prefix}
		g.Go(func() error { return m.Follow(ctx, s.console.js, fc) })
	}
	return func() { _ = g.Wait() } // Follow returns only when ctx ends, with nil
}

// tokenMemo is the state's token store, remembering the access tokens in
// use. No console page should ever hold one; the console scrubs these from
// every response as a last line of defence.
type tokenMemo struct {
	wechat.TokenStore

	mu sync.Mutex
	// by key: the token in use and the one before it, which WeChat still
	// honours for a few minutes.
	seen map[string][2]string
}

func newTokenMemo(st wechat.TokenStore) *tokenMemo {
	return &tokenMemo{TokenStore: st, seen: map[string][2]string{}}
}

func (m *tokenMemo) LoadToken(ctx context.Context, key string) (string, time.Time, error) {
	v, exp, err := m.TokenStore.LoadToken(ctx, key)
	if err == nil {
		m.remember(key, v)
	}
	return v, exp, err
}

func (m *tokenMemo) SaveToken(ctx context.Context, key, token string, expiresAt time.Time) error {
	m.remember(key, token)
	return m.TokenStore.SaveToken(ctx, key, token, expiresAt)
}

func (m *tokenMemo) remember(key, v string) {
	if v == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur := m.seen[key]; cur[0] != v {
		m.seen[key] = [2]string{v, cur[0]}
	}
}

// secrets are the tokens remembered. (The client also keeps its
// force_refresh budget under a key of its own: a count, too short for the
// console to scrub.)
func (m *tokenMemo) secrets() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, 2*len(m.seen))
	for _, v := range m.seen {
		for _, t := range v {
			if t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}
