package wechattest

import (
	"encoding/json"
	"net/url"
	"strings"
	"time"
)

// tokenOverlap is how long an old token stays valid once a new one exists:
// "the platform guarantees that old and new tokens are both valid for 5
// minutes" (getAccessToken), and stable_token renews 5 minutes before
// expiry.
const tokenOverlap = 5 * time.Minute

// Limits of stable_token's force_refresh: 20 a day, 30 s apart; a refused
// force refresh "does not refresh" and answers like normal mode.
const (
	forceRefreshPerDay = 20
	forceRefreshGap    = 30 * time.Second
)

// chinaTime is the zone WeChat's daily quotas reset in.
var chinaTime = time.FixedZone("CST", 8*3600)

// token is one issued access token. Its fields are guarded by its app's
// mutex.
type token struct {
	value   string
	app     *app
	stable  bool
	expires time.Time
	// revoked is when the token stops working although it has not
	// expired (a newer token, a force refresh, InvalidateTokens). Zero:
	// never.
	revoked time.Time
}

// tokenFamily is the tokens of one endpoint: /cgi-bin/token and
// stable_token are "completely isolated" from each other.
type tokenFamily struct {
	current *token
	all     []*token
}

// state says what a call made with t at now is answered.
func (t *token) state(now time.Time) (code int, msg string) {
	if !t.revoked.IsZero() && !now.Before(t.revoked) {
		return 40001, "invalid credential, access_token is invalid or not latest"
	}
	if !now.Before(t.expires) {
		return 42001, "access_token expired"
	}
	return 0, ""
}

func (t *token) valid(now time.Time) bool {
	code, _ := t.state(now)
	return code == 0
}

// revokeAt makes t stop working at when, unless it already stops earlier.
func (t *token) revokeAt(when time.Time) {
	if t.revoked.IsZero() || when.Before(t.revoked) {
		t.revoked = when
	}
}

// issueLocked makes a new current token for the family. Tokens dead for
// longer than a TTL are forgotten, so a long benchmark does not grow the
// index; a call with one of them gets 40001 instead of 42001, which a
// client treats the same way.
func (e *Emulator) issueLocked(a *app, f *tokenFamily, stable bool, now time.Time) *token {
	keep := f.all[:0]
	for _, t := range f.all {
		end := t.expires
		if !t.revoked.IsZero() && t.revoked.Before(end) {
			end = t.revoked
		}
		if now.Sub(end) > e.opts.TokenTTL {
			e.tokens.Delete(t.value)
			continue
		}
		keep = append(keep, t)
	}
	t := &token{value: "EMU_" + randomString(120, alnum), app: a, stable: stable, expires: now.Add(e.opts.TokenTTL)}
	f.all = append(keep, t)
	f.current = t
	e.tokens.Store(t.value, t)
	return t
}

func (c *call) answerToken(t *token, now time.Time) {
	b := make([]byte, 0, 180)
	b = append(b, `{"access_token":"`...)
	b = append(b, t.value...)
	b = append(b, `","expires_in":`...)
	b = append(b, itoa(int64(t.expires.Sub(now)/time.Second))...)
	b = append(b, '}')
	c.reply(b)
}

// credentials checks appid and secret the way both token endpoints do and
// returns the app, locked, or answers the error and returns nil.
func (c *call) credentials(appid, secret, grantType string) *app {
	switch {
	case appid == "":
		c.fail(41002, "appid missing")
		return nil
	case secret == "":
		c.fail(41004, "appsecret missing")
		return nil
	case grantType != "client_credential":
		c.fail(40002, "invalid grant_type")
		return nil
	}
	a := c.e.app(appid)
	if a == nil {
		c.fail(40013, "invalid appid")
		return nil
	}
	a.mu.Lock()
	if secret != a.secret {
		a.mu.Unlock()
		c.fail(40125, "invalid appsecret")
		return nil
	}
	return a
}

// token serves GET /cgi-bin/token: every fetch issues a new token, and the
// previous ones stop working tokenOverlap later.
func (c *call) token() {
	q := c.r.URL.Query()
	a := c.credentials(q.Get("appid"), q.Get("secret"), q.Get("grant_type"))
	if a == nil {
		return
	}
	defer a.mu.Unlock()
	now := c.e.opts.Now()
	for _, t := range a.legacy.all {
		t.revokeAt(now.Add(c.e.overlap))
	}
	c.answerToken(c.e.issueLocked(a, &a.legacy, false, now), now)
}

// stableToken serves POST /cgi-bin/stable_token. Normal mode returns the
// current token while it has more than the overlap left, and a new one
// after that (the old one works until it expires). force_refresh revokes
// every stable token of the app at once and issues a new one, at most 20
// times a (China) day and 30 s apart; otherwise it answers as normal mode.
func (c *call) stableToken() {
	body, err := c.body()
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if err != nil || json.Unmarshal(body, &req) != nil {
		c.fail(47001, "data format error")
		return
	}
	a := c.credentials(req.AppID, req.Secret, req.GrantType)
	if a == nil {
		return
	}
	defer a.mu.Unlock()
	now := c.e.opts.Now()
	if req.ForceRefresh && a.mayForceLocked(now) {
		for _, t := range a.stable.all {
			t.revokeAt(now)
		}
		c.answerToken(c.e.issueLocked(a, &a.stable, true, now), now)
		return
	}
	cur := a.stable.current
	if cur == nil || !cur.valid(now) || cur.expires.Sub(now) <= c.e.overlap {
		cur = c.e.issueLocked(a, &a.stable, true, now)
	}
	c.answerToken(cur, now)
}

func (a *app) mayForceLocked(now time.Time) bool {
	y, d := now.In(chinaTime).Year(), now.In(chinaTime).YearDay()
	day := y*1000 + d
	if day != a.forceDay {
		a.forceDay, a.forces = day, 0
	}
	if a.forces >= forceRefreshPerDay || (!a.lastForce.IsZero() && now.Sub(a.lastForce) < forceRefreshGap) {
		return false
	}
	a.forces++
	a.lastForce = now
	return true
}

// InvalidateTokens makes every token of the app stop working now, as when
// someone else fetched or force-refreshed: the next call gets 40001.
func (e *Emulator) InvalidateTokens(appid string) {
	a := e.mustApp("InvalidateTokens", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.invalidateLocked(e.opts.Now())
}

func (a *app) invalidateLocked(now time.Time) {
	for _, t := range a.legacy.all {
		t.revokeAt(now)
	}
	for _, t := range a.stable.all {
		t.revokeAt(now)
	}
}

// authorize finds the app of the call's access_token and returns it locked,
// or answers 41001, 40001 or 42001 and returns nil.
func (c *call) authorize() *app {
	v := queryValue(c.r.URL.RawQuery, "access_token")
	if v == "" {
		c.fail(41001, "access_token missing")
		return nil
	}
	x, ok := c.e.tokens.Load(v)
	if !ok {
		c.fail(40001, "invalid credential, access_token is invalid or not latest")
		return nil
	}
	t := x.(*token)
	t.app.mu.Lock()
	if code, msg := t.state(c.e.opts.Now()); code != 0 {
		t.app.mu.Unlock()
		c.fail(code, msg)
		return nil
	}
	return t.app
}

// queryValue is url.Values.Get for one key, without building the map: the
// send path is hot in benchmarks.
func queryValue(raw, key string) string {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != key {
			continue
		}
		if u, err := url.QueryUnescape(v); err == nil {
			return u
		}
		return ""
	}
	return ""
}
