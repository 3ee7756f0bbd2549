package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// TokenStore keeps access tokens across restarts, so a restarted process
// reuses its token instead of fetching again. key names the app and the
// token endpoint ("wx0123/stable", "wx0123/token": the two endpoints' tokens
// are isolated at WeChat); LoadToken returns "" when it has nothing for key.
// The client also keeps its force_refresh budget under "<key>/force_refresh"
// (the count used today as the token, the last use as expiresAt).
// storage.DB satisfies it.
type TokenStore interface {
	LoadToken(ctx context.Context, key string) (token string, expiresAt time.Time, err error)
	SaveToken(ctx context.Context, key, token string, expiresAt time.Time) error
}

type storedToken struct {
	value     string
	expiresAt time.Time
}

const (
	// expiryMargin: a token this close to expiry is not handed out, so that
	// a call started with it does not arrive after it lapsed. Short-lived
	// tokens get a quarter of their life instead.
	expiryMargin = 30 * time.Second
	// minRefreshGap: background refreshes of one app are at least this far
	// apart, so a WeChat that keeps handing back a token about to expire
	// cannot make the client loop.
	minRefreshGap = 30 * time.Second
	// After a failed fetch, callers get the failure back without a new
	// fetch for backoffMin, doubling per consecutive failure up to
	// backoffMax: a wrong secret must not hammer the token endpoint.
	backoffMin = 2 * time.Second
	backoffMax = time.Minute
	// WeChat's limits on stable_token force_refresh: 20 per day, 30 s apart
	// (otherwise it silently does not refresh).
	forcePerDay = 20
	forceGap    = 30 * time.Second
)

type memoryTokens struct {
	mu sync.Mutex
	m  map[string]storedToken
}

func (s *memoryTokens) LoadToken(_ context.Context, key string) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.m[key]
	return t.value, t.expiresAt, nil
}

func (s *memoryTokens) SaveToken(_ context.Context, key, token string, expiresAt time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = storedToken{token, expiresAt}
	return nil
}

// tokenSource hands out one app's access token. At most one fetch (a
// "flight", run on a goroutine the Client owns) is under way at a time;
// callers without a usable token wait for it, callers with one keep using
// it while it refreshes ahead of expiry.
type tokenSource struct {
	c    *Client
	name string // as given to SetApp
	app  App
	key  string
	path string

	mu          sync.Mutex
	loaded      bool // the store was consulted; only the first flight does
	cur         storedToken
	usableUntil time.Time
	refreshAt   time.Time
	flight      *flight
	waiters     int // callers blocked on flight; for tests
	// rejected is the last token WeChat refused: a fetch that hands it back
	// again got nothing new.
	rejected string
	failures int // consecutive failed fetches
	lastErr  error
	retryAt  time.Time // no fetch before then; callers get lastErr
	force    forceBudget
	// installed counts the tokens installed (setLocked), so that each
	// flight knows which one it stores.
	installed uint64

	// saveMu orders the stores of the token. A flight stores its token
	// after releasing its waiters, so the next flight can run, fetch and
	// store a newer token first; the older one must then not overwrite it,
	// or a restart would load a token already replaced.
	saveMu sync.Mutex
	saved  uint64 // guarded by saveMu: the installed count of the token in the store
}

// flight is one fetch; done is closed when token or err is set.
type flight struct {
	done  chan struct{}
	token string
	err   error
}

// forceBudget tracks force_refresh use for one app. It is persisted through
// the TokenStore so that a crash-looping process cannot exceed WeChat's
// daily limit, and so that restarts do not erase the 30 s spacing.
type forceBudget struct {
	loaded bool
	used   int       // on the UTC day of last
	last   time.Time // last force_refresh
}

func (b forceBudget) usedOn(now time.Time) int {
	ly, lm, ld := b.last.UTC().Date()
	ny, nm, nd := now.UTC().Date()
	if ly == ny && lm == nm && ld == nd {
		return b.used
	}
	return 0
}

func newTokenSource(c *Client, name string, app App) *tokenSource {
	s := &tokenSource{c: c, name: name, app: app, key: app.AppID + "/stable", path: pathStableToken}
	if app.TokenMode == TokenLegacy {
		s.key, s.path = app.AppID+"/token", pathToken
	}
	return s
}

func (s *tokenSource) usableLocked(now time.Time) bool {
	return s.cur.value != "" && now.Before(s.usableUntil)
}

