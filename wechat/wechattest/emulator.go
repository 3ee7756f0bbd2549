package wechattest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

// Kind is a template's subscription kind.
type Kind int

const (
	// OneTime templates (type 2): each accept is worth exactly one send.
	OneTime Kind = iota
	// LongTerm templates (type 3): one accept allows sends until a reject.
	LongTerm
	// TemplateMessage templates belong to an official account and go to
	// its followers through /cgi-bin/message/template/send, with no
	// subscription: following is the consent. An official account's
	// OneTime and LongTerm templates are its subscription notifications
	// (/cgi-bin/message/subscribe/bizsend).
	TemplateMessage
)

func (k Kind) String() string {
	switch k {
	case LongTerm:
		return "long_term"
	case TemplateMessage:
		return "template_message"
	}
	return "one_time"
}

// Template is a subscribe-message template registered with an app.
type Template struct {
	ID    string
	Title string
	Kind  Kind
	// Keywords maps keyword keys ("thing1") to their types ("thing"); see
	// reference §2 for the types. A template without keywords takes any key
	// and checks it against the type its prefix names ("thing1" is a thing).
	Keywords map[string]string
	// Labels are the keyword names gettemplate shows in content
	// ("会议时间:{{date2.DATA}}"). Default: the key.
	Labels map[string]string
	// Enums lists the values an enum keyword accepts, by key. An enum
	// keyword without a list accepts any value of at most 20 characters.
	Enums map[string][]string
}

// Sent is one send WeChat accepted, on any of the three send paths.
type Sent struct {
	AppID string `json:"appid"`
	// Path is the API that took it: PathSend (a Mini Program subscribe
	// message), PathTemplateSend (a template message) or PathBizSend (an
	// official account's subscription notification).
	Path       string `json:"path"`
	MsgID      string `json:"msgid"`
	ToUser     string `json:"touser"`
	TemplateID string `json:"template_id"`
	// Page: the Mini Program page (subscribe/send), or the web page of a
	// subscription notification (bizsend).
	Page  string `json:"page,omitempty"`
	State string `json:"miniprogram_state,omitempty"`
	Lang  string `json:"lang,omitempty"`
	// URL is a template message's web page.
	URL string `json:"url,omitempty"`
	// MiniProgram is the mini program page an official account's card
	// opens.
	MiniProgram *wechat.MiniProgram `json:"miniprogram,omitempty"`
	// ClientMsgID is a template message's client_msg_id.
	ClientMsgID string            `json:"client_msg_id,omitempty"`
	Data        map[string]string `json:"data"`
	At          time.Time         `json:"at"`
}

// Options configure an Emulator.
type Options struct {
	// TokenTTL is the life of issued tokens (expires_in). Default 7200s.
	// Old and new tokens overlap for 5 minutes, or half the TTL when it is
	// shorter than 10 minutes.
	TokenTTL time.Duration
	// AutoUsers makes unknown openids valid users, as in `serve --emulator`,
	// where people bind made-up openids. Tests leave it off: an unknown
	// openid then gets 40003, as WeChat answers.
	AutoUsers bool
	// AutoSubscribe lets every user receive every template without credits,
	// for demos without a subscription flow. An explicit reject or ban
	// still refuses (43101). Default off: one-time templates need credits.
	AutoSubscribe bool
	// AutoApps, when set, makes every appid an app, registered on first
	// use with the secret and callback of AutoApps, for `wxbridge emulate`
	// without a rules file, where the developer's backend keeps its own
	// appid. Default nil: an unknown appid gets 40013, as WeChat answers.
	AutoApps *AppDefaults
	// AutoTemplates makes a template id an app does not know a one-time
	// template on its first use (a send, Subscribe, Accept...), titled with
	// its id and with no keywords registered: each data key is then checked
	// against the type its name says ("thing1" is a thing). Default off: an
	// unknown template id gets 40037.
	AutoTemplates bool
	// FollowerPage is how many openids one /cgi-bin/user/get page holds.
	// Default 10,000, as WeChat's; tests make it small to page.
	FollowerPage int
	// Now is the clock of token and code expiry, rate windows and
	// timestamps. Default time.Now.
	Now func() time.Time
	// Logger hears about pushes (debug when delivered, warn when every try
	// failed), for people running the emulator by hand. Default: silent.
	Logger *slog.Logger
}

