package wechattest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

// Mode is the push encryption mode (消息加解密方式).
type Mode int

const (
	// Plaintext (明文模式): the message as is, signed in the query.
	Plaintext Mode = iota
	// Compatible (兼容模式): the plaintext fields and Encrypt side by side.
	Compatible
	// Safe (安全模式): ToUserName and Encrypt only.
	Safe
)

func (m Mode) String() string {
	switch m {
	case Compatible:
		return "compatible"
	case Safe:
		return "safe"
	}
	return "plaintext"
}

// ParseMode reads "plaintext", "compatible" or "safe".
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{Plaintext, Compatible, Safe} {
		if strings.EqualFold(s, m.String()) {
			return m, nil
		}
	}
	return 0, fmt.Errorf("push mode %q: want plaintext, compatible or safe", s)
}

// Format is the push data format (数据格式).
type Format int

const (
	JSON Format = iota
	XML
)

func (f Format) String() string {
	if f == XML {
		return "xml"
	}
	return "json"
}

// ParseFormat reads "json" or "xml".
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "json":
		return JSON, nil
	case "xml":
		return XML, nil
	}
	return 0, fmt.Errorf("push format %q: want json or xml", s)
}

// Callback is an app's message-push configuration (消息推送配置).
type Callback struct {
	// URL receives the pushes, by POST.
	URL string
	// Token signs them.
	Token string
	// EncodingAESKey (43 characters) encrypts them in Compatible and Safe
	// mode.
	EncodingAESKey string
	Mode           Mode
	Format         Format
	// ToUserName is the app's original id (gh_...). Default: one derived
	// from the appid.
	ToUserName string
	// SentEvents pushes a subscribe_msg_sent_event (ErrorCode 0, "success")
	// for every accepted send, as WeChat does once the message is
	// delivered.
	SentEvents bool
	// SentEventDelay is how long after answering a send its
	// subscribe_msg_sent_event is pushed. Default 500 ms (WeChat's delay is
	// not documented; it reports once the message reached the phone, so
	// never before the send was answered). Negative: at once.
	SentEventDelay time.Duration
	// Timeout bounds each try. Default 5 s, WeChat's.
	Timeout time.Duration
	// RetryDelay is the pause between tries. Default none: WeChat tries
	// again as soon as a try failed or timed out.
	RetryDelay time.Duration
}

// pushTries: "微信服务器在五秒内收不到响应会断掉连接，并且重新发起请求，总共重试三次".
// Read as three tries in total (the OA docs' usual reading), each with the
// same query and body, so a receiver can test its dedupe on
// FromUserName + CreateTime.
const pushTries = 3

// maxPushesInFlight bounds concurrent deliveries; more wait their turn.
const maxPushesInFlight = 32

type callbackState struct {
	cfg Callback
	key []byte
}

// Errors of the push methods.
var (
	ErrNoCallback = errors.New("wechattest: app has no callback")
	ErrClosed     = errors.New("wechattest: emulator closed")
	// ErrVerifyFailed: the callback did not echo echostr (VerifyCallback).
	ErrVerifyFailed = errors.New("wechattest: callback URL verification failed")
)

