package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

const stableKey = testAppID + "/stable"

// waitFor polls cond; it synchronises with goroutines the test cannot see
// into, it does not measure time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// gate blocks the fake's handlers until opened; started is closed when the
// first request reaches it.
type gate struct {
	started chan struct{}
	once    sync.Once
	open    chan struct{}
	close   sync.Once
}

func newGate() *gate { return &gate{started: make(chan struct{}), open: make(chan struct{})} }

func (g *gate) wait(ctx context.Context) {
	g.once.Do(func() { close(g.started) })
	select {
	case <-g.open:
	case <-ctx.Done():
	}
}

func (g *gate) release() { g.close.Do(func() { close(g.open) }) }

// awaitStarted waits for the first request to reach the gate.
func (g *gate) awaitStarted(t *testing.T, what string) {
	t.Helper()
	await(t, g.started, what)
}

// await waits for ch to be closed; a bug shows as a failure, not a hang.
func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestTokenFetchedOnceAndReused(t *testing.T) {
	e := newTestEnv(t)
	for range 3 {
		e.mustSend(t)
	}
	calls := e.fake.tokenCalls()
	if len(calls) != 1 {
		t.Fatalf("token fetched %d times for 3 sends, want 1", len(calls))
	}
	want := tokenCall{Path: "/cgi-bin/stable_token", Method: http.MethodPost, AppID: testAppID, Secret: testSecret}
	if calls[0] != want {
		t.Errorf("token request = %+v, want %+v (stable_token, normal mode)", calls[0], want)
	}
	for _, s := range e.fake.sendCalls() {
		if s.Token != "TOKEN-"+testAppID+"-1" {
			t.Errorf("send used token %q", s.Token)
		}
	}
	e.store.waitSaved(t, stableKey)
	if got := e.store.get(stableKey); got.token != "TOKEN-"+testAppID+"-1" || !got.exp.Equal(e.clock.Now().Add(7200*time.Second)) {
		t.Errorf("stored %+v, want the token expiring in 7200s", got)
	}
}

func TestTokenExpiry(t *testing.T) {
	tests := []struct {
		name    string
		advance time.Duration
		fetches int
	}{
		{"fresh token is reused", time.Hour, 1},
		{"token in its last 30s is not handed out", 7200*time.Second - 29*time.Second, 2},
		{"expired token is replaced", 7201 * time.Second, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.mustSend(t)
			e.clock.Advance(tt.advance)
			e.mustSend(t)
			if n := len(e.fake.tokenCalls()); n != tt.fetches {
				t.Fatalf("%d token fetches, want %d", n, tt.fetches)
			}
			sends := e.fake.sendCalls()
			if want := fmt.Sprintf("TOKEN-%s-%d", testAppID, tt.fetches); sends[1].Token != want {
				t.Errorf("second send used %q, want %q", sends[1].Token, want)
			}
		})
	}
}

func TestTokenRefreshAheadInBackground(t *testing.T) {
	e := newTestEnv(t)
	e.mustSend(t)

	g := newGate()
	defer g.release()
	e.fake.setToken(func(c tokenCall) any {
		g.wait(context.Background())
		return e.fake.newToken(c.AppID, 7200)
	})
	// Inside the 4-minute refresh window: the token is still good.
	e.clock.Advance(7200*time.Second - 3*time.Minute)
	for range 3 {
		// These complete while the refresh is blocked: callers with a valid
		// token never wait for it.
		e.mustSend(t)
	}
	g.awaitStarted(t, "the background refresh")
	if n := len(e.fake.tokenCalls()); n != 2 {
		t.Fatalf("%d token fetches, want 2: one background refresh for several callers", n)
	}
	g.release()
	old, fresh := "TOKEN-"+testAppID+"-1", "TOKEN-"+testAppID+"-2"
	// The refreshed token is stored once it is in use. (Not "two saves":
	// the first token's save is skipped if the refresh overtook it.)
	waitFor(t, "the refreshed token to be stored", func() bool { return e.store.get(stableKey).token == fresh })
	e.mustSend(t)

	sends := e.fake.sendCalls()
	for i, s := range sends {
		want := old
		if i == len(sends)-1 {
			want = fresh
		}
		if s.Token != want {
			t.Errorf("send %d used %q, want %q", i, s.Token, want)
		}
	}
}

