package wechat_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

// ---- an independent encryptor ----
//
// Written from reference/wechat-api.md §5.4 alone, sharing no code with
// package wechat: its own sort-and-sha1, its own CBC chaining over the bare
// AES block, its own PKCS#7-to-32 and FullStr layout. If both sides made the
// same mistake the vectors in crypto_test.go would still catch it.

func indepSign(parts ...string) string {
	s := slices.Clone(parts)
	slices.Sort(s)
	h := sha1.New()
	for _, p := range s {
		io.WriteString(h, p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mustKey(t testing.TB, encodingAESKey string) []byte {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		t.Fatalf("EncodingAESKey %q does not decode to 32 bytes: %v", encodingAESKey, err)
	}
	return key
}

// indepCBC encrypts whole blocks with CBC chaining done by hand.
func indepCBC(t testing.TB, key, iv, plain []byte) []byte {
	t.Helper()
	if len(plain)%16 != 0 {
		t.Fatalf("indepCBC: %d bytes is not whole blocks", len(plain))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(plain))
	prev := iv
	for i := 0; i < len(plain); i += 16 {
		var x [16]byte
		for j := range x {
			x[j] = plain[i+j] ^ prev[j]
		}
		block.Encrypt(out[i:i+16], x[:])
		prev = out[i : i+16]
	}
	return out
}

// indepEncrypt: FullStr = random(16) + len(msg) big-endian + msg + appid,
// PKCS#7 padded to 32, AES-256-CBC, base64. An empty random draws one.
func indepEncrypt(t testing.TB, key, iv []byte, appid string, msg []byte, random string) string {
	t.Helper()
	r := []byte(random)
	if random == "" {
		r = make([]byte, 16)
		rand.Read(r)
	}
	plain := append([]byte(nil), r...)
	plain = binary.BigEndian.AppendUint32(plain, uint32(len(msg)))
	plain = append(plain, msg...)
	plain = append(plain, appid...)
	pad := 32 - len(plain)%32
	plain = append(plain, bytes.Repeat([]byte{byte(pad)}, pad)...)
	return base64.StdEncoding.EncodeToString(indepCBC(t, key, iv, plain))
}

// indepDecrypt is the inverse, lenient on purpose (no checks beyond what it
// needs), to show what a given IV recovers.
func indepDecrypt(t testing.TB, key, iv []byte, enc string) ([]byte, string, bool) {
	t.Helper()
	data, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(data) == 0 || len(data)%16 != 0 {
		return nil, "", false
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, len(data))
	prev := iv
	for i := 0; i < len(data); i += 16 {
		block.Decrypt(plain[i:i+16], data[i:i+16])
		for j := 0; j < 16; j++ {
			plain[i+j] ^= prev[j]
		}
		prev = data[i : i+16]
	}
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > 32 || len(plain)-pad < 20 {
		return nil, "", false
	}
	plain = plain[:len(plain)-pad]
	n := int(binary.BigEndian.Uint32(plain[16:20]))
	if n > len(plain)-20 {
		return nil, "", false
	}
	return plain[20 : 20+n], string(plain[20+n:]), true
}

// bodyEncrypt pulls the Encrypt field out of a vector's body.
func bodyEncrypt(t testing.TB, body string) string {
	t.Helper()
	var v struct{ Encrypt string }
	var err error
	if strings.HasPrefix(strings.TrimSpace(body), "<") {
		err = xml.Unmarshal([]byte(body), &v)
	} else {
		err = json.Unmarshal([]byte(body), &v)
	}
	if err != nil || v.Encrypt == "" {
		t.Fatalf("no Encrypt in %.40q: %v", body, err)
	}
	return v.Encrypt
}

// ---- the test app and a WeChat stand-in that pushes to it ----

const (
	mainAppID = "wx0123456789abcdef"
	mainToken = "tok-main-9f8e7d"
	baseTime  = 1763700000 // 2025-11-21T04:40:00Z
)

// mainAESKey is a non-zero key, so that a wrong IV would show.
var mainAESKey = strings.TrimSuffix(base64.StdEncoding.EncodeToString([]byte("0123456789abcdefghijklmnopqrstuv")), "=")

var testApps = map[string]wechat.PushConfig{
	"main": {AppID: mainAppID, Token: mainToken, EncodingAESKey: mainAESKey},
	// migrating is main while its console moves to safe mode: the same
	// key, plaintext still allowed.
	"migrating": {AppID: mainAppID, Token: mainToken, EncodingAESKey: mainAESKey, AllowPlaintext: true},
	"plain":     {AppID: "wxplainplainplain", Token: "tok-plain"}, // plaintext only: no key
	"vecA":      {AppID: vecAAppID, Token: vecAToken, EncodingAESKey: vecAAESKey},
	"vecB":      {AppID: vecBPlatformAppID, Token: vecBToken, EncodingAESKey: vecBAESKey},
	"vecBm":     {AppID: vecBMiniAppID, Token: vecBToken, EncodingAESKey: vecBAESKey}, // the mistake: the Mini Program's appid
	"vecC":      {AppID: vecCAppID, Token: vecCToken, EncodingAESKey: vecCAESKey},
	"vecD":      {AppID: vecDAppID, Token: vecDToken, EncodingAESKey: vecDAESKey},
	"vecE":      {AppID: vecAAppID, Token: vecEToken},
}

// appFor is the app a push in mode goes to: main takes only encrypted
// pushes, so plaintext ones go to its migrating twin.
func appFor(mode string) string {
	if mode == wechat.ModePlaintext {
		return "migrating"
	}
	return "main"
}

type handled struct {
	app string
	p   *wechat.Push
}

// fixture is the handler behind a real HTTP server, with an injected clock
// and a Handle that records what reached it.
type fixture struct {
	t   *testing.T
	h   *wechat.PushHandler
	mux *http.ServeMux
	srv *httptest.Server

	mu      sync.Mutex
	now     time.Time
	calls   []handled
	handleF func(ctx context.Context, app string, p *wechat.Push) error
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, now: time.Unix(baseTime, 0)}
	f.h = &wechat.PushHandler{
		Config: func(app string) (wechat.PushConfig, bool) {
			c, ok := testApps[app]
			return c, ok
		},
		Handle: func(ctx context.Context, app string, p *wechat.Push) error {
			f.mu.Lock()
			f.calls = append(f.calls, handled{app, p})
			fn := f.handleF
			f.mu.Unlock()
			if fn != nil {
				return fn(ctx, app, p)
			}
			return nil
		},
		Now: func() time.Time {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.now
		},
	}
	f.mux = http.NewServeMux()
	f.mux.Handle("/wechat/callback/{app}", f.h)
	f.srv = httptest.NewServer(f.mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) setNow(unix int64) {
	f.mu.Lock()
	f.now = time.Unix(unix, 0)
	f.mu.Unlock()
}

func (f *fixture) onHandle(fn func(ctx context.Context, app string, p *wechat.Push) error) {
	f.mu.Lock()
	f.handleF = fn
	f.mu.Unlock()
}

func (f *fixture) handled() []handled {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fixture) do(method, app, rawQuery string, body []byte) (int, string, http.Header) {
	f.t.Helper()
	u := f.srv.URL + "/wechat/callback/" + app
	if rawQuery != "" {
		u += "?" + rawQuery
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, app, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func (f *fixture) post(app string, r wireRequest) (int, string) {
	f.t.Helper()
	code, body, _ := f.do(http.MethodPost, app, r.query.Encode(), r.body)
	return code, body
}

// wireRequest is one push as WeChat would send it.
type wireRequest struct {
	query url.Values
	body  []byte
}

// pushSpec says how the stand-in builds a push; zero fields take the
// "main" app's values and the fixture's time.
type pushSpec struct {
	mode   string // wechat.ModePlaintext, ModeCompatible, ModeSafe
	msg    string // the plaintext message, XML or JSON
	token  string
	key    []byte
	appid  string // sealed inside the ciphertext
	ts     string
	nonce  string
	random string
}

// wire builds the request the independent way.
func wire(t testing.TB, s pushSpec) wireRequest {
	t.Helper()
	if s.token == "" {
		s.token = mainToken
	}
	if s.key == nil {
		s.key = mustKey(t, mainAESKey)
	}
	if s.appid == "" {
		s.appid = mainAppID
	}
	if s.ts == "" {
		s.ts = strconv.Itoa(baseTime)
	}
	if s.nonce == "" {
		var n [4]byte
		rand.Read(n[:])
		s.nonce = strconv.FormatUint(uint64(binary.BigEndian.Uint32(n[:])), 10)
	}
	q := url.Values{
		"signature": {indepSign(s.token, s.ts, s.nonce)},
		"timestamp": {s.ts},
		"nonce":     {s.nonce},
		"openid":    {"oUser1"},
	}
	if s.mode == wechat.ModePlaintext {
		return wireRequest{q, []byte(s.msg)}
	}
	enc := indepEncrypt(t, s.key, s.key[:16], s.appid, []byte(s.msg), s.random)
	q.Set("encrypt_type", "aes")
	q.Set("msg_signature", indepSign(s.token, s.ts, s.nonce, enc))
	isXML := strings.HasPrefix(s.msg, "<")
	var body string
	switch {
	case s.mode == wechat.ModeSafe && isXML:
		body = "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
	case s.mode == wechat.ModeSafe:
		body = `{"ToUserName":"gh_test","Encrypt":"` + enc + `"}`
	case isXML: // compatible: the plaintext message with Encrypt beside it
		body = strings.Replace(s.msg, "</xml>", "<Encrypt><![CDATA["+enc+"]]></Encrypt></xml>", 1)
	default:
		body = strings.TrimSuffix(strings.TrimSpace(s.msg), "}") + `,"Encrypt":"` + enc + `"}`
	}
	return wireRequest{q, []byte(body)}
}

// ---- messages ----

// ptrEqual: both nil, or both set and equal.
func ptrEqual[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

type eventCase struct {
	name      string
	event     string
	json, xml string
	subs      []wechat.SubscriptionEvent
	sent      []wechat.SentEvent
	follow    *wechat.FollowEvent
	job       *wechat.TemplateJobEvent
}

var eventCases = []eventCase{
	{
		name:  "popup one template (List object)",
		event: wechat.EventSubscribePopup,
		json:  `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"subscribe_msg_popup_event","List":{"TemplateId":"tplA","SubscribeStatusString":"accept","PopupScene":"0"}}`,
		xml:   `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent><List><TemplateId><![CDATA[tplA]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene></List></SubscribeMsgPopupEvent></xml>`,
		subs:  []wechat.SubscriptionEvent{{TemplateID: "tplA", Status: "accept", PopupScene: "0"}},
	},
	{
		name:  "popup two templates (List array)",
		event: wechat.EventSubscribePopup,
		json:  `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":"1763700000","MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"tplA","SubscribeStatusString":"accept","PopupScene":2},{"TemplateId":"tplB","SubscribeStatusString":"reject","PopupScene":"2"}]}`,
		xml: `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent>
			<List><TemplateId><![CDATA[tplA]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List>
			<List><TemplateId><![CDATA[tplB]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>2</PopupScene></List>
			</SubscribeMsgPopupEvent></xml>`,
		subs: []wechat.SubscriptionEvent{{TemplateID: "tplA", Status: "accept", PopupScene: "2"}, {TemplateID: "tplB", Status: "reject", PopupScene: "2"}},
	},
	{
		name:  "change",
		event: wechat.EventSubscribeChange,
		json:  `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"subscribe_msg_change_event","List":{"SubscribeStatusString":"reject","TemplateId":"tplA"}}`,
		xml:   `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgChangeEvent><List><TemplateId><![CDATA[tplA]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>`,
		subs:  []wechat.SubscriptionEvent{{TemplateID: "tplA", Status: "reject"}},
	},
	{
		name:  "sent (MsgID beyond 2^53)",
		event: wechat.EventSubscribeSent,
		json:  `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"tplA","MsgID":1864323726461255681,"ErrorCode":"0","ErrorStatus":"success"}}`,
		xml:   `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent><List><TemplateId><![CDATA[tplA]]></TemplateId><MsgID>1864323726461255681</MsgID><ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>`,
		sent:  []wechat.SentEvent{{TemplateID: "tplA", MsgID: "1864323726461255681", ErrorCode: 0, ErrorStatus: "success"}},
	},
	// The official account's events, shaped as its docs print them
	// (Receiving_event_pushes.html, Template_Message_Interface.html,
	// subscription_messages/push.html); JSON with the same keys.
	{
		name:   "official account: follow",
		event:  wechat.EventFollow,
		json:   `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"subscribe"}`,
		xml:    `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>`,
		follow: &wechat.FollowEvent{Following: true},
	},
	{
		name:   "official account: follow through a QR code",
		event:  wechat.EventFollow,
		json:   `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"subscribe","EventKey":"qrscene_123123","Ticket":"TICKET"}`,
		xml:    `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>`,
		follow: &wechat.FollowEvent{Following: true, EventKey: "qrscene_123123", Ticket: "TICKET"},
	},
	{
		name:   "official account: unfollow",
		event:  wechat.EventUnfollow,
		json:   `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"unsubscribe","EventKey":""}`,
		xml:    `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event><EventKey><![CDATA[]]></EventKey></xml>`,
		follow: &wechat.FollowEvent{},
	},
	{
		name:  "official account: template message delivered",
		event: wechat.EventTemplateSendJobFinish,
		json:  `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"TEMPLATESENDJOBFINISH","MsgID":"3487542469355618313","Status":"success"}`,
		xml:   `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>3487542469355618313</MsgID><Status><![CDATA[success]]></Status></xml>`,
		job:   &wechat.TemplateJobEvent{MsgID: "3487542469355618313", Status: wechat.TemplateStatusSuccess},
	},
	{
		name:  "official account: template message refused by the user",
		event: wechat.EventTemplateSendJobFinish,
		json:  `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"TEMPLATESENDJOBFINISH","MsgID":3487542469355618313,"Status":"failed:user block"}`,
		xml:   `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>3487542469355618313</MsgID><Status><![CDATA[failed:user block]]></Status></xml>`,
		job:   &wechat.TemplateJobEvent{MsgID: "3487542469355618313", Status: wechat.TemplateStatusUserBlock},
	},
	{
		name:  "official account: template message failed",
		event: wechat.EventTemplateSendJobFinish,
		json:  `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"TEMPLATESENDJOBFINISH","MsgID":"200163836","Status":"failed: system failed"}`,
		xml:   `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID><Status><![CDATA[failed: system failed]]></Status></xml>`,
		job:   &wechat.TemplateJobEvent{MsgID: "200163836", Status: wechat.TemplateStatusSystemFailed},
	},
	{
		name:  "official account: subscription notification popup from an H5 page",
		event: wechat.EventSubscribePopup,
		json:  `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"subscribe_msg_popup_event","List":{"TemplateId":"tplA","SubscribeStatusString":"accept","PopupScene":"1"}}`,
		xml:   `<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent><List><TemplateId><![CDATA[tplA]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>1</PopupScene></List></SubscribeMsgPopupEvent></xml>`,
		subs:  []wechat.SubscriptionEvent{{TemplateID: "tplA", Status: "accept", PopupScene: "1"}},
	},
}

// The done-when test: every mode × format × event, built by the independent
// encryptor, through the real HTTP endpoint.
func TestPushEndToEnd(t *testing.T) {
	for _, mode := range []string{wechat.ModePlaintext, wechat.ModeCompatible, wechat.ModeSafe} {
		for _, format := range []string{wechat.FormatXML, wechat.FormatJSON} {
			for _, ec := range eventCases {
				t.Run(mode+"/"+format+"/"+ec.name, func(t *testing.T) {
					f := newFixture(t)
					msg := ec.json
					if format == wechat.FormatXML {
						msg = ec.xml
					}
					app := appFor(mode)
					code, body := f.post(app, wire(t, pushSpec{mode: mode, msg: msg}))
					if code != http.StatusOK || body != "success" {
						t.Fatalf("answer = %d %q, want 200 success", code, body)
					}
					calls := f.handled()
					if len(calls) != 1 {
						t.Fatalf("Handle called %d times, want 1", len(calls))
					}
					p := calls[0].p
					if calls[0].app != app || p.Mode != mode || p.Format != format || p.MsgType != "event" ||
						p.Event != ec.event || p.FromUserName != "oUser1" || p.ToUserName != "gh_test" || p.CreateTime != baseTime {
						t.Errorf("push = app %s, %+v", calls[0].app, p)
					}
					if !slices.Equal(p.Subscriptions, ec.subs) || !slices.Equal(p.Sent, ec.sent) {
						t.Errorf("entries = %+v %+v, want %+v %+v", p.Subscriptions, p.Sent, ec.subs, ec.sent)
					}
					if !ptrEqual(p.Follow, ec.follow) || !ptrEqual(p.TemplateJob, ec.job) {
						t.Errorf("Follow %+v, TemplateJob %+v; want %+v, %+v", p.Follow, p.TemplateJob, ec.follow, ec.job)
					}
					if string(p.Raw) != msg {
						t.Errorf("Raw = %q, want the plaintext message", p.Raw)
					}
				})
			}
		}
	}
}

// The reference's vectors, through the HTTP endpoint at their own time.
func TestPushVectorsOverHTTP(t *testing.T) {
	cEnc := vecCReplyEncrypt
	tests := []struct {
		name, method, app, query, body string
		at                             int64
		wantCode                       int
		wantBody                       string
		check                          func(t *testing.T, p *wechat.Push)
	}{
		{
			name: "A: JSON safe mode", method: http.MethodPost, app: "vecA", query: vecAQuery, body: vecABody, at: vecATimestamp,
			wantCode: 200, wantBody: "success",
			check: func(t *testing.T, p *wechat.Push) {
				if p.Mode != wechat.ModeSafe || p.Format != wechat.FormatJSON || p.Event != "debug_demo" ||
					p.FromUserName != "o9AgO5Kd5ggOC-bXrbNODIiE3bGY" || p.CreateTime != 1714112445 || string(p.Raw) != vecAMsg {
					t.Errorf("push = %+v", p)
				}
			},
		},
		{
			name: "B: XML safe mode, platform appid", method: http.MethodPost, app: "vecB", query: vecBQuery, body: vecBBody, at: vecBTimestamp,
			wantCode: 200, wantBody: "success",
			check: func(t *testing.T, p *wechat.Push) {
				if p.Mode != wechat.ModeSafe || p.Format != wechat.FormatXML || p.Event != "debug_demo" ||
					p.CreateTime != 1715943329 || string(p.Raw) != vecBMsg {
					t.Errorf("push = %+v", p)
				}
			},
		},
		{
			name: "B: configured with the Mini Program's appid instead", method: http.MethodPost, app: "vecBm", query: vecBQuery, body: vecBBody, at: vecBTimestamp,
			wantCode: 403,
		},
		{
			name: "C: signed, decrypts, but is not a message", method: http.MethodPost, app: "vecC",
			query: "signature=x&timestamp=" + vecCTimestamp + "&nonce=" + vecCNonce + "&encrypt_type=aes&msg_signature=" + vecCMsgSignature,
			body:  `<xml><Encrypt><![CDATA[` + vecCEncrypt + `]]></Encrypt></xml>`, at: 1409304348,
			wantCode: 400,
		},
		{
			name: "C: the reply ciphertext is a message", method: http.MethodPost, app: "vecC",
			query: "timestamp=" + vecCTimestamp + "&nonce=" + vecCNonce + "&encrypt_type=aes&msg_signature=" + indepSign(vecCToken, vecCTimestamp, vecCNonce, cEnc),
			body:  `<xml><Encrypt><![CDATA[` + cEnc + `]]></Encrypt></xml>`, at: 1409304348,
			wantCode: 200, wantBody: "success",
			check: func(t *testing.T, p *wechat.Push) {
				if p.MsgType != "video" || p.ToUserName != "oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw" || p.CreateTime != 1407743423 || string(p.Raw) != vecCReplyMsg {
					t.Errorf("push = %+v", p)
				}
			},
		},
		{
			name: "D: XML compatible mode", method: http.MethodPost, app: "vecD",
			query: "signature=" + vecDSignature + "&timestamp=" + vecDTimestamp + "&nonce=" + vecDNonce + "&encrypt_type=aes&msg_signature=" + vecDMsgSignature,
			body:  vecDBody, at: 1409735669,
			wantCode: 200, wantBody: "success",
			check: func(t *testing.T, p *wechat.Push) {
				if p.Mode != wechat.ModeCompatible || p.Format != wechat.FormatXML || p.MsgType != "text" ||
					p.MsgID != "6054768590064713728" || p.CreateTime != 1409735668 || string(p.Raw) != vecDMsg {
					t.Errorf("push = %+v", p)
				}
			},
		},
		{
			name: "E: URL verification", method: http.MethodGet, app: "vecE", query: vecEGetQuery, at: vecEGetTimestamp,
			wantCode: 200, wantBody: vecEEchostr,
		},
		{
			name: "E: URL verification of a safe-mode app uses the same signature", method: http.MethodGet, app: "vecA", query: vecEGetQuery, at: vecEGetTimestamp,
			wantCode: 200, wantBody: vecEEchostr,
		},
		{
			name: "E: plaintext POST", method: http.MethodPost, app: "vecE", query: vecEPostQuery, body: vecEPostBody, at: vecEPostTimestamp,
			wantCode: 200, wantBody: "success",
			check: func(t *testing.T, p *wechat.Push) {
				if p.Mode != wechat.ModePlaintext || p.Format != wechat.FormatJSON || p.Event != "debug_demo" || string(p.Raw) != vecEPostBody {
					t.Errorf("push = %+v", p)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.setNow(tt.at)
			code, body, hdr := f.do(tt.method, tt.app, tt.query, []byte(tt.body))
			if code != tt.wantCode || (tt.wantBody != "" && body != tt.wantBody) {
				t.Fatalf("answer = %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
			if ct := hdr.Get("Content-Type"); code == 200 && !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type = %q", ct)
			}
			calls := f.handled()
			if tt.check == nil {
				if len(calls) != 0 {
					t.Fatalf("Handle called %d times, want 0", len(calls))
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("Handle called %d times, want 1", len(calls))
			}
			tt.check(t, calls[0].p)
		})
	}
}

// Forged, stale, misdirected, oversized and malformed requests: each gets
// its status and none reaches Handle.
func TestPushRefusals(t *testing.T) {
	key := mustKey(t, mainAESKey)
	popup := eventCases[0].json
	popupXML := eventCases[0].xml
	safe := func() wireRequest { return wire(t, pushSpec{mode: wechat.ModeSafe, msg: popup}) }
	plain := func() wireRequest { return wire(t, pushSpec{mode: wechat.ModePlaintext, msg: popup}) }
	ts := func(d int) string { return strconv.Itoa(baseTime + d) }
	resignMsg := func(r wireRequest, enc string) wireRequest {
		r.query.Set("msg_signature", indepSign(mainToken, r.query.Get("timestamp"), r.query.Get("nonce"), enc))
		return r
	}
	// flipLastPad changes the last plaintext byte (a padding byte) by
	// flipping the ciphertext byte above it: CBC is malleable.
	flipLastPad := func(enc string) string {
		b, _ := base64.StdEncoding.DecodeString(enc)
		b[len(b)-17] ^= 0x40
		return base64.StdEncoding.EncodeToString(b)
	}

	tests := []struct {
		name   string
		method string
		app    string
		req    func() wireRequest
		status int
	}{
		{"plaintext: bad signature", "POST", "migrating", func() wireRequest {
			r := plain()
			r.query.Set("signature", indepSign("wrong-token", ts(0), r.query.Get("nonce")))
			return r
		}, 401},
		{"plaintext: no signature", "POST", "migrating", func() wireRequest { r := plain(); r.query.Del("signature"); return r }, 401},
		{"plaintext: signature for another nonce", "POST", "migrating", func() wireRequest { r := plain(); r.query.Set("nonce", "1"); return r }, 401},
		{"safe: bad msg_signature", "POST", "main", func() wireRequest {
			r := safe()
			r.query.Set("msg_signature", strings.Repeat("0", 40))
			return r
		}, 401},
		{"safe: no msg_signature (a valid signature is not enough)", "POST", "main", func() wireRequest { r := safe(); r.query.Del("msg_signature"); return r }, 401},
		{"safe: msg_signature replaced by the url signature", "POST", "main", func() wireRequest {
			r := safe()
			r.query.Set("msg_signature", r.query.Get("signature"))
			return r
		}, 401},
		{"safe: tampered Encrypt", "POST", "main", func() wireRequest {
			r := safe()
			enc := bodyEncrypt(t, string(r.body))
			r.body = bytes.Replace(r.body, []byte(enc), []byte(flipLastPad(enc)), 1)
			return r
		}, 401},
		{"safe: tampered Encrypt, re-signed by someone with the token only", "POST", "main", func() wireRequest {
			r := safe()
			enc := bodyEncrypt(t, string(r.body))
			bad := flipLastPad(enc)
			r.body = bytes.Replace(r.body, []byte(enc), []byte(bad), 1)
			return resignMsg(r, bad)
		}, 403},
		{"safe: Encrypt not base64, signed", "POST", "main", func() wireRequest {
			r := safe()
			enc := bodyEncrypt(t, string(r.body))
			r.body = bytes.Replace(r.body, []byte(enc), []byte("***"), 1)
			return resignMsg(r, "***")
		}, 403},
		{"safe: encrypted with another key, signed", "POST", "main", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModeSafe, msg: popup, key: mustKey(t, vecCAESKey)})
		}, 403},
		{"safe: appid mismatch", "POST", "main", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModeSafe, msg: popup, appid: "wxffffffffffffffff"})
		}, 403},
		{"compatible: appid mismatch", "POST", "main", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModeCompatible, msg: popupXML, appid: "wxffffffffffffffff"})
		}, 403},
		{"safe: timestamp too old", "POST", "main", func() wireRequest { return wire(t, pushSpec{mode: wechat.ModeSafe, msg: popup, ts: ts(-301)}) }, 403},
		{"safe: timestamp too new", "POST", "main", func() wireRequest { return wire(t, pushSpec{mode: wechat.ModeSafe, msg: popup, ts: ts(301)}) }, 403},
		{"plaintext: timestamp too old", "POST", "migrating", func() wireRequest { return wire(t, pushSpec{mode: wechat.ModePlaintext, msg: popup, ts: ts(-3600)}) }, 403},
		{"plaintext: timestamp not a number, signed", "POST", "migrating", func() wireRequest { return wire(t, pushSpec{mode: wechat.ModePlaintext, msg: popup, ts: "soon"}) }, 403},
		{"plaintext: timestamp 2^63-1, signed", "POST", "migrating", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModePlaintext, msg: popup, ts: "9223372036854775807"})
		}, 403},
		{"plaintext: timestamp -2^63, signed", "POST", "migrating", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModePlaintext, msg: popup, ts: "-9223372036854775808"})
		}, 403},
		{"plaintext to an app with a key, validly signed", "POST", "main", plain, 401},
		{"plaintext (encrypt_type=raw) to an app with a key, validly signed", "POST", "main", func() wireRequest {
			r := plain()
			r.query.Set("encrypt_type", "raw")
			return r
		}, 401},
		{"plaintext to an app with a key, stale and garbage: refused first for want of proof", "POST", "main", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModePlaintext, msg: "garbage", ts: ts(-3600)})
		}, 401},
		{"safe body with encrypt_type stripped, validly signed", "POST", "main", func() wireRequest {
			r := safe()
			r.query.Del("encrypt_type")
			r.query.Del("msg_signature")
			return r
		}, 401},
		{"unknown app", "POST", "nosuchapp", safe, 404},
		{"wrong method PUT", "PUT", "main", safe, 405},
		{"wrong method DELETE", "DELETE", "main", safe, 405},
		{"wrong method PATCH", "PATCH", "main", safe, 405},
		{"unknown encrypt_type", "POST", "main", func() wireRequest { r := safe(); r.query.Set("encrypt_type", "des"); return r }, 400},
		{"safe mode for an app without a key", "POST", "plain", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModeSafe, msg: popup, token: "tok-plain", appid: "wxplainplainplain", key: key})
		}, 500},
		{"safe: body without Encrypt", "POST", "main", func() wireRequest { r := safe(); r.body = []byte(`{"ToUserName":"gh_test"}`); return r }, 400},
		{"safe: envelope not XML or JSON", "POST", "main", func() wireRequest { r := safe(); r.body = []byte("Encrypt=abc"); return r }, 400},
		{"safe: signed ciphertext of garbage", "POST", "main", func() wireRequest { return wire(t, pushSpec{mode: wechat.ModeSafe, msg: "<<not xml"}) }, 400},
		{"safe: signed ciphertext of a message without MsgType", "POST", "main", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModeSafe, msg: `{"ToUserName":"gh_test"}`})
		}, 400},
	}
	for _, body := range []string{"", "garbage", "<xml>", "{", "[]", `"string"`, "null", `{"MsgType":123x}`,
		`<xml><MsgType>event</MsgType><CreateTime>abc</CreateTime></xml>`,
		`{"MsgType":"event","Event":"subscribe_msg_popup_event","List":"tplA"}`,
		`{"MsgType":"event","Event":"subscribe_msg_popup_event","List":{"SubscribeStatusString":"accept"}}`,
		`{"MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"t","MsgID":"1","ErrorCode":"oops"}}`,
		"\x00\x01\x02"} {
		tests = append(tests, struct {
			name   string
			method string
			app    string
			req    func() wireRequest
			status int
		}{"plaintext garbage " + strconv.Quote(body), "POST", "migrating", func() wireRequest {
			return wire(t, pushSpec{mode: wechat.ModePlaintext, msg: body})
		}, 400})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			r := tt.req()
			code, _, hdr := f.do(tt.method, tt.app, r.query.Encode(), r.body)
			if code != tt.status {
				t.Errorf("status = %d, want %d", code, tt.status)
			}
			if code == 405 && hdr.Get("Allow") != "GET, POST" {
				t.Errorf("Allow = %q", hdr.Get("Allow"))
			}
			if n := len(f.handled()); n != 0 {
				t.Errorf("Handle called %d times, want 0", n)
			}
		})
	}
}