// get returns a token to call with. It never fetches on the caller's
// goroutine: it joins the running flight or starts one.
func (s *tokenSource) get(ctx context.Context) (string, error) {
	s.mu.Lock()
	now := s.c.cfg.Now()
	if s.usableLocked(now) {
		if !now.Before(s.refreshAt) && s.flight == nil && !now.Before(s.retryAt) {
			s.startLocked() // in the background; this token stays valid meanwhile
		}
		tok := s.cur.value
		s.mu.Unlock()
		return tok, nil
	}
	f := s.flight
	if f == nil {
		if now.Before(s.retryAt) {
			err := s.lastErr
			s.mu.Unlock()
			if tfe, ok := err.(*tokenFetchError); ok {
				return "", backoffError{tfe}
			}
			return "", err
		}
		if f = s.startLocked(); f == nil {
			s.mu.Unlock()
			return "", ErrClosed
		}
	}
	s.waiters++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waiters--
		s.mu.Unlock()
	}()
	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", fmt.Errorf("wait for access token of %s: %w", s.app.AppID, ctx.Err())
	}
}

// startLocked starts a flight, or returns nil when the client is closed.
func (s *tokenSource) startLocked() *flight {
	f := &flight{done: make(chan struct{})}
	s.flight = f
	if !s.c.spawn(func() { s.run(f) }) {
		s.flight = nil
		return nil
	}
	return f
}

// reject drops tok after WeChat refused it, unless it was already replaced:
// a caller that saw an older token fail must not throw away a newer one,
// and many callers failing with the same token cause one fetch, not many.
func (s *tokenSource) reject(tok string, api *APIError) {
	s.mu.Lock()
	dropped := s.cur.value == tok
	if dropped {
		s.cur = storedToken{}
		s.rejected = tok
	}
	s.mu.Unlock()
	if dropped && api != nil {
		s.c.cfg.Logger.Warn("WeChat rejected the access token; fetching another", "appid", s.app.AppID,
			"errcode", api.Code, "path", api.Path)
	}
}

// run is one flight: get a token, publish it (or the failure) to the
// waiting callers, then store it.
func (s *tokenSource) run(f *flight) {
	ctx := s.c.ctx
	t, fromStore, err := s.obtain(ctx)
	if err != nil && ctx.Err() != nil {
		err = ErrClosed
	}

	s.mu.Lock()
	now := s.c.cfg.Now()
	var gen uint64
	if err == nil {
		s.setLocked(t, now)
		s.installed++
		gen = s.installed
		s.failures, s.lastErr, s.retryAt = 0, nil, time.Time{}
		f.token = t.value
	} else {
		s.failures++
		s.retryAt = now.Add(backoff(s.failures))
		err = &tokenFetchError{appid: s.app.AppID, err: err, retryAt: s.retryAt}
		s.lastErr, f.err = err, err
	}
	failures := s.failures
	s.flight = nil
	s.mu.Unlock()

	log := s.c.cfg.Logger
	if err != nil {
		// Logged before the waiters are released, so that whoever sees
		// the failure can also find it in the log.
		if !errors.Is(err, ErrClosed) {
			log.Error("access token fetch failed", "appid", s.app.AppID, "path", s.path,
				"consecutive_failures", failures, "err", err)
			if hook := s.c.cfg.TokenFetchFailed; hook != nil {
				hook(s.name, err)
			}
		}
		close(f.done)
		return
	}
	close(f.done)
	if fromStore {
		log.Debug("access token reused from store", "appid", s.app.AppID, "expires_at", t.expiresAt)
		return
	}
	// Stored after the waiters were released, but still on an owned
	// goroutine: Close waits for it, and shutdown does not lose it.
	log.Debug("access token fetched", "appid", s.app.AppID, "path", s.path, "expires_at", t.expiresAt)
	s.store(ctx, t, gen)
}

// store saves the gen-th installed token, unless a newer one was saved
// meanwhile.
func (s *tokenSource) store(ctx context.Context, t storedToken, gen uint64) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if gen < s.saved {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.c.cfg.Timeout)
	defer cancel()
	if err := s.c.cfg.Tokens.SaveToken(sctx, s.key, t.value, t.expiresAt); err != nil {
		s.c.cfg.Logger.Warn("cannot store access token; it is kept in memory", "appid", s.app.AppID, "err", err)
		return
	}
	s.saved = gen
}

