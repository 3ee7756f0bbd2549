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
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultBaseURL is where WeChat's server API lives.
const DefaultBaseURL = "https://api.weixin.qq.com"

const (
	pathToken       = "/cgi-bin/token"
	pathStableToken = "/cgi-bin/stable_token"
	pathSend        = "/cgi-bin/message/subscribe/send"
)

// Config configures a Client. The zero value of every field has a sensible
// default.
type Config struct {
	// BaseURL of the WeChat API; an emulator's URL in tests.
	BaseURL string
	// HTTPClient is shared by every call. Default: a pooled client sized for
	// many concurrent sends.
	HTTPClient *http.Client
	// Timeout bounds each HTTP call. Default 10s.
	Timeout time.Duration
	// Tokens keeps access tokens across restarts. Default: memory only.
	Tokens TokenStore
	// RefreshBefore is how long before expiry a token is replaced. Default 5m.
	RefreshBefore time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
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
		c.RefreshBefore = 5 * time.Minute
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
// concurrent sends, and bounded dial and TLS handshakes.
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
type Client struct {
	cfg  Config
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
	return &Client{cfg: cfg, apps: map[string]*appState{}}, nil
}

// SetApp registers app under name, or replaces it. The cached token is kept
// when the appid, secret and mode are unchanged.
func (c *Client) SetApp(name string, app App) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.apps[name]; ok && old.app == app {
		return
	}
	c.apps[name] = &appState{name: name, app: app, tok: newTokenSource(c, app)}
}

// Apps lists the registered app names.
func (c *Client) Apps() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	names := make([]string, 0, len(c.apps))
	for n := range c.apps {
		names = append(names, n)
	}
	return names
}

// ErrUnknownApp is returned for an app name that was never registered.
var ErrUnknownApp = errors.New("wechat: unknown app")

func (c *Client) app(name string) (*appState, error) {
	c.mu.RLock()
	a, ok := c.apps[name]
	c.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownApp, name)
	}
	return a, nil
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

// Send sends one subscribe message and returns WeChat's msgid, a decimal
// string (msgids exceed 2^53 and must not pass through float64).
func (c *Client) Send(ctx context.Context, app string, m Message) (string, error) {
	body := sendBody{ToUser: m.ToUser, TemplateID: m.TemplateID, Page: m.Page, State: m.State, Lang: m.Lang,
		Data: make(map[string]keywordValue, len(m.Data))}
	for k, v := range m.Data {
		body.Data[k] = keywordValue{Value: v}
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return "", fmt.Errorf("encode subscribe message: %w", err)
	}
	var out struct {
		apiStatus
		MsgID json.Number `json:"msgid"`
	}
	if err := c.callWithToken(ctx, app, http.MethodPost, pathSend, nil, payload, &out); err != nil {
		return "", err
	}
	return out.MsgID.String(), nil
}

// apiStatus is the errcode/errmsg pair every WeChat answer may carry.
type apiStatus struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

func (s apiStatus) err(path string) error {
	if s.ErrCode == 0 {
		return nil
	}
	return &APIError{Code: s.ErrCode, Msg: s.ErrMsg, Path: path}
}

type statusCarrier interface{ status() apiStatus }

func (s apiStatus) status() apiStatus { return s }

// callWithToken calls an API that takes ?access_token=. When WeChat rejects
// the token, the token is dropped (only if it is still the one that failed),
// a new one is fetched once and the call is retried once.
func (c *Client) callWithToken(ctx context.Context, app, method, path string, query url.Values, body []byte, out statusCarrier) error {
	a, err := c.app(app)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		tok, err := a.tok.get(ctx)
		if err != nil {
			return fmt.Errorf("app %s: %w", app, err)
		}
		q := url.Values{}
		for k, v := range query {
			q[k] = v
		}
		q.Set("access_token", tok)
		err = c.do(ctx, method, path, q, body, out)
		if err == nil {
			err = out.status().err(path)
		}
		if err != nil && errors.Is(err, ErrTokenInvalid) && attempt == 0 {
			a.tok.invalidate(tok)
			continue
		}
		if err != nil {
			return fmt.Errorf("app %s: %w", app, err)
		}
		return nil
	}
}

// do performs one HTTP call and decodes the JSON answer into out. Errors
// never carry the query string (it holds the token or the secret).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	u := c.cfg.BaseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("build request %s: %w", path, redact(err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return &transportError{op: method + " " + path, err: redact(err), uncertain: !beforeSending(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return &transportError{op: "read " + path, err: redact(err)}
	}
	if resp.StatusCode >= 500 {
		return &transportError{op: method + " " + path, err: fmt.Errorf("HTTP %d", resp.StatusCode)}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &transportError{op: "decode " + path, err: err}
	}
	return nil
}

// beforeSending reports whether a failed request certainly never reached
// the server: the connection could not even be made.
func beforeSending(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// redact removes the query string from any URL an error carries.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		u := ue.URL
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i] + "?REDACTED"
		}
		return &url.Error{Op: ue.Op, URL: u, Err: ue.Err}
	}
	return err
}