// The window is inclusive at both ends: ±MaxSkew exactly is accepted.
func TestPushTimestampWindowEdges(t *testing.T) {
	for _, d := range []int{-300, 300} {
		f := newFixture(t)
		code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: eventCases[0].json, ts: strconv.Itoa(baseTime + d)}))
		if code != 200 || len(f.handled()) != 1 {
			t.Errorf("timestamp now%+ds: status %d, %d calls; want 200, 1", d, code, len(f.handled()))
		}
	}
	f := newFixture(t)
	f.h.MaxSkew = 10 * time.Second
	code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: eventCases[0].json, ts: strconv.Itoa(baseTime - 11)}))
	if code != 403 || len(f.handled()) != 0 {
		t.Errorf("MaxSkew 10s, 11s old: status %d, %d calls; want 403, 0", code, len(f.handled()))
	}
}

func TestPushOversized(t *testing.T) {
	big := `{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"text","Content":"` + strings.Repeat("x", 2048) + `"}`

	t.Run("Content-Length over the limit", func(t *testing.T) {
		f := newFixture(t)
		f.h.MaxBody = 1024
		code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModePlaintext, msg: big}))
		if code != 413 || len(f.handled()) != 0 {
			t.Errorf("status %d, %d calls; want 413, 0", code, len(f.handled()))
		}
	})
	t.Run("default limit is 64 KiB", func(t *testing.T) {
		f := newFixture(t)
		huge := strings.Replace(big, strings.Repeat("x", 2048), strings.Repeat("x", 64<<10), 1)
		code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: huge}))
		if code != 413 || len(f.handled()) != 0 {
			t.Errorf("status %d, %d calls; want 413, 0", code, len(f.handled()))
		}
		// Just under the limit passes.
		code, _ = f.post("migrating", wire(t, pushSpec{mode: wechat.ModePlaintext, msg: big}))
		if code != 200 || len(f.handled()) != 1 {
			t.Errorf("2 KiB: status %d, %d calls; want 200, 1", code, len(f.handled()))
		}
	})
	t.Run("declared length refused unread", func(t *testing.T) {
		f := newFixture(t)
		r := wire(t, pushSpec{mode: wechat.ModePlaintext, msg: eventCases[0].json})
		body := &countingReader{r: bytes.NewReader(make([]byte, 10<<20))}
		req := httptest.NewRequest(http.MethodPost, "/wechat/callback/main?"+r.query.Encode(), body)
		req.ContentLength = 10 << 20
		rec := httptest.NewRecorder()
		f.mux.ServeHTTP(rec, req)
		if rec.Code != 413 || body.n != 0 || len(f.handled()) != 0 {
			t.Errorf("status %d, read %d bytes, %d calls; want 413, 0, 0", rec.Code, body.n, len(f.handled()))
		}
	})
	t.Run("unknown length read only up to the limit", func(t *testing.T) {
		f := newFixture(t)
		r := wire(t, pushSpec{mode: wechat.ModePlaintext, msg: eventCases[0].json})
		body := &countingReader{r: bytes.NewReader(make([]byte, 10<<20))}
		req := httptest.NewRequest(http.MethodPost, "/wechat/callback/main?"+r.query.Encode(), body)
		req.ContentLength = -1
		rec := httptest.NewRecorder()
		f.mux.ServeHTTP(rec, req)
		if rec.Code != 413 || body.n > 2*wechat.DefaultPushMaxBody || len(f.handled()) != 0 {
			t.Errorf("status %d, read %d bytes, %d calls; want 413, ≤ %d, 0", rec.Code, body.n, len(f.handled()), 2*wechat.DefaultPushMaxBody)
		}
	})
	t.Run("chunked over the real server", func(t *testing.T) {
		f := newFixture(t)
		f.h.MaxBody = 1024
		r := wire(t, pushSpec{mode: wechat.ModePlaintext, msg: big})
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/wechat/callback/main?"+r.query.Encode(), io.MultiReader(bytes.NewReader(r.body)))
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 || len(f.handled()) != 0 {
			t.Errorf("status %d, %d calls; want 413, 0", resp.StatusCode, len(f.handled()))
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestPushURLVerification(t *testing.T) {
	q := func(mut func(url.Values)) string {
		v, _ := url.ParseQuery(vecEGetQuery)
		if mut != nil {
			mut(v)
		}
		return v.Encode()
	}
	tests := []struct {
		name     string
		query    string
		at       int64
		wantCode int
		wantBody string
	}{
		{"valid", q(nil), vecEGetTimestamp, 200, vecEEchostr},
		{"echostr is returned unchanged, whatever it is", q(func(v url.Values) { v.Set("echostr", "<script>x</script>") }), vecEGetTimestamp, 200, "<script>x</script>"},
		{"bad signature", q(func(v url.Values) { v.Set("signature", strings.Repeat("f", 40)) }), vecEGetTimestamp, 401, ""},
		{"no signature", q(func(v url.Values) { v.Del("signature") }), vecEGetTimestamp, 401, ""},
		{"stale", q(nil), vecEGetTimestamp + 301, 403, ""},
		{"from the future", q(nil), vecEGetTimestamp - 301, 403, ""},
		{"no echostr", q(func(v url.Values) { v.Del("echostr") }), vecEGetTimestamp, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.setNow(tt.at)
			code, body, hdr := f.do(http.MethodGet, "vecE", tt.query, nil)
			if code != tt.wantCode || (tt.wantBody != "" && body != tt.wantBody) {
				t.Fatalf("answer = %d %q, want %d %q", code, body, tt.wantCode, tt.wantBody)
			}
			if code == 200 && (hdr.Get("Content-Type") != "text/plain; charset=utf-8" || hdr.Get("X-Content-Type-Options") != "nosniff") {
				t.Errorf("headers = %v; echostr must not be sniffable as HTML", hdr)
			}
			if len(f.handled()) != 0 {
				t.Error("URL verification reached Handle")
			}
		})
	}
	f := newFixture(t)
	if code, _, _ := f.do(http.MethodGet, "nosuchapp", vecEGetQuery, nil); code != 404 {
		t.Errorf("unknown app: %d, want 404", code)
	}
}

// ---- retries, replays, slow and failing Handle ----

func TestPushRetriesAreOne(t *testing.T) {
	for _, mode := range []string{wechat.ModePlaintext, wechat.ModeCompatible, wechat.ModeSafe} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t)
			msg := eventCases[1].xml
			// WeChat's three tries, each freshly signed (and encrypted) a few
			// seconds apart.
			for i := range 3 {
				f.setNow(baseTime + int64(5*i))
				code, body := f.post(appFor(mode), wire(t, pushSpec{mode: mode, msg: msg, ts: strconv.Itoa(baseTime + 5*i)}))
				if code != 200 || body != "success" {
					t.Fatalf("try %d: %d %q", i, code, body)
				}
			}
			if n := len(f.handled()); n != 1 {
				t.Fatalf("Handle called %d times for one push and its retries, want 1", n)
			}
			// A different push from the same user in the same second is not a retry.
			code, _ := f.post(appFor(mode), wire(t, pushSpec{mode: mode, msg: eventCases[2].xml, ts: strconv.Itoa(baseTime + 10)}))
			if code != 200 || len(f.handled()) != 2 {
				t.Fatalf("another event: %d, %d calls; want 200, 2", code, len(f.handled()))
			}
		})
	}
}