// AppDefaults are what Options.AutoApps gives every app it registers.
type AppDefaults struct {
	// Secret is every app's appsecret.
	Secret string
	// Callback, when its URL is set, is where every app's events are
	// pushed; see Callback.Validate.
	Callback Callback
}

// Emulator is a fake api.weixin.qq.com. It is an http.Handler.
type Emulator struct {
	opts    Options
	overlap time.Duration

	mu   sync.RWMutex // guards apps; each app has its own lock for its state
	apps map[string]*app

	tokens sync.Map // token value -> *token, so a call finds its app without a lock

	sendsMu sync.Mutex
	sends   []Sent

	msgID  atomic.Uint64
	ridSeq atomic.Uint64
	ridPfx uint32

	faults atomic.Pointer[faultState]
	calls  callCounter

	errsMu sync.Mutex
	errs   map[int]int // error answers by errcode

	push pusher

	// holdHook runs while a send holds its recipient; tests use it to make
	// two sends overlap without relying on timing.
	holdHook func()
}

// app is one Mini Program or official account. Its mutex guards
// everything below it.
type app struct {
	appid string
	// official: an official account (服务号), not a Mini Program.
	official bool

	mu        sync.Mutex
	secret    string
	templates map[string]*template
	order     []string        // template ids in registration order, for gettemplate
	pages     map[string]bool // nil: pages are not checked
	users     map[string]*user
	codes     map[string]*loginCode
	legacy    tokenFamily
	stable    tokenFamily
	// autoTemplates: Options.AutoTemplates, read under mu like templates.
	autoTemplates bool
	forceDay      int
	forces        int
	lastForce     time.Time
	sendsOK       int
	callback      *callbackState
	// clientMsgs remembers the template messages sent with a
	// client_msg_id, by openid and id, for clientMsgWindow.
	clientMsgs map[clientMsgKey]clientMsg
}

// New returns an Emulator with no apps. Call Close when done with it if it
// pushes callbacks.
func New(opts Options) *Emulator {
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 7200 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Emulator{opts: opts, apps: map[string]*app{}, errs: map[int]int{}}
	e.overlap = min(tokenOverlap, opts.TokenTTL/2)
	// msgids are 19-digit numbers, above 2^53, as WeChat's are.
	e.msgID.Store(1864323726461255680)
	var b [4]byte
	_, _ = rand.Read(b[:])
	e.ridPfx = binary.BigEndian.Uint32(b[:])
	e.push.init(opts.Logger)
	return e
}

// Close stops the goroutines that deliver pushes, waits for them, and ends
// requests held by the timeout fault. Pushes queued afterwards are refused.
func (e *Emulator) Close() error {
	e.push.close()
	return nil
}

// AddApp registers a Mini Program, or changes its secret.
func (e *Emulator) AddApp(appid, secret string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.apps[appid]; ok {
		a.mu.Lock()
		a.secret = secret
		a.mu.Unlock()
		return
	}
	e.apps[appid] = e.newApp(appid, secret)
}

// AddOfficialAccount registers an official account (服务号), or changes
// its secret. It gets tokens like a Mini Program; its templates are
// TemplateMessage templates and subscription notifications (OneTime,
// LongTerm); its users are followers or not (Follow, AddFollower).
func (e *Emulator) AddOfficialAccount(appid, secret string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.apps[appid]; ok {
		a.mu.Lock()
		a.secret, a.official = secret, true
		a.mu.Unlock()
		return
	}
	a := e.newApp(appid, secret)
	a.official = true
	e.apps[appid] = a
}

func (e *Emulator) newApp(appid, secret string) *app {
	return &app{appid: appid, secret: secret, templates: map[string]*template{},
		users: map[string]*user{}, codes: map[string]*loginCode{}, autoTemplates: e.opts.AutoTemplates,
		clientMsgs: map[clientMsgKey]clientMsg{}}
}

