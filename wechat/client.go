package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBaseURL is where WeChat's server API lives.
const DefaultBaseURL = "https://api.weixin.qq.com"

const (
	pathToken       = "/cgi-bin/token"
	pathStableToken = "/cgi-bin/stable_token"
	pathSend        = "/cgi-bin/message/subscribe/send"
)

// maxAnswer bounds how much of an answer is read; WeChat's are a few KB.
const maxAnswer = 4 << 20

// Config configures a Client. The zero value of every field has a sensible
// default.
type Config struct {
	// BaseURL of the WeChat API; an emulator's URL in tests.
	BaseURL string
	// HTTPClient is shared by every call. Default: NewHTTPClient().
	HTTPClient *http.Client
	// Timeout bounds each HTTP call (each attempt, when a call is retried
	// after a token refresh). Default 10s.
	Timeout time.Duration
	// Tokens keeps access tokens across restarts. Default: memory only.
	Tokens TokenStore
	// RefreshBefore is how long before expiry a token is replaced in the
	// background. Default 4m: inside the last five minutes, in which
	// stable_token in normal mode already hands out the next token (so one
	// fetch gets it) while the old one stays valid.
	RefreshBefore time.Duration
	// Logger receives token life-cycle events and failures. It never sees a
	// secret. Default: discard.
	Logger *slog.Logger
	// Now is the clock for token expiry, refresh and backoff. Default
	// time.Now.
	Now func() time.Time
	// TokenFetchFailed, optional, learns of every access-token fetch that
	// failed (not the callers turned away during the backoff after it):
	// app is the name given to SetApp, err matches ErrTokenFetch and, when
	// WeChat answered, wraps its *APIError. It runs on the fetch's
	// goroutine before the waiting callers are released, so it must be
	// quick (count it, say); it lets a caller keep metrics without this
	// package knowing of any.
	TokenFetchFailed func(app string, err error)
}

func (c *Config) setDefaults() {
	if c.BaseURL == "" {
		c.BaseURL = DefaultBaseURL
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = NewHTTPClient()
	}
	if c.Tokens == nil {
		c.Tokens = &memoryTokens{m: map[string]storedToken{}}
	}
	if c.RefreshBefore <= 0 {
		c.RefreshBefore = 4 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("wechat base URL %q: want http(s)://host", c.BaseURL)
	}
	return nil
}

// NewHTTPClient returns the client wxbridge uses for WeChat: keep-alive
// connections pooled per host, enough idle connections for hundreds of
// concurrent sends (so a burst does not open and close connections), and
// bounded dial and TLS handshakes. It has no overall timeout: every call
// carries its own through its context.
func NewHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 15 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{Transport: tr}
}

// TokenMode says which endpoint an app's access token comes from.
type TokenMode int

const (
	// TokenStable uses POST /cgi-bin/stable_token in normal mode: several
	// processes sharing one app do not invalidate each other's tokens.
	TokenStable TokenMode = iota
	// TokenLegacy uses GET /cgi-bin/token. Every fetch invalidates the
	// previous token (after a 5 minute overlap): only one process may fetch.
	TokenLegacy
)

// App is the credentials of one Mini Program.
type App struct {
	AppID     string
	Secret    string
	TokenMode TokenMode
}

// Client calls the WeChat API for one or more apps. Safe for concurrent use.
// Close stops the background token fetches it owns.
type Client struct {
	cfg Config

	// ctx is cancelled by Close; every token fetch runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	life   sync.Mutex // guards closed against wg.Add racing wg.Wait
	closed bool
	wg     sync.WaitGroup

	mu   sync.RWMutex
	apps map[string]*appState
}

type appState struct {
	name string
	app  App
	tok  *tokenSource
}

// New returns a Client; register apps with SetApp.
func New(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{cfg: cfg, ctx: ctx, cancel: cancel, apps: map[string]*appState{}}, nil
}