func TestPushReplayChangesNothing(t *testing.T) {
	f := newFixture(t)
	r := wire(t, pushSpec{mode: wechat.ModeSafe, msg: eventCases[0].json})
	for i := range 5 {
		f.setNow(baseTime + int64(i*60))
		if code, body := f.post("main", r); code != 200 || body != "success" {
			t.Fatalf("replay %d: %d %q", i, code, body)
		}
	}
	if n := len(f.handled()); n != 1 {
		t.Fatalf("Handle called %d times, want 1", n)
	}
	f.setNow(baseTime + 301)
	if code, _ := f.post("main", r); code != 403 {
		t.Fatalf("replay after the window: %d, want 403", code)
	}
	if n := len(f.handled()); n != 1 {
		t.Fatalf("Handle called %d times, want 1", n)
	}
}

// A plaintext signature does not cover the body: a captured URL must not
// carry a second, different body.
func TestPushPlaintextSignatureVouchesForOneBody(t *testing.T) {
	f := newFixture(t)
	r := wire(t, pushSpec{mode: wechat.ModePlaintext, msg: eventCases[0].json})
	if code, _ := f.post("migrating", r); code != 200 {
		t.Fatalf("original: %d", code)
	}
	forged := wireRequest{r.query, []byte(strings.Replace(eventCases[2].json, "oUser1", "oVictim", 1))}
	if code, _ := f.post("migrating", forged); code != 403 {
		t.Errorf("forged body under a used signature: %d, want 403", code)
	}
	if code, _ := f.post("migrating", r); code != 200 {
		t.Errorf("the original again (a retry): want 200, got %d", code)
	}
	if n := len(f.handled()); n != 1 {
		t.Errorf("Handle called %d times, want 1", n)
	}

	// Nor may a captured URL-verification URL.
	f2 := newFixture(t)
	f2.setNow(vecEGetTimestamp)
	if code, _, _ := f2.do(http.MethodGet, "vecE", vecEGetQuery, nil); code != 200 {
		t.Fatalf("GET: %d", code)
	}
	if code, _, _ := f2.do(http.MethodPost, "vecE", vecEGetQuery, []byte(vecEPostBody)); code != 403 {
		t.Errorf("POST under the GET's signature: %d, want 403", code)
	}
	if n := len(f2.handled()); n != 0 {
		t.Errorf("Handle called %d times, want 0", n)
	}
}