// app returns the app with appid, or nil; with Options.AutoApps it
// registers one that is not known yet.
func (e *Emulator) app(appid string) *app {
	e.mu.RLock()
	a := e.apps[appid]
	e.mu.RUnlock()
	if a != nil || e.opts.AutoApps == nil || appid == "" {
		return a
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if a := e.apps[appid]; a != nil {
		return a // registered meanwhile
	}
	a = e.newApp(appid, e.opts.AutoApps.Secret)
	if cb := e.opts.AutoApps.Callback; cb.URL != "" {
		st, err := newCallbackState(appid, cb)
		if err != nil {
			// Callback.Validate is the place to find this out; the app
			// still works, without pushes.
			e.opts.Logger.Warn("no callback for an app the emulator registered", "appid", appid, "err", err)
		}
		a.callback = st
	}
	e.apps[appid] = a
	return a
}

// template returns the app's template id, registering it first with
// Options.AutoTemplates. The app's lock must be held.
func (a *app) template(id string) (*template, bool) {
	t, ok := a.templates[id]
	if ok || !a.autoTemplates || id == "" {
		return t, ok
	}
	t = compileTemplate(Template{ID: id, Title: id, Kind: OneTime})
	a.templates[id] = t
	a.order = append(a.order, id)
	return t, true
}

// mustApp is for the methods tests call: an unknown appid is a mistake in
// the test's setup, and a loud one is cheaper to find.
func (e *Emulator) mustApp(method, appid string) *app {
	a := e.app(appid)
	if a == nil {
		panic(fmt.Sprintf("wechattest: %s: unknown appid %q (call AddApp first)", method, appid))
	}
	return a
}

// AppIDs lists the registered apps.
func (e *Emulator) AppIDs() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	ids := make([]string, 0, len(e.apps))
	for id := range e.apps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// AddTemplate registers a template with an app, or replaces it.
func (e *Emulator) AddTemplate(appid string, t Template) {
	a := e.mustApp("AddTemplate", appid)
	compiled := compileTemplate(t)
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.Kind == TemplateMessage && !a.official {
		panic(fmt.Sprintf("wechattest: AddTemplate: %s is a Mini Program; template messages belong to official accounts", appid))
	}
	if old, ok := a.templates[t.ID]; ok {
		compiled.banned = old.banned
	} else {
		a.order = append(a.order, t.ID)
	}
	a.templates[t.ID] = compiled
}

// SetPages registers the pages of the app's released version (as in
// app.json, "pages/index/index"). From then on a formal send whose page is
// not one of them gets 41030. Without a call, pages are not checked.
func (e *Emulator) SetPages(appid string, pages ...string) {
	a := e.mustApp("SetPages", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pages = map[string]bool{}
	for _, p := range pages {
		a.pages[pagePath(p)] = true
	}
}

// AddUser makes openid a user of appid.
func (e *Emulator) AddUser(appid, openid string) {
	a := e.mustApp("AddUser", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.user(openid, true)
}

// Errors returns how many error answers (non-zero errcodes) WeChat's paths
// gave, by errcode, faults included: 43108 for concurrent sends to one
// user, 43004 for template messages to non-followers, -1 for injected
// system errors...
func (e *Emulator) Errors() map[int]int {
	e.errsMu.Lock()
	defer e.errsMu.Unlock()
	out := make(map[int]int, len(e.errs))
	for k, v := range e.errs {
		out[k] = v
	}
	return out
}

func (e *Emulator) countError(code int) {
	e.errsMu.Lock()
	e.errs[code]++
	e.errsMu.Unlock()
}

// Sends returns every send accepted so far, in order.
func (e *Emulator) Sends() []Sent {
	e.sendsMu.Lock()
	defer e.sendsMu.Unlock()
	return append([]Sent(nil), e.sends...)
}

func (e *Emulator) record(s Sent) {
	e.sendsMu.Lock()
	e.sends = append(e.sends, s)
	e.sendsMu.Unlock()
}

// rid makes the request id WeChat appends to every errmsg
// ("693398e6-48ac74fd-2c498819"): cheap, unique within the process.
func (e *Emulator) rid() string {
	var b [26]byte
	n := e.ridSeq.Add(1)
	var raw [12]byte
	binary.BigEndian.PutUint32(raw[0:4], uint32(e.opts.Now().Unix()))
	binary.BigEndian.PutUint32(raw[4:8], e.ridPfx)
	binary.BigEndian.PutUint32(raw[8:12], uint32(n))
	hex.Encode(b[0:8], raw[0:4])
	b[8] = '-'
	hex.Encode(b[9:17], raw[4:8])
	b[17] = '-'
	hex.Encode(b[18:26], raw[8:12])
	return string(b[:])
}

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// wait sleeps for d unless the request ends or the emulator closes first.
func (e *Emulator) wait(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-e.push.ctx.Done():
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// ensure Emulator stays an http.Handler.
var _ http.Handler = (*Emulator)(nil)