func TestConcurrentCallersShareOneFetch(t *testing.T) {
	tests := []struct {
		name  string
		prime bool // have a token first, then let it expire
	}{
		{"first token", false},
		{"after expiry", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			if tt.prime {
				e.mustSend(t)
				e.clock.Advance(2 * time.Hour)
			}
			before := len(e.fake.tokenCalls())
			g := newGate()
			defer g.release()
			e.fake.setToken(func(c tokenCall) any {
				g.wait(context.Background())
				return e.fake.newToken(c.AppID, 7200)
			})

			const callers = 32
			errs := make(chan error, callers)
			for range callers {
				go func() {
					_, err := e.client.Send(context.Background(), "main", testMessage)
					errs <- err
				}()
			}
			g.awaitStarted(t, "the token fetch")
			waitFor(t, "all callers to wait for the fetch", func() bool {
				return wechat.TokenWaiters(e.client, "main") == callers
			})
			if n := len(e.fake.tokenCalls()) - before; n != 1 {
				t.Fatalf("%d fetches started for %d waiting callers, want 1", n, callers)
			}
			g.release()
			for range callers {
				if err := <-errs; err != nil {
					t.Errorf("send: %v", err)
				}
			}
			if n := len(e.fake.tokenCalls()) - before; n != 1 {
				t.Errorf("%d fetches, want 1", n)
			}
			tokens := map[string]int{}
			for _, s := range e.fake.sendCalls()[len(e.fake.sendCalls())-callers:] {
				tokens[s.Token]++
			}
			if len(tokens) != 1 {
				t.Errorf("callers used tokens %v, want one shared token", tokens)
			}
		})
	}
}

func TestCallerGivesUpWaitingWithoutCancellingTheFetch(t *testing.T) {
	e := newTestEnv(t)
	g := newGate()
	defer g.release()
	e.fake.setToken(func(c tokenCall) any {
		g.wait(context.Background())
		return e.fake.newToken(c.AppID, 7200)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.client.Send(ctx, "main", testMessage)
		done <- err
	}()
	g.awaitStarted(t, "the token fetch")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("send = %v, want context.Canceled", err)
	}
	g.release()
	e.store.waitSaved(t, stableKey)
	e.mustSend(t)
	if n := len(e.fake.tokenCalls()); n != 1 {
		t.Errorf("%d token fetches, want 1: a caller leaving must not cancel the shared fetch", n)
	}
}

func TestRejectedTokenIsReplacedAndCallRetriedOnce(t *testing.T) {
	tests := []struct {
		name       string
		code       int
		rejectAll  bool // the fresh token is rejected too
		wantErr    error
		wantSends  int
		wantTokens int
	}{
		{"40001 invalid credential", 40001, false, nil, 2, 2},
		{"40014 invalid access_token", 40014, false, nil, 2, 2},
		{"42001 expired", 42001, false, nil, 2, 2},
		{"rejected again after refresh", 40001, true, wechat.ErrTokenInvalid, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			first := "TOKEN-" + testAppID + "-1"
			e.fake.setSend(func(c sendCall) any {
				if c.Token == first || tt.rejectAll {
					return errAnswer(tt.code, "access_token is invalid or not latest")
				}
				return map[string]any{"errcode": 0, "errmsg": "ok", "msgid": 1}
			})
			_, err := e.send(t)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("send: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("send = %v, want %v", err, tt.wantErr)
			}
			if n := len(e.fake.sendCalls()); n != tt.wantSends {
				t.Errorf("%d send attempts, want %d (one retry)", n, tt.wantSends)
			}
			calls := e.fake.tokenCalls()
			if len(calls) != tt.wantTokens {
				t.Errorf("%d token fetches, want %d", len(calls), tt.wantTokens)
			}
			for _, c := range calls {
				if c.Force {
					t.Errorf("force_refresh used although stable_token handed out a new token")
				}
			}
			if got := e.fake.sendCalls()[1].Token; got != "TOKEN-"+testAppID+"-2" {
				t.Errorf("retry used %q, want the new token", got)
			}
			if n := e.logs.count("WeChat rejected the access token; fetching another"); n != 1 {
				t.Errorf("rejection logged %d times, want 1", n)
			}
		})
	}
}