func TestPushHandleErrorThenRetry(t *testing.T) {
	f := newFixture(t)
	fail := true
	f.onHandle(func(ctx context.Context, app string, p *wechat.Push) error {
		if fail {
			fail = false
			return errors.New("ledger unavailable")
		}
		return nil
	})
	msg := eventCases[3].json
	if code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg})); code != 500 {
		t.Fatalf("failing Handle: %d, want 500 so that WeChat retries", code)
	}
	if code, body := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg})); code != 200 || body != "success" {
		t.Fatalf("retry: %d %q", code, body)
	}
	if code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg})); code != 200 {
		t.Fatalf("second retry: %d", code)
	}
	if n := len(f.handled()); n != 2 {
		t.Errorf("Handle called %d times, want 2 (the failure and the retry)", n)
	}
}

func TestPushHandlePanics(t *testing.T) {
	f := newFixture(t)
	f.onHandle(func(context.Context, string, *wechat.Push) error { panic("bug in the bridge") })
	if code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: eventCases[0].json})); code != 500 {
		t.Fatalf("panicking Handle: %d, want 500", code)
	}
	f.onHandle(nil)
	if code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: eventCases[0].json})); code != 200 {
		t.Fatalf("after the panic: %d, want 200", code)
	}
}

// A Handle that overruns its deadline gets 500 (WeChat will retry); if it
// completes anyway, the retry is answered without a second call.
func TestPushSlowHandle(t *testing.T) {
	f := newFixture(t)
	f.h.HandleTimeout = 20 * time.Millisecond
	release, finished := make(chan struct{}), make(chan struct{})
	var deadlineSet bool
	f.onHandle(func(ctx context.Context, app string, p *wechat.Push) error {
		_, deadlineSet = ctx.Deadline()
		<-release // ignores ctx, as a badly behaved Handle would
		close(finished)
		return nil
	})
	msg := eventCases[2].json
	if code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg})); code != 500 {
		t.Fatalf("overrunning Handle: %d, want 500", code)
	}
	if code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg})); code != 500 {
		t.Fatalf("retry while the first is still running: %d, want 500", code)
	}
	close(release)
	<-finished
	if code, body := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg})); code != 200 || body != "success" {
		t.Fatalf("retry after it finished: %d %q", code, body)
	}
	if n := len(f.handled()); n != 1 {
		t.Errorf("Handle called %d times, want 1", n)
	}
	if !deadlineSet {
		t.Error("Handle's context has no deadline")
	}
}

