// Package wechattest is an in-process WeChat emulator for tests, benchmarks
// and `wxbridge emulate`. It serves the same paths, JSON shapes and errcodes
// as api.weixin.qq.com for the APIs wxbridge uses, keeps per-user
// subscription state, and records every accepted send so tests can assert on
// exactly what was sent.
//
// An Emulator is safe for concurrent use.
package wechattest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a template's subscription kind.
type Kind int

const (
	OneTime Kind = iota
	LongTerm
)

// Template is a subscribe-message template registered with an app.
type Template struct {
	ID    string
	Title string
	Kind  Kind
	// Keywords maps keyword keys ("thing1") to their types ("thing").
	Keywords map[string]string
}

// Sent is one send WeChat accepted.
type Sent struct {
	AppID      string
	MsgID      string
	ToUser     string
	TemplateID string
	Page       string
	State      string
	Lang       string
	Data       map[string]string
	At         time.Time
}

// Options configure an Emulator.
type Options struct {
	// TokenTTL is the expires_in of issued tokens. Default 7200s.
	TokenTTL time.Duration
	// AutoUsers makes unknown openids valid users, as in `serve --emulator`,
	// where people bind made-up openids. Tests leave it off: an unknown
	// openid then gets 40003, as WeChat answers.
	AutoUsers bool
	// AutoSubscribe grants unlimited sends to every user, for demos without a
	// subscription flow. Default off: one-time templates need credits.
	AutoSubscribe bool
	Now           func() time.Time
}

// Emulator is a fake api.weixin.qq.com.
type Emulator struct {
	opts  Options
	mu    sync.Mutex
	apps  map[string]*app // by appid
	sends []Sent
	msgID atomic.Uint64
	mux   *http.ServeMux
}

type app struct {
	appid, secret string
	tokens        map[string]time.Time // token -> expiry
	stable        string
	templates     map[string]Template
	users         map[string]*user // by openid
}

type user struct {
	credits  map[string]int  // one-time template -> sends left
	longTerm map[string]bool // long-term template -> accepted
}

// New returns an Emulator with no apps.
func New(opts Options) *Emulator {
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 7200 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Emulator{opts: opts, apps: map[string]*app{}, mux: http.NewServeMux()}
	// msgids are 19-digit numbers, above 2^53, as WeChat's are.
	e.msgID.Store(1864323726461255680)
	e.mux.HandleFunc("POST /cgi-bin/stable_token", e.stableToken)
	e.mux.HandleFunc("POST /cgi-bin/message/subscribe/send", e.send)
	return e
}

// ServeHTTP serves the WeChat API.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { e.mux.ServeHTTP(w, r) }

// AddApp registers a Mini Program.
func (e *Emulator) AddApp(appid, secret string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.apps[appid]; ok {
		a.secret = secret
		return
	}
	e.apps[appid] = &app{appid: appid, secret: secret, tokens: map[string]time.Time{},
		templates: map[string]Template{}, users: map[string]*user{}}
}

// AddTemplate registers a template with an app added before.
func (e *Emulator) AddTemplate(appid string, t Template) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.apps[appid].templates[t.ID] = t
}

// AddUser makes openid a user of appid.
func (e *Emulator) AddUser(appid, openid string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.userLocked(e.apps[appid], openid, true)
}

// Accept records that the user accepted templateID once: one more send for
// a one-time template, unlimited sends for a long-term one.
func (e *Emulator) Accept(appid, openid, templateID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.apps[appid]
	u := e.userLocked(a, openid, true)
	if a.templates[templateID].Kind == LongTerm {
		u.longTerm[templateID] = true
		return
	}
	u.credits[templateID]++
}

// Sends returns every send accepted so far, in order.
func (e *Emulator) Sends() []Sent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Sent(nil), e.sends...)
}

func (e *Emulator) userLocked(a *app, openid string, create bool) *user {
	u, ok := a.users[openid]
	if !ok && create {
		u = &user{credits: map[string]int{}, longTerm: map[string]bool{}}
		a.users[openid] = u
	}
	return u
}

type errAnswer struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// fail answers like WeChat does: HTTP 200 with errcode and errmsg, the
// errmsg ending with a request id.
func fail(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, errAnswer{code, msg + " rid: " + rid()})
}

func rid() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:16] + "-" + h[16:]
}

func newToken() string {
	var b [48]byte
	_, _ = rand.Read(b[:])
	return "EMU_" + strings.ToUpper(hex.EncodeToString(b[:]))
}

func (e *Emulator) stableToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, 47001, "data format error")
		return
	}
	if req.GrantType != "client_credential" {
		fail(w, 40002, "invalid grant_type")
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	a, ok := e.apps[req.AppID]
	if !ok {
		fail(w, 40013, "invalid appid")
		return
	}
	if req.Secret != a.secret {
		fail(w, 40125, "invalid appsecret")
		return
	}
	now := e.opts.Now()
	exp, ok := a.tokens[a.stable]
	if !ok || req.ForceRefresh || !now.Before(exp) {
		a.stable = newToken()
		exp = now.Add(e.opts.TokenTTL)
		a.tokens[a.stable] = exp
	}
	writeJSON(w, map[string]any{"access_token": a.stable, "expires_in": int64(exp.Sub(now).Seconds())})
}

// appForToken finds the app a token belongs to and answers 40001 or 42001
// like WeChat when it is unknown or expired.
func (e *Emulator) appForToken(w http.ResponseWriter, r *http.Request) *app {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		fail(w, 41001, "access_token missing")
		return nil
	}
	now := e.opts.Now()
	for _, a := range e.apps {
		if exp, ok := a.tokens[tok]; ok {
			if !now.Before(exp) {
				fail(w, 42001, "access_token expired")
				return nil
			}
			return a
		}
	}
	fail(w, 40001, "invalid credential, access_token is invalid or not latest")
	return nil
}

func (e *Emulator) send(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ToUser     string `json:"touser"`
		TemplateID string `json:"template_id"`
		Page       string `json:"page"`
		State      string `json:"miniprogram_state"`
		Lang       string `json:"lang"`
		Data       map[string]struct {
			Value string `json:"value"`
		} `json:"data"`
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.appForToken(w, r)
	if a == nil {
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, 47001, "data format error")
		return
	}
	u := e.userLocked(a, req.ToUser, e.opts.AutoUsers && req.ToUser != "")
	if u == nil {
		fail(w, 40003, "invalid openid")
		return
	}
	t, ok := a.templates[req.TemplateID]
	if !ok {
		fail(w, 40037, "invalid template_id")
		return
	}
	data := map[string]string{}
	for k, v := range req.Data {
		if _, ok := t.Keywords[k]; !ok {
			fail(w, 47003, "argument invalid! data."+k+".value invalid")
			return
		}
		data[k] = v.Value
	}
	if !e.opts.AutoSubscribe {
		switch {
		case t.Kind == LongTerm && u.longTerm[t.ID]:
		case t.Kind == OneTime && u.credits[t.ID] > 0:
			u.credits[t.ID]--
		default:
			fail(w, 43101, "user refuse to accept the msg")
			return
		}
	}
	id := e.msgID.Add(1)
	msgid := jsonNumber(id)
	e.sends = append(e.sends, Sent{AppID: a.appid, MsgID: string(msgid), ToUser: req.ToUser, TemplateID: t.ID,
		Page: req.Page, State: req.State, Lang: req.Lang, Data: data, At: e.opts.Now()})
	writeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok", "msgid": msgid})
}

func jsonNumber(n uint64) json.Number {
	return json.Number(strconv.FormatUint(n, 10))
}