func TestConcurrentRejectionsCauseOneFetch(t *testing.T) {
	e := newTestEnv(t)
	const callers = 16
	first := "TOKEN-" + testAppID + "-1"
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	e.fake.setSend(func(c sendCall) any {
		if c.Token != first {
			return map[string]any{"errcode": 0, "errmsg": "ok", "msgid": 7}
		}
		// Hold every caller until all of them sent with the old token,
		// so that all of them see it rejected.
		mu.Lock()
		arrived++
		if arrived == callers {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Errorf("only %d callers sent with the first token", callers)
		}
		return errAnswer(40001, "invalid credential")
	})
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := e.client.Send(context.Background(), "main", testMessage)
			errs <- err
		}()
	}
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("send: %v", err)
		}
	}
	if n := len(e.fake.tokenCalls()); n != 2 {
		t.Errorf("%d token fetches, want 2: the first and one shared replacement", n)
	}
	if n := len(e.fake.sendCalls()); n != 2*callers {
		t.Errorf("%d send attempts, want %d", n, 2*callers)
	}
}

func TestStaleRejectionKeepsNewerToken(t *testing.T) {
	e := newTestEnv(t)
	e.mustSend(t) // caches TOKEN-1
	first := "TOKEN-" + testAppID + "-1"
	g := newGate()
	defer g.release()
	var once sync.Once
	e.fake.setSend(func(c sendCall) any {
		if c.Token == first {
			blocked := false
			once.Do(func() { blocked = true })
			if blocked {
				g.wait(context.Background())
			}
			return errAnswer(42001, "access_token expired")
		}
		return map[string]any{"errcode": 0, "errmsg": "ok", "msgid": 8}
	})
	slow := make(chan error, 1)
	go func() {
		_, err := e.client.Send(context.Background(), "main", testMessage)
		slow <- err
	}()
	g.awaitStarted(t, "the slow send") // it is at WeChat with TOKEN-1

	e.clock.Advance(7201 * time.Second)
	e.mustSend(t) // fetches TOKEN-2 and uses it

	g.release() // now TOKEN-1 is reported expired to the slow caller
	if err := <-slow; err != nil {
		t.Fatalf("slow send: %v", err)
	}
	if n := len(e.fake.tokenCalls()); n != 2 {
		t.Errorf("%d token fetches, want 2: a stale rejection must not drop the newer token", n)
	}
	sends := e.fake.sendCalls()
	if last := sends[len(sends)-1].Token; last != "TOKEN-"+testAppID+"-2" {
		t.Errorf("slow caller retried with %q, want TOKEN-2", last)
	}
}

// stableFake models stable_token: normal mode hands out the current token,
// force_refresh replaces it. Tokens in bad are refused by send.
type stableFake struct {
	mu      sync.Mutex
	current string
	n       int
	forces  int
	bad     map[string]bool
}

func (s *stableFake) install(e *testEnv) {
	s.bad = map[string]bool{}
	e.fake.setToken(func(c tokenCall) any {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.current == "" || c.Force {
			if c.Force {
				s.forces++
			}
			s.n++
			s.current = fmt.Sprintf("TOKEN-stable-%d", s.n)
		}
		return map[string]any{"access_token": s.current, "expires_in": 7200}
	})
	e.fake.setSend(func(c sendCall) any {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.bad[c.Token] {
			return errAnswer(40001, "invalid credential, access_token is invalid or not latest")
		}
		return map[string]any{"errcode": 0, "errmsg": "ok", "msgid": 9}
	})
}

// spoil makes WeChat refuse the current token while stable_token keeps
// handing it out.
func (s *stableFake) spoil() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad[s.current] = true
}

func (s *stableFake) forced() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.forces
}