// Retries that arrive together run Handle once.
func TestPushConcurrentRetries(t *testing.T) {
	f := newFixture(t)
	entered, release := make(chan struct{}, 8), make(chan struct{})
	f.onHandle(func(context.Context, string, *wechat.Push) error {
		entered <- struct{}{}
		<-release
		return nil
	})
	msg := eventCases[1].json
	reqs := make([]wireRequest, 6)
	for i := range reqs {
		reqs[i] = wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg})
	}
	codes := make([]int, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { codes[i], _ = f.post("main", r) })
	}
	<-entered
	close(release)
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d: %d", i, c)
		}
	}
	if n := len(f.handled()); n != 1 {
		t.Errorf("Handle called %d times, want 1", n)
	}
}

// A retry waiting on a first try that then fails gets a try of its own.
func TestPushRetryAfterFailedFirstTry(t *testing.T) {
	f := newFixture(t)
	entered, release := make(chan struct{}, 8), make(chan struct{})
	var n int
	f.onHandle(func(context.Context, string, *wechat.Push) error {
		entered <- struct{}{}
		if n++; n == 1 {
			<-release
			return errors.New("first try fails")
		}
		return nil
	})
	msg := eventCases[3].xml
	first, second := wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg}), wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg})
	var code1 int
	var wg sync.WaitGroup
	wg.Go(func() { code1, _ = f.post("main", first) })
	<-entered
	var code2 int
	wg.Go(func() { code2, _ = f.post("main", second) })
	close(release)
	wg.Wait()
	if code1 != 500 || code2 != 200 {
		t.Errorf("answers %d, %d; want 500, 200", code1, code2)
	}
	if got := len(f.handled()); got != 2 {
		t.Errorf("Handle called %d times, want 2", got)
	}
}

