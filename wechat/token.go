package wechat

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// TokenStore keeps access tokens across restarts. key identifies the app and
// the token endpoint. LoadToken returns "" when it has nothing for key.
// storage.DB satisfies it.
type TokenStore interface {
	LoadToken(ctx context.Context, key string) (token string, expiresAt time.Time, err error)
	SaveToken(ctx context.Context, key, token string, expiresAt time.Time) error
}

type storedToken struct {
	value     string
	expiresAt time.Time
}

// expiryMargin: a token this close to expiry is not handed out, so that a
// call started with it does not arrive after it lapsed.
const expiryMargin = 30 * time.Second

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

// tokenSource hands out one app's access token. At most one fetch runs at a
// time; callers that need a token while it runs wait for its result.
type tokenSource struct {
	c   *Client
	app App
	key string

	mu        sync.Mutex
	cur       storedToken
	refreshAt time.Time
	loaded    bool
	fetching  chan struct{} // closed when the running fetch ends
	fetchErr  error
}

func newTokenSource(c *Client, app App) *tokenSource {
	mode := "stable"
	if app.TokenMode == TokenLegacy {
		mode = "token"
	}
	return &tokenSource{c: c, app: app, key: app.AppID + "/" + mode}
}

func (s *tokenSource) usable(now time.Time) bool {
	return s.cur.value != "" && now.Add(expiryMargin).Before(s.cur.expiresAt)
}

// due says whether the token should be replaced ahead of its expiry. A
// token that was handed out with a short life (less than twice
// RefreshBefore) is replaced at half its life, never in a loop.
func (s *tokenSource) due(now time.Time) bool {
	return !now.Before(s.refreshAt)
}

func (s *tokenSource) get(ctx context.Context) (string, error) {
	s.mu.Lock()
	if !s.loaded {
		s.loaded = true
		if v, exp, err := s.c.cfg.Tokens.LoadToken(ctx, s.key); err == nil && v != "" {
			s.setLocked(storedToken{v, exp}, s.c.cfg.Now())
		}
	}
	for {
		now := s.c.cfg.Now()
		if s.usable(now) {
			if s.due(now) && s.fetching == nil {
				// Refresh ahead in the background; the current token stays
				// valid meanwhile.
				s.fetching = make(chan struct{})
				go s.fetch()
			}
			v := s.cur.value
			s.mu.Unlock()
			return v, nil
		}
		if s.fetching == nil {
			s.fetching = make(chan struct{})
			go s.fetch()
		}
		wait := s.fetching
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		s.mu.Lock()
		if s.fetchErr != nil && !s.usable(s.c.cfg.Now()) {
			err := s.fetchErr
			s.mu.Unlock()
			return "", err
		}
	}
}

// invalidate drops the cached token if it is still tok: a caller that saw
// an older token fail must not throw away a newer one.
func (s *tokenSource) invalidate(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.value == tok {
		s.cur = storedToken{}
	}
}

func (s *tokenSource) setLocked(t storedToken, now time.Time) {
	s.cur = t
	life := t.expiresAt.Sub(now)
	ahead := s.c.cfg.RefreshBefore
	if ahead > life/2 {
		ahead = life / 2
	}
	s.refreshAt = t.expiresAt.Add(-ahead)
}

func (s *tokenSource) fetch() {
	ctx, cancel := context.WithTimeout(context.Background(), s.c.cfg.Timeout)
	defer cancel()
	t, err := s.request(ctx)
	if err == nil {
		if serr := s.c.cfg.Tokens.SaveToken(ctx, s.key, t.value, t.expiresAt); serr != nil {
			s.c.cfg.Logger.Warn("cannot store access token", "appid", s.app.AppID, "err", serr)
		}
	} else {
		s.c.cfg.Logger.Error("access token fetch failed", "appid", s.app.AppID, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.setLocked(t, s.c.cfg.Now())
	}
	s.fetchErr = err
	close(s.fetching)
	s.fetching = nil
}

type tokenAnswer struct {
	apiStatus
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

func (s *tokenSource) request(ctx context.Context) (storedToken, error) {
	var out tokenAnswer
	var err error
	path := pathStableToken
	now := s.c.cfg.Now()
	if s.app.TokenMode == TokenLegacy {
		path = pathToken
		q := url.Values{"grant_type": {"client_credential"}, "appid": {s.app.AppID}, "secret": {s.app.Secret}}
		err = s.c.do(ctx, http.MethodGet, path, q, nil, &out)
	} else {
		body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": s.app.AppID, "secret": s.app.Secret})
		err = s.c.do(ctx, http.MethodPost, path, nil, body, &out)
	}
	if err == nil {
		err = out.err(path)
	}
	if err != nil {
		return storedToken{}, fmt.Errorf("fetch access token for %s: %w", s.app.AppID, err)
	}
	if out.AccessToken == "" || out.ExpiresIn <= 0 {
		return storedToken{}, fmt.Errorf("fetch access token for %s: answer has no token", s.app.AppID)
	}
	return storedToken{out.AccessToken, now.Add(time.Duration(out.ExpiresIn) * time.Second)}, nil
}