func TestForceRefreshOnlyWhenSameTokenComesBack(t *testing.T) {
	e := newTestEnv(t)
	sf := &stableFake{}
	sf.install(e)
	e.mustSend(t)
	sf.spoil()
	e.mustSend(t)

	calls := e.fake.tokenCalls()
	var forced []bool
	for _, c := range calls {
		forced = append(forced, c.Force)
	}
	if fmt.Sprint(forced) != "[false false true]" {
		t.Fatalf("token requests forced = %v, want [false false true]: normal first, force only after the same token came back", forced)
	}
	if got := e.store.get(stableKey + "/force_refresh"); got.token != "1" {
		t.Errorf("stored force budget = %+v, want 1 used", got)
	}
	if n := e.logs.count("forcing an access token refresh: stable_token keeps handing back the token WeChat rejected"); n != 1 {
		t.Errorf("force logged %d times, want 1", n)
	}
}

// slowStore holds the save of one token until released, as a store may be
// slow for one write (an fsync) and not for the next.
type slowStore struct {
	*testStore
	slow    string
	release chan struct{}
}

func (s *slowStore) SaveToken(ctx context.Context, key, token string, exp time.Time) error {
	if token == s.slow {
		<-s.release
	}
	return s.testStore.SaveToken(ctx, key, token, exp)
}

// A flight stores its token after releasing its callers, so the next
// flight can fetch and store a newer token first. The older token must not
// then overwrite it: a restart would load a token already forced away.
func TestOlderTokenNeverOverwritesANewerOneInTheStore(t *testing.T) {
	var slow *slowStore
	e := newTestEnv(t, func(c *wechat.Config) {
		slow = &slowStore{testStore: c.Tokens.(*testStore), slow: "TOKEN-stable-1", release: make(chan struct{})}
		c.Tokens = slow
	})
	sf := &stableFake{}
	sf.install(e)
	e.mustSend(t) // TOKEN-stable-1, whose save is held
	sf.spoil()
	e.mustSend(t) // rejected, forced away: TOKEN-stable-2
	close(slow.release)
	if err := e.client.Close(); err != nil { // waits for both saves
		t.Fatal(err)
	}
	if got := e.store.get(stableKey).token; got != "TOKEN-stable-2" {
		t.Fatalf("store holds %q after both saves, want the newer TOKEN-stable-2", got)
	}
}