// The memory of handled pushes is bounded in time: past it, Handle's own
// idempotency takes over.
func TestPushMemoryExpires(t *testing.T) {
	f := newFixture(t)
	msg := eventCases[0].xml
	f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg}))
	later := int64(baseTime + 3600)
	f.setNow(later)
	if code, _ := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg, ts: strconv.FormatInt(later, 10)})); code != 200 {
		t.Fatalf("late retry: %d", code)
	}
	if n := len(f.handled()); n != 2 {
		t.Errorf("Handle called %d times, want 2", n)
	}
}

func TestPushUnknownTypesAreHandled(t *testing.T) {
	msgs := []string{
		`{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"user_enter_tempsession","SessionFrom":"x"}`,
		`<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName><CreateTime>1763700000</CreateTime><MsgType><![CDATA[miniprogrampage]]></MsgType><Title>t</Title></xml>`,
		`{"ToUserName":"gh_test","FromUserName":"oUser1","CreateTime":1763700000,"MsgType":"event","Event":"some_future_event","List":[{"Whatever":1}]}`,
	}
	for _, msg := range msgs {
		f := newFixture(t)
		code, body := f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: msg}))
		if code != 200 || body != "success" || len(f.handled()) != 1 {
			t.Errorf("%.60s: %d %q, %d calls; want 200 success, 1", msg, code, body, len(f.handled()))
		}
	}
}