// Close cancels running token fetches and waits for the goroutines that ran
// them. Calls made after Close fail with ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.life.Lock()
	c.closed = true
	c.life.Unlock()
	c.cancel()
	c.wg.Wait()
	return nil
}

// spawn runs fn on a goroutine the Client owns, unless it is closed.
func (c *Client) spawn(fn func()) bool {
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

// SetApp registers app under name, or replaces it. The cached token is kept
// when the appid, secret and mode are unchanged.
func (c *Client) SetApp(name string, app App) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.apps[name]; ok && old.app == app {
		return
	}
	c.apps[name] = &appState{name: name, app: app, tok: newTokenSource(c, name, app)}
}

// Apps lists the registered app names, sorted.
func (c *Client) Apps() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	names := make([]string, 0, len(c.apps))
	for n := range c.apps {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ErrUnknownApp is returned for an app name that was never registered.
var ErrUnknownApp = errors.New("wechat: unknown app")

func (c *Client) app(name string) (*appState, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	c.mu.RLock()
	a, ok := c.apps[name]
	c.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownApp, name)
	}
	return a, nil
}

// Ready waits until app has a usable access token, fetching one if it must,
// and returns nil; or it returns why there is none. A caller that must not
// start a call it cannot finish (a send whose record would otherwise be left
// in doubt) asks first. An error that matches ErrTokenBackoff was answered
// without any request: the client is waiting (until RetryAt) to try again.
func (c *Client) Ready(ctx context.Context, app string) error {
	a, err := c.app(app)
	if err != nil {
		return err
	}
	_, err = a.tok.get(ctx)
	return err
}

// Message is one subscribe message (subscribeMessage.send).
type Message struct {
	ToUser     string
	TemplateID string
	// Page opened when the card is tapped, e.g. "pages/order?id=7". Optional.
	Page string
	// Data maps keyword keys ("thing1") to their values.
	Data map[string]string
	// State is miniprogram_state: developer, trial or formal (default).
	State string
	// Lang is zh_CN (default), en_US, zh_HK or zh_TW.
	Lang string
}

type sendBody struct {
	ToUser     string                  `json:"touser"`
	TemplateID string                  `json:"template_id"`
	Page       string                  `json:"page,omitempty"`
	Data       map[string]keywordValue `json:"data"`
	State      string                  `json:"miniprogram_state,omitempty"`
	Lang       string                  `json:"lang,omitempty"`
}

type keywordValue struct {
	Value string `json:"value"`
}