func TestForceRefreshLimits(t *testing.T) {
	e := newTestEnv(t)
	sf := &stableFake{}
	sf.install(e)
	e.mustSend(t)

	// spoilAndSend makes the current token bad and sends; it reports
	// whether the send got through (which needs a force_refresh).
	spoilAndSend := func(t *testing.T) error {
		t.Helper()
		sf.spoil()
		_, err := e.send(t)
		return err
	}

	if err := spoilAndSend(t); err != nil {
		t.Fatalf("first force: %v", err)
	}
	e.clock.Advance(10 * time.Second)
	err := spoilAndSend(t)
	if !errors.Is(err, wechat.ErrTokenFetch) || !errors.Is(err, wechat.ErrTransient) || errors.Is(err, wechat.ErrUncertain) {
		t.Fatalf("force within 30s: err = %v, want ErrTokenFetch+ErrTransient, certain", err)
	}
	if !strings.Contains(err.Error(), "less than 30s ago") {
		t.Errorf("error does not say why: %v", err)
	}
	if sf.forced() != 1 {
		t.Fatalf("%d forces, want 1", sf.forced())
	}

	// 30 s later the same rejected token may be forced away.
	e.clock.Advance(25 * time.Second)
	if _, err := e.send(t); err != nil {
		t.Fatalf("force after 30s: %v", err)
	}
	for sf.forced() < 20 {
		e.clock.Advance(31 * time.Second)
		if err := spoilAndSend(t); err != nil {
			t.Fatalf("force %d: %v", sf.forced()+1, err)
		}
	}
	e.clock.Advance(31 * time.Second)
	err = spoilAndSend(t)
	if !errors.Is(err, wechat.ErrTokenFetch) || !strings.Contains(err.Error(), "daily limit") {
		t.Fatalf("21st force: err = %v, want the daily limit", err)
	}
	if sf.forced() != 20 {
		t.Fatalf("%d forces, want 20", sf.forced())
	}

	// A restart does not reset the budget: it is kept in the store. (The
	// token is stored after the fetch returns: wait for the last one.)
	waitFor(t, "the last token to be stored", func() bool {
		sf.mu.Lock()
		defer sf.mu.Unlock()
		return e.store.get(stableKey).token == sf.current
	})
	restarted, err := wechat.New(wechat.Config{BaseURL: e.fake.URL(), Tokens: e.store, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()
	restarted.SetApp("main", wechat.App{AppID: testAppID, Secret: testSecret})
	_, err = restarted.Send(context.Background(), "main", testMessage)
	if !errors.Is(err, wechat.ErrTokenFetch) || !strings.Contains(err.Error(), "daily limit") {
		t.Fatalf("after restart: err = %v, want the daily limit", err)
	}

	// The next UTC day has a new budget.
	e.clock.Advance(24 * time.Hour)
	if _, err := restarted.Send(context.Background(), "main", testMessage); err != nil {
		t.Fatalf("next day: %v", err)
	}
	if sf.forced() != 21 {
		t.Errorf("%d forces, want 21", sf.forced())
	}
}

func TestTokenFetchFailure(t *testing.T) {
	tests := []struct {
		name      string
		answer    any
		transient bool
		want      string // in the error
	}{
		{"40013 invalid appid", errAnswer(40013, "invalid appid"), false, "40013"},
		{"40125 invalid secret, echoed", errAnswer(40125, "invalid appsecret "+testSecret), false, "40125"},
		{"40164 IP not whitelisted", errAnswer(40164, "invalid ip 1.2.3.4, not in whitelist"), false, "API IP whitelist"},
		{"40243 secret frozen", errAnswer(40243, "AppSecret已被冻结"), false, "40243"},
		{"45009 daily quota", errAnswer(45009, "reach max api daily quota limit"), false, "45009"},
		{"40001 on the token endpoint is a wrong secret", errAnswer(40001, "invalid credential"), false, "40001"},
		{"-1 system busy", errAnswer(-1, "system error"), true, "-1"},
		{"45011 minute quota", errAnswer(45011, "api minute-quota reach limit"), true, "45011"},
		{"HTTP 503", http.StatusServiceUnavailable, true, "HTTP 503"},
		{"no token in answer", map[string]any{"errcode": 0}, true, "no access_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.fake.setToken(func(tokenCall) any { return tt.answer })
			_, err := e.send(t)
			if !errors.Is(err, wechat.ErrTokenFetch) {
				t.Fatalf("err = %v, want ErrTokenFetch", err)
			}
			if errors.Is(err, wechat.ErrTransient) != tt.transient {
				t.Errorf("transient = %v, want %v: %v", !tt.transient, tt.transient, err)
			}
			if errors.Is(err, wechat.ErrTokenInvalid) || errors.Is(err, wechat.ErrUncertain) {
				t.Errorf("a token fetch failure must be neither ErrTokenInvalid nor ErrUncertain: %v", err)
			}
			if !strings.Contains(err.Error(), testAppID) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name the appid and %q", err, tt.want)
			}
			assertNoSecrets(t, "error", err.Error())

			// Within the backoff the failure is handed back, not refetched.
			_, err2 := e.send(t)
			if err2 == nil || err2.Error() != err.Error() {
				t.Errorf("second send = %v, want the same failure", err2)
			}
			if n := len(e.fake.tokenCalls()); n != 1 {
				t.Errorf("%d token fetches during backoff, want 1", n)
			}
			if len(e.fake.sendCalls()) != 0 {
				t.Errorf("a send was made without a token")
			}
			if n := e.logs.count("access token fetch failed"); n != 1 {
				t.Errorf("failure logged %d times, want once", n)
			}
			if !strings.Contains(e.logs.String(), "appid="+testAppID) {
				t.Errorf("log does not name the appid: %s", e.logs)
			}
			assertNoSecrets(t, "log", e.logs.String())
		})
	}
}