// SetCallback configures where and how the app's events are pushed. A
// Callback with an empty URL removes it.
func (e *Emulator) SetCallback(appid string, cb Callback) error {
	a := e.mustApp("SetCallback", appid)
	var st *callbackState
	if cb.URL != "" {
		var err error
		if st, err = newCallbackState(appid, cb); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.callback = st
	a.mu.Unlock()
	return nil
}

// Validate reports what SetCallback would refuse in cb: a URL that is not
// http(s)://host/..., or, outside plaintext mode, an EncodingAESKey that is
// not 43 characters of base64.
func (cb Callback) Validate() error {
	_, err := newCallbackState("", cb)
	return err
}

func newCallbackState(appid string, cb Callback) (*callbackState, error) {
	u, err := url.Parse(cb.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("callback of %s: URL %q: want http(s)://host/...", appid, cb.URL)
	}
	st := &callbackState{cfg: cb}
	if cb.Mode != Plaintext {
		if st.key, err = wechat.AESKey(cb.EncodingAESKey); err != nil {
			return nil, fmt.Errorf("callback of %s: %s mode: %w", appid, cb.Mode, err)
		}
	}
	if st.cfg.ToUserName == "" {
		sum := sha1.Sum([]byte(appid))
		st.cfg.ToUserName = "gh_" + hex.EncodeToString(sum[:6])
	}
	if st.cfg.Timeout <= 0 {
		st.cfg.Timeout = 5 * time.Second
	}
	return st, nil
}

// Event types.
const (
	EventPopup  = "subscribe_msg_popup_event"
	EventChange = "subscribe_msg_change_event"
	EventSent   = "subscribe_msg_sent_event"

	// The official account's: following and unfollowing the account, and a
	// template message's delivery receipt.
	EventFollow          = "subscribe"
	EventUnfollow        = "unsubscribe"
	EventTemplateSendJob = "TEMPLATESENDJOBFINISH"
)

// Event is an event to push.
type Event struct {
	Type   string // EventPopup, EventChange, EventSent, EventFollow...
	OpenID string // FromUserName
	// List: the entries of the subscribe-message events.
	List []EventEntry
	// EventKey and Ticket of an EventFollow through a QR code:
	// "qrscene_<scene>" and the code's ticket.
	EventKey, Ticket string
	// MsgID and Status of an EventTemplateSendJob: "success",
	// "failed:user block" or "failed: system failed".
	MsgID, Status string
}

// EventEntry is one element of an event's List. Each type uses its own
// fields: popup TemplateID, Status, PopupScene; change TemplateID, Status;
// sent TemplateID, MsgID, ErrorCode, ErrorStatus.
type EventEntry struct {
	TemplateID string
	Status     string // SubscribeStatusString: accept or reject
	PopupScene string // "0" (in a mini program page) when empty
	MsgID      string
	ErrorCode  int
	// ErrorStatus: "success" for ErrorCode 0. The failure codes and
	// statuses are not documented.
	ErrorStatus string
}

// Push is one push and how the receiver answered it.
type Push struct {
	AppID      string     `json:"appid"`
	Event      string     `json:"event,omitempty"` // "" for PushMessage and PushRaw
	OpenID     string     `json:"openid,omitempty"`
	CreateTime int64      `json:"create_time,omitempty"`
	URL        string     `json:"url"` // with the query
	Query      url.Values `json:"query"`
	Body       string     `json:"body"`              // as posted
	Message    string     `json:"message,omitempty"` // before encryption; "" for PushRaw
	Tries      []PushTry  `json:"tries"`
	Delivered  bool       `json:"delivered"` // a try got a 2xx answer
}

// PushTry is one HTTP try of a push.
type PushTry struct {
	Status int    `json:"status,omitempty"` // 0: no answer
	Reply  string `json:"reply,omitempty"`
	Err    string `json:"error,omitempty"`
}

// PushEvent pushes ev to the app's callback, built, signed and encrypted
// as the callback's mode and format say. Delivery is asynchronous: see
// FlushPushes and Pushes.
func (e *Emulator) PushEvent(appid string, ev Event) error {
	a := e.mustApp("PushEvent", appid)
	a.mu.Lock()
	cb := a.callback
	a.mu.Unlock()
	if cb == nil {
		return fmt.Errorf("push %s to %s: %w", ev.Type, appid, ErrNoCallback)
	}
	return e.queueEvent(a, cb, ev)
}

// defaultSentEventDelay: see Callback.SentEventDelay.
const defaultSentEventDelay = 500 * time.Millisecond

func (cb *callbackState) sentDelay() time.Duration {
	switch d := cb.cfg.SentEventDelay; {
	case d < 0:
		return 0
	case d == 0:
		return defaultSentEventDelay
	default:
		return d
	}
}

func (e *Emulator) queueEvent(a *app, cb *callbackState, ev Event) error {
	return e.queueEventAfter(a, cb, ev, 0)
}

// queueEventAfter pushes ev after delay; CreateTime is when it is built,
// now, as the event happened now.
func (e *Emulator) queueEventAfter(a *app, cb *callbackState, ev Event, delay time.Duration) error {
	now := e.opts.Now().Unix()
	msg := eventMessage(cb.cfg.Format, cb.cfg.ToUserName, ev, now)
	p, err := e.wrap(a.appid, cb, ev.OpenID, now, msg)
	if err != nil {
		return fmt.Errorf("push %s to %s: %w", ev.Type, a.appid, err)
	}
	p.Event = ev.Type
	return e.push.enqueue(p, cb.cfg, delay)
}

// PushMessage pushes a hand-made plaintext message (JSON or XML, as the
// callback's format) to the app's callback, signed and, in compatible or
// safe mode, encrypted. openid goes in the query of encrypted pushes.
func (e *Emulator) PushMessage(appid, openid string, msg []byte) error {
	a := e.mustApp("PushMessage", appid)
	a.mu.Lock()
	cb := a.callback
	a.mu.Unlock()
	if cb == nil {
		return fmt.Errorf("push message to %s: %w", appid, ErrNoCallback)
	}
	p, err := e.wrap(appid, cb, openid, e.opts.Now().Unix(), msg)
	if err != nil {
		return fmt.Errorf("push message to %s: %w", appid, err)
	}
	return e.push.enqueue(p, cb.cfg, 0)
}

// PushRaw posts body with query to the app's callback URL exactly as
// given: nothing is signed or encrypted (for tests of what a receiver
// refuses).
func (e *Emulator) PushRaw(appid string, query url.Values, body []byte) error {
	a := e.mustApp("PushRaw", appid)
	a.mu.Lock()
	cb := a.callback
	a.mu.Unlock()
	if cb == nil {
		return fmt.Errorf("push raw to %s: %w", appid, ErrNoCallback)
	}
	p := &Push{AppID: appid, Query: query, Body: string(body), URL: withQuery(cb.cfg.URL, query)}
	return e.push.enqueue(p, cb.cfg, 0)
}

// VerifyCallback does what WeChat does when the URL is saved in the admin
// console: GET URL?signature=&timestamp=&nonce=&echostr= (the three-part
// signature in every mode, echostr in clear) and expect echostr back as
// the body. It runs in the caller's goroutine, with the callback's timeout.
func (e *Emulator) VerifyCallback(ctx context.Context, appid string) error {
	a := e.mustApp("VerifyCallback", appid)
	a.mu.Lock()
	cb := a.callback
	a.mu.Unlock()
	if cb == nil {
		return fmt.Errorf("verify callback of %s: %w", appid, ErrNoCallback)
	}
	ts := strconv.FormatInt(e.opts.Now().Unix(), 10)
	nonce := strconv.FormatUint(uint64(randomUint32()), 10)
	echo := strconv.FormatUint(uint64(randomUint32())<<32|uint64(randomUint32()), 10)
	q := url.Values{"signature": {wechat.Signature(cb.cfg.Token, ts, nonce)}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {echo}}
	ctx, cancel := context.WithTimeout(ctx, cb.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, withQuery(cb.cfg.URL, q), nil)
	if err != nil {
		return fmt.Errorf("verify callback of %s: %w", appid, err)
	}
	resp, err := e.push.client.Do(req)
	if err != nil {
		return fmt.Errorf("verify callback of %s: %w", appid, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return fmt.Errorf("verify callback of %s: read answer: %w", appid, err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != echo {
		return fmt.Errorf("verify callback of %s: %w: HTTP %d %q, want %q", appid, ErrVerifyFailed, resp.StatusCode, body, echo)
	}
	return nil
}

// FlushPushes waits until every push queued so far has been delivered or
// has used up its tries.
func (e *Emulator) FlushPushes() { e.push.flush() }

// Pushes returns the finished pushes, in the order they finished.
func (e *Emulator) Pushes() []Push {
	e.push.mu.Lock()
	defer e.push.mu.Unlock()
	return append([]Push(nil), e.push.done...)
}

// wrap signs msg and, in compatible and safe mode, encrypts it. timestamp
// is CreateTime, as in WeChat's examples.
func (e *Emulator) wrap(appid string, cb *callbackState, openid string, createTime int64, msg []byte) (*Push, error) {
	ts := strconv.FormatInt(createTime, 10)
	nonce := strconv.FormatUint(uint64(randomUint32()), 10)
	q := url.Values{"signature": {wechat.Signature(cb.cfg.Token, ts, nonce)}, "timestamp": {ts}, "nonce": {nonce}}
	p := &Push{AppID: appid, OpenID: openid, CreateTime: createTime, Message: string(msg)}
	body := msg
	if cb.cfg.Mode != Plaintext {
		enc, err := wechat.Encrypt(cb.key, appid, msg, nil)
		if err != nil {
			return nil, fmt.Errorf("encrypt: %w", err)
		}
		q.Set("openid", openid)
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", wechat.Signature(cb.cfg.Token, ts, nonce, enc))
		if cb.cfg.Mode == Safe {
			body = safeBody(cb.cfg.Format, cb.cfg.ToUserName, enc)
		} else if body, err = compatibleBody(cb.cfg.Format, msg, enc); err != nil {
			return nil, err
		}
	}
	p.Query, p.Body, p.URL = q, string(body), withQuery(cb.cfg.URL, q)
	return p, nil
}

func withQuery(base string, q url.Values) string {
	if len(q) == 0 {
		return base
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + q.Encode()
}

func randomUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

func safeBody(f Format, toUser, enc string) []byte {
	if f == XML {
		var b bytes.Buffer
		b.WriteString("<xml>")
		xmlText(&b, "ToUserName", toUser)
		xmlText(&b, "Encrypt", enc)
		b.WriteString("</xml>")
		return b.Bytes()
	}
	return marshalJSON(struct {
		ToUserName string
		Encrypt    string
	}{toUser, enc})
}

// compatibleBody adds Encrypt to the plaintext message, as the compatible
// mode sample (reference §5.6 D) has it: last in the object or element.
func compatibleBody(f Format, msg []byte, enc string) ([]byte, error) {
	msg = bytes.TrimSpace(msg)
	if f == XML {
		i := bytes.LastIndex(msg, []byte("</xml>"))
		if i < 0 {
			return nil, errors.New("compatible mode: the XML message has no </xml>")
		}
		var b bytes.Buffer
		b.Write(msg[:i])
		xmlText(&b, "Encrypt", enc)
		b.Write(msg[i:])
		return b.Bytes(), nil
	}
	if len(msg) < 2 || msg[0] != '{' || msg[len(msg)-1] != '}' {
		return nil, errors.New("compatible mode: the JSON message is not an object")
	}
	encJSON, _ := json.Marshal(enc)
	out := append([]byte(nil), msg[:len(msg)-1]...)
	if len(bytes.TrimSpace(msg[1:len(msg)-1])) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"Encrypt":`...)
	out = append(out, encJSON...)
	return append(out, '}'), nil
}

// eventMessage is ev as WeChat pushes it. JSON: List is the entry itself
// when there is one and an array when there are several; CreateTime is a
// number; PopupScene, MsgID and ErrorCode are strings, as in the official
// JSON examples. XML: the entries are <List> elements inside an element
// named after the event, numbers are bare.
func eventMessage(f Format, toUser string, ev Event, createTime int64) []byte {
	if f == XML {
		return eventXML(toUser, ev, createTime)
	}
	type entry struct {
		TemplateID  string `json:"TemplateId"`
		Status      string `json:"SubscribeStatusString,omitempty"`
		PopupScene  string `json:"PopupScene,omitempty"`
		MsgID       string `json:"MsgID,omitempty"`
		ErrorCode   string `json:"ErrorCode,omitempty"`
		ErrorStatus string `json:"ErrorStatus,omitempty"`
	}
	entries := make([]entry, len(ev.List))
	for i, x := range ev.List {
		en := entry{TemplateID: x.TemplateID}
		switch ev.Type {
		case EventPopup:
			en.Status, en.PopupScene = x.Status, popupScene(x)
		case EventChange:
			en.Status = x.Status
		case EventSent:
			en.MsgID, en.ErrorCode, en.ErrorStatus = x.MsgID, strconv.Itoa(x.ErrorCode), x.ErrorStatus
		default:
			en.Status, en.PopupScene, en.MsgID, en.ErrorStatus = x.Status, x.PopupScene, x.MsgID, x.ErrorStatus
		}
		entries[i] = en
	}
	var list any = entries
	if len(entries) == 1 {
		list = entries[0]
	}
	if len(entries) == 0 && !listed[ev.Type] {
		list = nil
	}
	// The official account's events have no List; their fields are
	// strings, MsgID too, as in the JSON bodies seen in the wild
	// ("MsgID":"3487556454020562953","Status":"failed:user block").
	return marshalJSON(struct {
		ToUserName   string
		FromUserName string
		CreateTime   int64
		MsgType      string
		Event        string
		EventKey     string `json:",omitempty"`
		Ticket       string `json:",omitempty"`
		MsgID        string `json:",omitempty"`
		Status       string `json:",omitempty"`
		List         any    `json:",omitempty"`
	}{toUser, ev.OpenID, createTime, "event", ev.Type, ev.EventKey, ev.Ticket, ev.MsgID, ev.Status, list})
}

// listed are the events whose message always has a List.
var listed = map[string]bool{EventPopup: true, EventChange: true, EventSent: true}

func popupScene(x EventEntry) string {
	if x.PopupScene == "" {
		return "0"
	}
	return x.PopupScene
}

var xmlWrapper = map[string]string{
	EventPopup:  "SubscribeMsgPopupEvent",
	EventChange: "SubscribeMsgChangeEvent",
	EventSent:   "SubscribeMsgSentEvent",
}

func eventXML(toUser string, ev Event, createTime int64) []byte {
	var b bytes.Buffer
	b.WriteString("<xml>")
	xmlText(&b, "ToUserName", toUser)
	xmlText(&b, "FromUserName", ev.OpenID)
	xmlNumber(&b, "CreateTime", strconv.FormatInt(createTime, 10))
	xmlText(&b, "MsgType", "event")
	xmlText(&b, "Event", ev.Type)
	if !listed[ev.Type] {
		// As the official account docs print them: EventKey and Ticket
		// after Event for a follow through a QR code; a bare MsgID and
		// Status for TEMPLATESENDJOBFINISH.
		if ev.EventKey != "" {
			xmlText(&b, "EventKey", ev.EventKey)
		}
		if ev.Ticket != "" {
			xmlText(&b, "Ticket", ev.Ticket)
		}
		if ev.MsgID != "" {
			xmlNumber(&b, "MsgID", ev.MsgID)
		}
		if ev.Status != "" {
			xmlText(&b, "Status", ev.Status)
		}
		b.WriteString("</xml>")
		return b.Bytes()
	}
	wrapper := xmlWrapper[ev.Type]
	if wrapper == "" {
		wrapper = "List"
	}
	b.WriteString("<" + wrapper + ">")
	for _, x := range ev.List {
		b.WriteString("<List>")
		xmlText(&b, "TemplateId", x.TemplateID)
		switch ev.Type {
		case EventPopup:
			xmlText(&b, "SubscribeStatusString", x.Status)
			xmlNumber(&b, "PopupScene", popupScene(x))
		case EventChange:
			xmlText(&b, "SubscribeStatusString", x.Status)
		case EventSent:
			xmlNumber(&b, "MsgID", x.MsgID)
			xmlNumber(&b, "ErrorCode", strconv.Itoa(x.ErrorCode))
			xmlText(&b, "ErrorStatus", x.ErrorStatus)
		}
		b.WriteString("</List>")
	}
	b.WriteString("</" + wrapper + "></xml>")
	return b.Bytes()
}

// xmlText writes <name><![CDATA[v]]></name>; a "]]>" inside v is split
// across two sections, the standard way to carry it.
func xmlText(b *bytes.Buffer, name, v string) {
	b.WriteString("<" + name + "><![CDATA[")
	b.WriteString(strings.ReplaceAll(v, "]]>", "]]]]><![CDATA[>"))
	b.WriteString("]]></" + name + ">")
}

func xmlNumber(b *bytes.Buffer, name, v string) {
	b.WriteString("<" + name + ">" + v + "</" + name + ">")
}

// marshalJSON encodes without HTML escaping: WeChat sends "<" as is.
func marshalJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(b.Bytes(), "\n")
}

// pusher delivers pushes on goroutines the emulator owns.
type pusher struct {
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	client *http.Client
	sem    chan struct{}
	log    *slog.Logger

	mu       sync.Mutex
	idle     *sync.Cond // signalled when inflight drops to 0
	inflight int
	closed   bool
	done     []Push
}

func (p *pusher) init(log *slog.Logger) {
	p.log = log
	p.ctx, p.cancel = context.WithCancel(context.Background())
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = maxPushesInFlight
	// WeChat does not follow redirects on pushes (unconfirmed; a receiver
	// that redirects is misconfigured either way).
	p.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	p.sem = make(chan struct{}, maxPushesInFlight)
	p.idle = sync.NewCond(&p.mu)
}

func (p *pusher) enqueue(push *Push, cfg Callback, delay time.Duration) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.inflight++
	p.mu.Unlock()
	go p.deliver(push, cfg, delay)
	return nil
}

func (p *pusher) deliver(push *Push, cfg Callback, delay time.Duration) {
	defer func() {
		p.logResult(push)
		p.mu.Lock()
		p.done = append(p.done, *push)
		p.inflight--
		if p.inflight == 0 {
			p.idle.Broadcast()
		}
		p.mu.Unlock()
	}()
	if !p.sleep(delay) {
		push.Tries = append(push.Tries, PushTry{Err: ErrClosed.Error()})
		return
	}
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	case <-p.ctx.Done():
		push.Tries = append(push.Tries, PushTry{Err: ErrClosed.Error()})
		return
	}
	contentType := "application/json"
	if cfg.Format == XML {
		contentType = "text/xml"
	}
	for i := 0; i < pushTries; i++ {
		if i > 0 && !p.sleep(cfg.RetryDelay) {
			return
		}
		try := p.try(push, contentType, cfg.Timeout)
		push.Tries = append(push.Tries, try)
		if try.Status >= 200 && try.Status < 300 {
			push.Delivered = true
			return
		}
		if p.ctx.Err() != nil {
			return
		}
	}
}

func (p *pusher) logResult(push *Push) {
	// The URL without its query: the signatures are noise here.
	target, _, _ := strings.Cut(push.URL, "?")
	if push.Delivered {
		p.log.Debug("pushed", "appid", push.AppID, "event", push.Event, "url", target, "tries", len(push.Tries))
		return
	}
	last := PushTry{}
	if n := len(push.Tries); n > 0 {
		last = push.Tries[n-1]
	}
	p.log.Warn("push not delivered", "appid", push.AppID, "event", push.Event, "url", target,
		"tries", len(push.Tries), "status", last.Status, "err", last.Err)
}

// sleep waits d, and reports false if the emulator closed meanwhile.
func (p *pusher) sleep(d time.Duration) bool {
	if d <= 0 {
		return p.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.ctx.Done():
		return false
	}
}

func (p *pusher) try(push *Push, contentType string, timeout time.Duration) PushTry {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, push.URL, strings.NewReader(push.Body))
	if err != nil {
		return PushTry{Err: err.Error()}
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := p.client.Do(req)
	if err != nil {
		return PushTry{Err: err.Error()}
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	t := PushTry{Status: resp.StatusCode, Reply: string(reply)}
	if err != nil {
		// The answer was cut off: WeChat saw no complete response.
		t.Status, t.Err = 0, err.Error()
	}
	return t
}

func (p *pusher) flush() {
	p.mu.Lock()
	for p.inflight > 0 {
		p.idle.Wait()
	}
	p.mu.Unlock()
}

func (p *pusher) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.flush()
	p.client.CloseIdleConnections()
}