// In compatible mode only the encrypted copy counts; the plaintext beside
// it is not signed.
func TestPushCompatibleIgnoresPlaintextCopy(t *testing.T) {
	f := newFixture(t)
	r := wire(t, pushSpec{mode: wechat.ModeCompatible, msg: eventCases[2].json})
	forged := strings.NewReplacer(`"FromUserName":"oUser1"`, `"FromUserName":"oVictim"`, `"reject"`, `"accept"`).Replace(string(r.body))
	if forged == string(r.body) {
		t.Fatal("test did not change the plaintext copy")
	}
	r.body = []byte(forged)
	if code, _ := f.post("main", r); code != 200 {
		t.Fatalf("status %d", code)
	}
	calls := f.handled()
	if len(calls) != 1 || calls[0].p.FromUserName != "oUser1" || calls[0].p.Subscriptions[0].Status != "reject" {
		t.Errorf("push = %+v; want the encrypted message's fields", calls[0].p)
	}
}

// An app with a key takes only pushes whose msg_signature covers the body.
// A plaintext push carries the three-part signature, which any real push
// URL (in a proxy or access log) hands to whoever reads it: with it a forged
// reject would zero a user's credits, a forged accept or delivery receipt
// would be believed. Refused as unsigned, whatever the body says, unless
// the app allows plaintext while it migrates.
func TestPushPlaintextToAppWithKey(t *testing.T) {
	for _, ec := range eventCases {
		for _, format := range []string{wechat.FormatJSON, wechat.FormatXML} {
			msg := ec.json
			if format == wechat.FormatXML {
				msg = ec.xml
			}
			t.Run(ec.name+"/"+format, func(t *testing.T) {
				f := newFixture(t)
				r := wire(t, pushSpec{mode: wechat.ModePlaintext, msg: msg})
				if code, body := f.post("main", r); code != http.StatusUnauthorized || body == "success" {
					t.Errorf("plaintext push with a valid signature to an app with a key: %d %q, want 401", code, body)
				}
				if n := len(f.handled()); n != 0 {
					t.Fatalf("Handle called %d times, want 0", n)
				}
				// The same request to the app that allows plaintext for its
				// migration: accepted (the refusal above bound nothing).
				if code, body := f.post("migrating", r); code != http.StatusOK || body != "success" {
					t.Fatalf("with plaintext allowed: %d %q, want 200 success", code, body)
				}
				if calls := f.handled(); len(calls) != 1 || calls[0].p.Mode != wechat.ModePlaintext || calls[0].app != "migrating" {
					t.Fatalf("with plaintext allowed: calls %+v", calls)
				}
			})
		}
	}
}