func TestTokenFetchBackoffGrowsAndIsCapped(t *testing.T) {
	e := newTestEnv(t)
	e.fake.setToken(func(tokenCall) any { return errAnswer(-1, "system error") })
	fetches := func() int { return len(e.fake.tokenCalls()) }

	if _, err := e.send(t); err == nil {
		t.Fatal("send succeeded without a token")
	}
	for i, gap := range []time.Duration{2, 4, 8, 16, 32, 60, 60} {
		gap *= time.Second
		e.clock.Advance(gap - time.Second)
		_, _ = e.send(t)
		if fetches() != i+1 {
			t.Fatalf("refetched %v after failure %d, want a backoff of %v", gap-time.Second, i+1, gap)
		}
		e.clock.Advance(time.Second)
		_, _ = e.send(t)
		if fetches() != i+2 {
			t.Fatalf("no refetch %v after failure %d", gap, i+1)
		}
	}

	// Recovery resets the backoff.
	e.fake.setToken(nil)
	e.clock.Advance(time.Minute)
	e.mustSend(t)
	e.clock.Advance(3 * time.Hour)
	e.fake.setToken(func(tokenCall) any { return errAnswer(-1, "system error") })
	_, _ = e.send(t)
	n := fetches()
	e.clock.Advance(2 * time.Second)
	_, _ = e.send(t)
	if fetches() != n+1 {
		t.Errorf("backoff after a success did not start again at 2s")
	}
}

// The hook hears of each failed fetch once, by app name, with WeChat's
// answer when there was one; the callers turned away during the backoff
// and the fetches that succeed are not failures.
func TestTokenFetchFailedHook(t *testing.T) {
	tests := []struct {
		name    string
		answer  any
		errcode int // 0: no *APIError
	}{
		{"40125 invalid secret", errAnswer(40125, "invalid appsecret"), 40125},
		{"-1 system busy", errAnswer(-1, "system error"), -1},
		{"HTTP 503", http.StatusServiceUnavailable, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type call struct {
				app string
				err error
			}
			var mu sync.Mutex
			var calls []call
			e := newTestEnv(t, func(c *wechat.Config) {
				c.TokenFetchFailed = func(app string, err error) {
					mu.Lock()
					defer mu.Unlock()
					calls = append(calls, call{app, err})
				}
			})
			heard := func() []call {
				mu.Lock()
				defer mu.Unlock()
				return append([]call(nil), calls...)
			}
			e.fake.setToken(func(tokenCall) any { return tt.answer })
			_, _ = e.send(t)
			_, _ = e.send(t) // within the backoff: no fetch, no failure to count
			got := heard()
			if len(got) != 1 {
				t.Fatalf("hook called %d times for one failed fetch, want once: %v", len(got), got)
			}
			if got[0].app != "main" || !errors.Is(got[0].err, wechat.ErrTokenFetch) {
				t.Errorf("hook got (%q, %v), want app main and an ErrTokenFetch", got[0].app, got[0].err)
			}
			var api *wechat.APIError
			if errors.As(got[0].err, &api) != (tt.errcode != 0) || tt.errcode != 0 && api.Code != tt.errcode {
				t.Errorf("hook's error %v: want errcode %d (0: none)", got[0].err, tt.errcode)
			}
			assertNoSecrets(t, "hook's error", got[0].err.Error())

			e.clock.Advance(backoffAfterOne)
			_, _ = e.send(t)
			if n := len(heard()); n != 2 {
				t.Errorf("hook called %d times after a second failed fetch, want 2", n)
			}
			e.fake.setToken(nil)
			e.clock.Advance(time.Minute)
			e.mustSend(t)
			if n := len(heard()); n != 2 {
				t.Errorf("a fetch that succeeded reached the hook (%d calls)", n)
			}
		})
	}
}

// backoffAfterOne is the wait before fetching again after one failure.
const backoffAfterOne = 2 * time.Second

func TestBackgroundRefreshFailureKeepsCurrentToken(t *testing.T) {
	e := newTestEnv(t)
	e.mustSend(t)
	e.fake.setToken(func(tokenCall) any { return errAnswer(-1, "system error") })
	e.clock.Advance(7200*time.Second - 3*time.Minute)
	e.mustSend(t) // starts the refresh, which fails
	waitFor(t, "the refresh to fail", func() bool { return e.logs.count("access token fetch failed") == 1 })
	for range 3 {
		e.mustSend(t) // the old token is still good; no refetch inside the backoff
	}
	if n := len(e.fake.tokenCalls()); n != 2 {
		t.Errorf("%d token fetches, want 2", n)
	}
}