func backoff(failures int) time.Duration {
	d := backoffMin
	for i := 1; i < failures && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// setLocked installs a new token and plans its replacement: RefreshBefore
// ahead of expiry, but never earlier than half its life nor sooner than
// minRefreshGap from now, so short-lived tokens cannot cause a fetch loop.
func (s *tokenSource) setLocked(t storedToken, now time.Time) {
	life := t.expiresAt.Sub(now)
	s.cur = t
	s.usableUntil = t.expiresAt.Add(-min(expiryMargin, life/4))
	s.refreshAt = t.expiresAt.Add(-min(s.c.cfg.RefreshBefore, life/2))
	if earliest := now.Add(minRefreshGap); s.refreshAt.Before(earliest) {
		s.refreshAt = earliest
	}
	if t.value != s.rejected {
		s.rejected = ""
	}
}

// obtain gets a token for a flight: from the store on the first flight (a
// restart reuses the token), else from WeChat, forcing a refresh only when
// stable_token hands back the very token WeChat just rejected.
func (s *tokenSource) obtain(ctx context.Context) (t storedToken, fromStore bool, err error) {
	s.mu.Lock()
	load := !s.loaded
	s.loaded = true
	s.mu.Unlock()
	if load {
		v, exp, err := s.c.cfg.Tokens.LoadToken(ctx, s.key)
		if err != nil {
			s.c.cfg.Logger.Warn("cannot load stored access token; fetching one", "appid", s.app.AppID, "err", err)
		} else if v != "" && s.c.cfg.Now().Add(expiryMargin).Before(exp) {
			return storedToken{v, exp}, true, nil
		}
	}

	t, err = s.request(ctx, false)
	if err != nil || s.app.TokenMode != TokenStable {
		return t, false, err
	}
	s.mu.Lock()
	rejected := s.rejected
	s.mu.Unlock()
	if rejected == "" || t.value != rejected {
		return t, false, nil
	}
	// Normal mode keeps handing out the token WeChat refuses (another
	// party force-refreshed, or WeChat's caches disagree): only a forced
	// refresh gets a new one.
	if err := s.reserveForce(ctx); err != nil {
		return storedToken{}, false, err
	}
	t, err = s.request(ctx, true)
	if err != nil {
		return storedToken{}, false, err
	}
	if t.value == rejected {
		return storedToken{}, false, fmt.Errorf("force_refresh handed back the rejected token: %w", ErrTransient)
	}
	return t, false, nil
}

func (s *tokenSource) forceKey() string { return s.key + "/force_refresh" }

// reserveForce takes one force_refresh from the app's budget, or says why
// it may not. The budget is saved before the forced call is made, so that a
// crash right after it still counts.
func (s *tokenSource) reserveForce(ctx context.Context) error {
	s.mu.Lock()
	load := !s.force.loaded
	s.mu.Unlock()
	b := forceBudget{loaded: true}
	if load {
		v, last, err := s.c.cfg.Tokens.LoadToken(ctx, s.forceKey())
		if err != nil {
			s.c.cfg.Logger.Warn("cannot load force_refresh budget", "appid", s.app.AppID, "err", err)
		} else if n, perr := strconv.Atoi(v); v != "" && perr == nil {
			b.used, b.last = n, last
		}
	}

	s.mu.Lock()
	if load {
		s.force = b
	}
	now := s.c.cfg.Now()
	used := s.force.usedOn(now)
	var refuse error
	switch {
	case used >= forcePerDay:
		refuse = fmt.Errorf("force_refresh already used %d times today (UTC), WeChat's daily limit", used)
	case !s.force.last.IsZero() && now.Sub(s.force.last) < forceGap:
		refuse = fmt.Errorf("last force_refresh was at %s, less than %s ago", s.force.last.UTC().Format(time.RFC3339), forceGap)
	default:
		s.force.used, s.force.last = used+1, now
	}
	b = s.force
	s.mu.Unlock()

	if refuse != nil {
		return fmt.Errorf("WeChat rejected the access token and stable_token handed it back; not forcing a refresh: %w (%w)",
			refuse, ErrTransient)
	}
	if err := s.c.cfg.Tokens.SaveToken(ctx, s.forceKey(), strconv.Itoa(b.used), b.last); err != nil {
		s.c.cfg.Logger.Warn("cannot store force_refresh budget", "appid", s.app.AppID, "err", err)
	}
	s.c.cfg.Logger.Warn("forcing an access token refresh: stable_token keeps handing back the token WeChat rejected",
		"appid", s.app.AppID, "force_refreshes_today", b.used)
	return nil
}

type stableTokenBody struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh,omitempty"`
}

// request asks WeChat for a token. Its errors are never uncertain: see
// tokenFetchError.
func (s *tokenSource) request(ctx context.Context, force bool) (storedToken, error) {
	// The token's life counts from before the request: WeChat started it
	// no earlier than that.
	start := s.c.cfg.Now()
	r := request{path: s.path, secrets: []string{s.app.Secret}}
	if s.app.TokenMode == TokenLegacy {
		r.method = http.MethodGet
		r.query = url.Values{"grant_type": {"client_credential"}, "appid": {s.app.AppID}, "secret": {s.app.Secret}}
	} else {
		r.method = http.MethodPost
		body, err := json.Marshal(stableTokenBody{GrantType: "client_credential", AppID: s.app.AppID,
			Secret: s.app.Secret, ForceRefresh: force})
		if err != nil {
			return storedToken{}, err
		}
		r.body = body
	}
	data, err := s.c.do(ctx, r)
	if err != nil {
		return storedToken{}, certain(err)
	}
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.AccessToken == "" || out.ExpiresIn <= 0 {
		return storedToken{}, &transportError{op: r.method + " " + r.path, err: errors.New("answer has no access_token and expires_in")}
	}
	return storedToken{out.AccessToken, start.Add(time.Duration(out.ExpiresIn) * time.Second)}, nil
}