// Open says why: ErrPlaintextRefused, which is an ErrBadSignature.
func TestOpenPlaintextNeedsPermissionWhenKeyed(t *testing.T) {
	r := wire(t, pushSpec{mode: wechat.ModePlaintext, msg: eventCases[2].json})
	now := time.Unix(baseTime, 0)
	tests := []struct {
		name    string
		cfg     wechat.PushConfig
		wantErr error
	}{
		{"key, plaintext not allowed", testApps["main"], wechat.ErrPlaintextRefused},
		{"key, plaintext allowed", testApps["migrating"], nil},
		{"no key", wechat.PushConfig{AppID: mainAppID, Token: mainToken}, nil},
		{"no key, AllowPlaintext changes nothing", wechat.PushConfig{AppID: mainAppID, Token: mainToken, AllowPlaintext: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.cfg.Open(r.query, r.body, now, 0)
			if tt.wantErr == nil {
				if err != nil || p.Mode != wechat.ModePlaintext || p.Event != wechat.EventSubscribeChange {
					t.Fatalf("Open = %+v, %v; want the plaintext change event", p, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !errors.Is(err, wechat.ErrBadSignature) || p != nil {
				t.Fatalf("Open = %+v, %v; want %v (an ErrBadSignature)", p, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), mainAESKey) || strings.Contains(err.Error(), mainToken) {
				t.Errorf("error reveals a secret: %v", err)
			}
		})
	}
}

// URL verification carries no body and is the same in every mode: it keeps
// working for an app that refuses plaintext pushes.
func TestPushURLVerificationInEveryMode(t *testing.T) {
	for _, app := range []string{"main", "migrating"} {
		f := newFixture(t)
		q := wire(t, pushSpec{mode: wechat.ModePlaintext}).query
		q.Del("openid")
		q.Set("echostr", "echo-123")
		code, body, _ := f.do(http.MethodGet, app, q.Encode(), nil)
		if code != 200 || body != "echo-123" {
			t.Errorf("%s: GET verification = %d %q, want 200 echo-123", app, code, body)
		}
	}
}

// Plaintext allowed for a keyed app is warned about, loudly but not once
// per push.
func TestPushPlaintextAllowedIsWarned(t *testing.T) {
	var buf syncBuffer
	f := newFixture(t)
	f.h.Logger = newTestLogger(&buf)
	const warning = "accepted a plaintext push for an app with an EncodingAESKey"
	for i := range 3 {
		msg := strings.Replace(eventCases[0].json, "1763700000", strconv.Itoa(baseTime+i), 1)
		if code, _ := f.post("migrating", wire(t, pushSpec{mode: wechat.ModePlaintext, msg: msg})); code != 200 {
			t.Fatalf("push %d: %d", i, code)
		}
	}
	if n := strings.Count(buf.String(), warning); n != 1 {
		t.Fatalf("%d warnings for 3 plaintext pushes within minutes, want 1:\n%s", n, buf.String())
	}
	later := int64(baseTime + 11*60)
	f.setNow(later)
	msg := strings.Replace(eventCases[0].json, "1763700000", strconv.FormatInt(later, 10), 1)
	if code, _ := f.post("migrating", wire(t, pushSpec{mode: wechat.ModePlaintext, msg: msg, ts: strconv.FormatInt(later, 10)})); code != 200 {
		t.Fatalf("push 11 minutes later: %d", code)
	}
	if n := strings.Count(buf.String(), warning); n != 2 {
		t.Fatalf("%d warnings after 11 minutes, want 2", n)
	}
	// An app without a key has nothing better: no warning from the handler
	// (the bridge warns once when the rules load).
	buf2 := syncBuffer{}
	f2 := newFixture(t)
	f2.h.Logger = newTestLogger(&buf2)
	f2.setNow(vecEPostTimestamp)
	if code, _, _ := f2.do(http.MethodPost, "vecE", vecEPostQuery, []byte(vecEPostBody)); code != 200 {
		t.Fatalf("vecE plaintext: %d", code)
	}
	if strings.Contains(buf2.String(), warning) {
		t.Errorf("warned about an app without a key:\n%s", buf2.String())
	}
}

func TestPushNilConfigAndHandle(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/wechat/callback/{app}", &wechat.PushHandler{})
	r := wire(t, pushSpec{mode: wechat.ModeSafe, msg: eventCases[0].json})
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/wechat/callback/main?"+r.query.Encode(), bytes.NewReader(r.body)))
	if rec.Code != 404 {
		t.Errorf("no Config: %d, want 404", rec.Code)
	}
	mux = http.NewServeMux()
	mux.Handle("/wechat/callback/{app}", &wechat.PushHandler{
		Config: func(string) (wechat.PushConfig, bool) { return testApps["main"], true },
		Now:    func() time.Time { return time.Unix(baseTime, 0) },
	})
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/wechat/callback/main?"+r.query.Encode(), bytes.NewReader(r.body)))
	if rec.Code != 500 {
		t.Errorf("no Handle: %d, want 500 (a verified push must not be dropped silently)", rec.Code)
	}
}

// Open is the same protocol without HTTP, for other transports and tools.
func TestOpen(t *testing.T) {
	q, _ := url.ParseQuery(vecAQuery)
	p, err := testApps["vecA"].Open(q, []byte(vecABody), time.Unix(vecATimestamp, 0), 0)
	if err != nil || p.Event != "debug_demo" || p.Mode != wechat.ModeSafe {
		t.Fatalf("Open(vector A) = %+v, %v", p, err)
	}
	_, err = testApps["vecA"].Open(q, []byte(vecABody), time.Unix(vecATimestamp+3600, 0), 0)
	if !errors.Is(err, wechat.ErrStaleTimestamp) {
		t.Errorf("Open an hour later = %v, want ErrStaleTimestamp", err)
	}
	_, err = testApps["vecBm"].Open(mustQuery(t, vecBQuery), []byte(vecBBody), time.Unix(vecBTimestamp, 0), 0)
	if !errors.Is(err, wechat.ErrAppIDMismatch) {
		t.Errorf("Open(B) with the Mini Program's appid = %v, want ErrAppIDMismatch", err)
	}
	if err != nil && strings.Contains(err.Error(), vecBAESKey) {
		t.Error("error reveals the key")
	}
	echo, err := testApps["vecE"].VerifyURL(mustQuery(t, vecEGetQuery), time.Unix(vecEGetTimestamp, 0), time.Minute)
	if err != nil || echo != vecEEchostr {
		t.Errorf("VerifyURL(E) = %q, %v", echo, err)
	}
}

func mustQuery(t *testing.T, s string) url.Values {
	t.Helper()
	q, err := url.ParseQuery(s)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Refusals name what happened in the log, never the token, the key or the
// decrypted message.
func TestPushLogsNoSecrets(t *testing.T) {
	var buf syncBuffer
	f := newFixture(t)
	f.h.Logger = newTestLogger(&buf)
	secretMsg := strings.Replace(eventCases[0].json, "tplA", "tpl-SECRET-CONTENT", 1)
	f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: secretMsg, appid: "wxffffffffffffffff"}))
	f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: "SECRET-CONTENT not a message"}))
	f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: secretMsg, token: "bad"}))
	f.post("main", wire(t, pushSpec{mode: wechat.ModeSafe, msg: secretMsg}))
	out := buf.String()
	if !strings.Contains(out, "push refused") {
		t.Fatalf("nothing logged: %s", out)
	}
	for _, secret := range []string{mainToken, mainAESKey, "SECRET-CONTENT", hex.EncodeToString(mustKey(t, mainAESKey))} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q:\n%s", secret, out)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