// Send sends one subscribe message and returns WeChat's msgid as a decimal
// string: msgids exceed 2^53 and must not pass through float64. The msgid
// is "" when WeChat accepted the message without returning one.
func (c *Client) Send(ctx context.Context, app string, m Message) (string, error) {
	body := sendBody{ToUser: m.ToUser, TemplateID: m.TemplateID, Page: m.Page, State: m.State, Lang: m.Lang,
		Data: make(map[string]keywordValue, len(m.Data))}
	for k, v := range m.Data {
		body.Data[k] = keywordValue{Value: v}
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return "", fmt.Errorf("app %s: encode subscribe message for %s: %w", app, m.ToUser, err)
	}
	data, err := c.callWithToken(ctx, app, http.MethodPost, pathSend, payload)
	if err != nil {
		return "", fmt.Errorf("app %s: send template %s to %s: %w", app, m.TemplateID, m.ToUser, err)
	}
	var out struct {
		// json.Number takes both 1864323726461255681 and "1864323726461255681".
		MsgID json.Number `json:"msgid"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		// The send went through (errcode 0); only the msgid is unreadable.
		return "", fmt.Errorf("app %s: send template %s to %s: read msgid: %w", app, m.TemplateID, m.ToUser, err)
	}
	return out.MsgID.String(), nil
}

// apiStatus is the errcode/errmsg pair every WeChat answer may carry.
type apiStatus struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// callWithToken calls an API that takes ?access_token= and returns the
// answer's body once errcode is 0. When WeChat rejects the token, the token
// is dropped (only if it is still the one that failed), a new one is
// fetched once for all callers and the call is retried once.
func (c *Client) callWithToken(ctx context.Context, app, method, path string, body []byte) ([]byte, error) {
	return c.callWithTokenQuery(ctx, app, method, path, nil, body)
}

// callWithTokenQuery is callWithToken for an API that takes more query
// parameters than the token; query holds no secret.
func (c *Client) callWithTokenQuery(ctx context.Context, app, method, path string, query url.Values, body []byte) ([]byte, error) {
	a, err := c.app(app)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		tok, err := a.tok.get(ctx)
		if err != nil {
			return nil, err
		}
		q := url.Values{"access_token": {tok}}
		for k, v := range query {
			q[k] = v
		}
		data, err := c.do(ctx, request{method: method, path: path, query: q,
			body: body, secrets: []string{tok, a.app.Secret}})
		if attempt == 0 && errors.Is(err, ErrTokenInvalid) {
			var api *APIError
			errors.As(err, &api)
			a.tok.reject(tok, api)
			continue
		}
		return data, err
	}
}

// request is one HTTP call. query and body may hold secrets; secrets lists
// the values that must never show up in an error.
type request struct {
	method, path string
	query        url.Values
	body         []byte
	secrets      []string
}

// sensitiveParams are the query parameters whose values are secrets.
var sensitiveParams = []string{"access_token", "secret", "js_code"}

// do performs one HTTP call and returns the body of a JSON answer whose
// errcode is 0. Errors never carry a secret: URLs in them have the token,
// appsecret and js_code redacted, and errmsgs are scrubbed.
func (c *Client) do(ctx context.Context, r request) ([]byte, error) {
	op := r.method + " " + r.path
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	// Whether the request was completely written decides whether a failure
	// is uncertain: WeChat cannot act on a request it did not fully receive.
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				wrote.Store(true)
			}
		},
	})
	u := c.cfg.BaseURL + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("build request %s: %w", op, redact(err))
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, &transportError{op: op, err: redact(err), uncertain: wrote.Load()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		// The answer was on its way: WeChat has acted.
		return nil, &transportError{op: op, err: fmt.Errorf("read answer: %w", redact(err)), uncertain: true}
	}
	switch {
	case resp.StatusCode >= 500:
		// A gateway that timed out or got a broken answer had forwarded
		// the request; other 5xx mean it was not handled.
		gateway := resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusGatewayTimeout
		return nil, &transportError{op: op, err: fmt.Errorf("HTTP %d", resp.StatusCode), uncertain: gateway}
	case resp.StatusCode != http.StatusOK:
		return nil, &statusError{op: op, status: resp.StatusCode}
	}
	var st apiStatus
	if err := json.Unmarshal(data, &st); err != nil {
		// The body itself is never quoted: a proxy's error page could echo
		// the URL, token included.
		return nil, &transportError{op: op, err: fmt.Errorf("answer is not WeChat JSON (%d bytes of %s): %w",
			len(data), resp.Header.Get("Content-Type"), err)}
	}
	if st.ErrCode != 0 {
		e := &APIError{Code: st.ErrCode, Msg: scrub(st.ErrMsg, r.secrets), Path: r.path}
		// Read on its own and leniently: an odd msgid must not cost the
		// errcode.
		var extra struct{ MsgID looseString }
		if json.Unmarshal(data, &extra) == nil {
			e.MsgID = extra.MsgID.String()
		}
		return nil, e
	}
	return data, nil
}

// redact replaces the values of secret query parameters in any URL an
// error carries.
func redact(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
}

func redactURL(raw string) string {
	base, query, ok := strings.Cut(raw, "?")
	if !ok {
		return raw
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return base + "?REDACTED"
	}
	for _, k := range sensitiveParams {
		if q.Has(k) {
			q.Set(k, "REDACTED")
		}
	}
	return base + "?" + q.Encode()
}