func TestRestartReusesStoredToken(t *testing.T) {
	tests := []struct {
		name    string
		advance time.Duration
		mode    wechat.TokenMode
		fetch   bool
	}{
		{"valid stored token is reused", time.Hour, wechat.TokenStable, false},
		{"expired stored token is replaced", 3 * time.Hour, wechat.TokenStable, true},
		{"stable token is not used in legacy mode", time.Minute, wechat.TokenLegacy, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.mustSend(t)
			e.store.waitSaved(t, stableKey)
			e.clock.Advance(tt.advance)

			restarted, err := wechat.New(wechat.Config{BaseURL: e.fake.URL(), Tokens: e.store, Now: e.clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer restarted.Close()
			restarted.SetApp("main", wechat.App{AppID: testAppID, Secret: testSecret, TokenMode: tt.mode})
			if _, err := restarted.Send(context.Background(), "main", testMessage); err != nil {
				t.Fatal(err)
			}
			if fetched := len(e.fake.tokenCalls()) == 2; fetched != tt.fetch {
				t.Errorf("fetched after restart = %v, want %v", fetched, tt.fetch)
			}
		})
	}
}

func TestLegacyTokenMode(t *testing.T) {
	e := newTestEnv(t)
	e.client.SetApp("legacy", wechat.App{AppID: testAppID, Secret: testSecret, TokenMode: wechat.TokenLegacy})
	if _, err := e.client.Send(context.Background(), "legacy", testMessage); err != nil {
		t.Fatal(err)
	}
	want := tokenCall{Path: "/cgi-bin/token", Method: http.MethodGet, AppID: testAppID, Secret: testSecret}
	if calls := e.fake.tokenCalls(); len(calls) != 1 || calls[0] != want {
		t.Fatalf("token requests %+v, want %+v", calls, want)
	}
	e.store.waitSaved(t, testAppID+"/token")
}

func TestShortLivedTokensDoNotCauseAFetchLoop(t *testing.T) {
	e := newTestEnv(t)
	e.fake.setToken(func(c tokenCall) any { return e.fake.newToken(c.AppID, 60) })
	const seconds, step = 300, 3
	for range seconds / step {
		e.mustSend(t)
		e.clock.Advance(step * time.Second)
	}
	// One fetch per 30 s at most (minRefreshGap), and the tokens did get
	// replaced before they lapsed.
	n := len(e.fake.tokenCalls())
	if n > seconds/30+1 || n < seconds/60 {
		t.Errorf("%d token fetches in %ds with 60s tokens, want between %d and %d", n, seconds, seconds/60, seconds/30+1)
	}
}

func TestCloseCancelsFetchAndStopsCalls(t *testing.T) {
	e := newTestEnv(t)
	started := make(chan struct{})
	aborted := make(chan struct{})
	e.fake.setToken(func(c tokenCall) any {
		close(started)
		<-c.ctx.Done() // the client hung up
		close(aborted)
		return errAnswer(-1, "too late")
	})
	done := make(chan error, 1)
	go func() {
		_, err := e.client.Send(context.Background(), "main", testMessage)
		done <- err
	}()
	await(t, started, "the token fetch")
	if err := e.client.Close(); err != nil {
		t.Fatal(err)
	}
	await(t, aborted, "the token fetch to be cancelled")
	if err := <-done; !errors.Is(err, wechat.ErrClosed) {
		t.Errorf("waiting caller got %v, want ErrClosed", err)
	}
	if _, err := e.send(t); !errors.Is(err, wechat.ErrClosed) {
		t.Errorf("send after Close = %v, want ErrClosed", err)
	}
	if _, err := e.client.Code2Session(context.Background(), "main", testCode); !errors.Is(err, wechat.ErrClosed) {
		t.Errorf("code2session after Close = %v, want ErrClosed", err)
	}
	if err := e.client.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
