package wechattest_test

import (
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

const (
	pushToken = "AAAAA"
	aesKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

type received struct {
	path        string
	query       url.Values
	contentType string
	body        []byte
}

// receiver is a callback server that records every request and answers as
// its answer function says (default: 200 "success").
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []received
	answer func(n int, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, received{r.URL.Path, r.URL.Query(), r.Header.Get("Content-Type"), body})
		n := len(rc.reqs)
		rc.mu.Unlock()
		if rc.answer != nil {
			rc.answer(n, w, r)
			return
		}
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) received() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

// sha1Sorted is the signature computed independently of package wechat:
// sha1 over the sorted, concatenated parts, lowercase hex.
func sha1Sorted(parts ...string) string {
	s := append([]string(nil), parts...)
	sort.Strings(s)
	sum := sha1.Sum([]byte(strings.Join(s, "")))
	return hex.EncodeToString(sum[:])
}

func (f *fixture) callback(t *testing.T, rc *receiver, cb wechattest.Callback) {
	t.Helper()
	cb.URL = rc.srv.URL + "/wechat/callback/main"
	cb.Token = pushToken
	if cb.Mode != wechattest.Plaintext {
		cb.EncodingAESKey = aesKey
	}
	if err := f.emu.SetCallback(appID, cb); err != nil {
		t.Fatal(err)
	}
}

// onlyPush flushes and returns the single request the receiver got.
func onlyPush(t *testing.T, f *fixture, rc *receiver) received {
	t.Helper()
	f.emu.FlushPushes()
	got := rc.received()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	return got[0]
}

// xmlEvent is the XML shape of the three subscribe events.
type xmlEvent struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   string
	FromUserName string
	CreateTime   string
	MsgType      string
	Event        string
	Encrypt      string
	Popup        *xmlList `xml:"SubscribeMsgPopupEvent"`
	Change       *xmlList `xml:"SubscribeMsgChangeEvent"`
	Sent         *xmlList `xml:"SubscribeMsgSentEvent"`
}

type xmlList struct {
	List []struct {
		TemplateId            string
		SubscribeStatusString string
		PopupScene            string
		MsgID                 string
		ErrorCode             string
		ErrorStatus           string
	}
}

var safeXML = regexp.MustCompile(`^<xml><ToUserName><!\[CDATA\[gh_[0-9a-f]+\]\]></ToUserName><Encrypt><!\[CDATA\[[A-Za-z0-9+/=]+\]\]></Encrypt></xml>$`)

// openPush checks a push's signatures independently and returns its
// plaintext message.
func openPush(t *testing.T, r received, mode wechattest.Mode, format wechattest.Format) []byte {
	t.Helper()
	return openPushOf(t, r, mode, format, appID)
}

// openPushOf is openPush for a push of the app appid.
func openPushOf(t *testing.T, r received, mode wechattest.Mode, format wechattest.Format, appid string) []byte {
	t.Helper()
	q := r.query
	ts, nonce := q.Get("timestamp"), q.Get("nonce")
	if ts == "" || nonce == "" {
		t.Fatalf("query %v lacks timestamp or nonce", q)
	}
	if got := q.Get("signature"); got != sha1Sorted(pushToken, ts, nonce) {
		t.Fatalf("signature %s, want sha1(sort(token, timestamp, nonce))", got)
	}
	if mode == wechattest.Plaintext {
		for _, k := range []string{"encrypt_type", "msg_signature", "openid"} {
			if q.Has(k) {
				t.Fatalf("plaintext push has %s in its query: %v", k, q)
			}
		}
		return r.body
	}
	if q.Get("encrypt_type") != "aes" || q.Get("openid") == "" {
		t.Fatalf("encrypted push query %v: want encrypt_type=aes and openid", q)
	}
	var encrypt, toUser string
	var plainFields map[string]json.RawMessage
	var plainXML xmlEvent
	if format == wechattest.JSON {
		if err := json.Unmarshal(r.body, &plainFields); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
		_ = json.Unmarshal(plainFields["Encrypt"], &encrypt)
		_ = json.Unmarshal(plainFields["ToUserName"], &toUser)
	} else {
		if err := xml.Unmarshal(r.body, &plainXML); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
		encrypt, toUser = plainXML.Encrypt, plainXML.ToUserName
	}
	if encrypt == "" || !strings.HasPrefix(toUser, "gh_") {
		t.Fatalf("encrypted push body %s: want ToUserName gh_... and Encrypt", r.body)
	}
	if got := q.Get("msg_signature"); got != sha1Sorted(pushToken, ts, nonce, encrypt) {
		t.Fatalf("msg_signature %s, want sha1(sort(token, timestamp, nonce, Encrypt))", got)
	}
	key, err := wechat.AESKey(aesKey)
	if err != nil {
		t.Fatal(err)
	}
	plain, gotAppID, err := wechat.Decrypt(key, encrypt)
	if err != nil || gotAppID != appid {
		t.Fatalf("decrypt: %v, appid %q, want %q", err, gotAppID, appid)
	}
	switch {
	case mode == wechattest.Safe && format == wechattest.JSON:
		if len(plainFields) != 2 {
			t.Fatalf("safe JSON body has more than ToUserName and Encrypt: %s", r.body)
		}
	case mode == wechattest.Safe:
		if !safeXML.Match(r.body) {
			t.Fatalf("safe XML body has more than ToUserName and Encrypt: %s", r.body)
		}
	case mode == wechattest.Compatible && format == wechattest.JSON:
		// The plaintext fields sit next to Encrypt and say the same.
		var inner map[string]json.RawMessage
		_ = json.Unmarshal(plain, &inner)
		delete(plainFields, "Encrypt")
		if !reflect.DeepEqual(plainFields, inner) {
			t.Fatalf("compatible body %s does not carry the plaintext %s", r.body, plain)
		}
	case mode == wechattest.Compatible:
		var inner xmlEvent
		_ = xml.Unmarshal(plain, &inner)
		plainXML.Encrypt = ""
		if !reflect.DeepEqual(plainXML, inner) {
			t.Fatalf("compatible body %s does not carry the plaintext %s", r.body, plain)
		}
	}
	return plain
}

func TestPushPopupEventInEveryModeAndFormat(t *testing.T) {
	for _, mode := range []wechattest.Mode{wechattest.Plaintext, wechattest.Compatible, wechattest.Safe} {
		for _, format := range []wechattest.Format{wechattest.JSON, wechattest.XML} {
			t.Run(mode.String()+"/"+format.String(), func(t *testing.T) {
				f := newFixture(t, wechattest.Options{})
				rc := newReceiver(t, nil)
				f.callback(t, rc, wechattest.Callback{Mode: mode, Format: format})
				f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept"})
				r := onlyPush(t, f, rc)
				if r.path != "/wechat/callback/main" {
					t.Errorf("pushed to %s", r.path)
				}
				wantType := map[wechattest.Format]string{wechattest.JSON: "application/json", wechattest.XML: "text/xml"}[format]
				if r.contentType != wantType {
					t.Errorf("Content-Type %q, want %q", r.contentType, wantType)
				}
				plain := openPush(t, r, mode, format)
				now := strconv.FormatInt(f.clock.Now().Unix(), 10)
				if ts := r.query.Get("timestamp"); ts != now {
					t.Errorf("timestamp %s, want %s", ts, now)
				}
				if mode != wechattest.Plaintext && r.query.Get("openid") != alice {
					t.Errorf("openid in query %q", r.query.Get("openid"))
				}
				if format == wechattest.JSON {
					var m struct {
						ToUserName, FromUserName, MsgType, Event string
						CreateTime                               json.Number
						List                                     map[string]string
					}
					if err := json.Unmarshal(plain, &m); err != nil {
						t.Fatalf("message %s: %v", plain, err)
					}
					if m.FromUserName != alice || m.MsgType != "event" || m.Event != wechattest.EventPopup ||
						m.CreateTime.String() != now || !strings.HasPrefix(m.ToUserName, "gh_") ||
						!reflect.DeepEqual(m.List, map[string]string{"TemplateId": tplOnce, "SubscribeStatusString": "accept", "PopupScene": "0"}) {
						t.Errorf("message %s", plain)
					}
					if !strings.Contains(string(plain), `"CreateTime":`+now+`,`) {
						t.Errorf("CreateTime is not a bare number in %s", plain)
					}
				} else {
					var m xmlEvent
					if err := xml.Unmarshal(plain, &m); err != nil {
						t.Fatalf("message %s: %v", plain, err)
					}
					if m.FromUserName != alice || m.Event != wechattest.EventPopup || m.CreateTime != now || m.Popup == nil ||
						len(m.Popup.List) != 1 || m.Popup.List[0].TemplateId != tplOnce ||
						m.Popup.List[0].SubscribeStatusString != "accept" || m.Popup.List[0].PopupScene != "0" {
						t.Errorf("message %s", plain)
					}
					if !strings.Contains(string(plain), "<CreateTime>"+now+"</CreateTime>") {
						t.Errorf("CreateTime is not a bare number in %s", plain)
					}
				}
				// Pushes() shows what was pushed and how it was answered.
				p := f.emu.Pushes()
				if len(p) != 1 || !p[0].Delivered || len(p[0].Tries) != 1 || p[0].Tries[0].Status != 200 ||
					p[0].Tries[0].Reply != "success" || p[0].Message != string(plain) || p[0].Body != string(r.body) ||
					p[0].Event != wechattest.EventPopup || p[0].OpenID != alice {
					t.Errorf("Pushes() = %+v", p)
				}
			})
		}
	}
}

func TestPushJSONListIsAnObjectForOneEntryAndAnArrayForSeveral(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	rc := newReceiver(t, nil)
	f.callback(t, rc, wechattest.Callback{Mode: wechattest.Plaintext, Format: wechattest.JSON})
	f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept"})
	f.emu.FlushPushes()
	f.emu.Subscribe(appID, bob, map[string]string{tplOnce: "accept", tplEnum: "reject"})
	f.emu.FlushPushes()
	got := rc.received()
	if len(got) != 2 {
		t.Fatalf("%d pushes", len(got))
	}
	lists := map[string]json.RawMessage{}
	for _, r := range got {
		var m struct {
			FromUserName string
			List         json.RawMessage
		}
		_ = json.Unmarshal(r.body, &m)
		lists[m.FromUserName] = m.List
	}
	if l := lists[alice]; len(l) == 0 || l[0] != '{' {
		t.Errorf("one entry: List %s, want an object", l)
	}
	var entries []map[string]string
	if err := json.Unmarshal(lists[bob], &entries); err != nil || len(entries) != 2 {
		t.Fatalf("two entries: List %s, want an array of 2", lists[bob])
	}
	status := map[string]string{}
	for _, e := range entries {
		status[e["TemplateId"]] = e["SubscribeStatusString"]
	}
	if status[tplOnce] != "accept" || status[tplEnum] != "reject" {
		t.Errorf("entries %v", entries)
	}
}

func TestPushXMLWithSeveralEntries(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	rc := newReceiver(t, nil)
	f.callback(t, rc, wechattest.Callback{Mode: wechattest.Safe, Format: wechattest.XML})
	f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept", tplEnum: "reject"})
	plain := openPush(t, onlyPush(t, f, rc), wechattest.Safe, wechattest.XML)
	var m xmlEvent
	if err := xml.Unmarshal(plain, &m); err != nil || m.Popup == nil || len(m.Popup.List) != 2 {
		t.Fatalf("XML with two entries: %v %s", err, plain)
	}
}

func TestSentEventForEveryAcceptedSend(t *testing.T) {
	for _, format := range []wechattest.Format{wechattest.JSON, wechattest.XML} {
		t.Run(format.String(), func(t *testing.T) {
			f := newFixture(t, wechattest.Options{})
			rc := newReceiver(t, nil)
			f.callback(t, rc, wechattest.Callback{Mode: wechattest.Compatible, Format: format, SentEvents: true, SentEventDelay: -1})
			f.emu.Accept(appID, alice, tplOnce)
			tok := f.token()
			a := f.send(tok, msg(alice, tplOnce, goodOnce))
			wantErr(t, f.send(tok, msg(alice, tplOnce, goodOnce)), 43101, "") // refused sends push nothing
			msgid := string(a.fields["msgid"])
			plain := openPush(t, onlyPush(t, f, rc), wechattest.Compatible, format)
			if format == wechattest.JSON {
				var m struct {
					Event, FromUserName string
					List                map[string]any
				}
				_ = json.Unmarshal(plain, &m)
				// MsgID and ErrorCode are strings, as in the official JSON example.
				want := map[string]any{"TemplateId": tplOnce, "MsgID": msgid, "ErrorCode": "0", "ErrorStatus": "success"}
				if m.Event != wechattest.EventSent || m.FromUserName != alice || !reflect.DeepEqual(m.List, want) {
					t.Errorf("sent event %s", plain)
				}
				return
			}
			var m xmlEvent
			_ = xml.Unmarshal(plain, &m)
			if m.Event != wechattest.EventSent || m.Sent == nil || len(m.Sent.List) != 1 || m.Sent.List[0].MsgID != msgid ||
				m.Sent.List[0].ErrorCode != "0" || m.Sent.List[0].ErrorStatus != "success" {
				t.Errorf("sent event %s", plain)
			}
			if !strings.Contains(string(plain), "<MsgID>"+msgid+"</MsgID>") {
				t.Errorf("XML MsgID is not a bare number: %s", plain)
			}
		})
	}
}

func TestUnsubscribePushesAChangeEvent(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	rc := newReceiver(t, nil)
	f.callback(t, rc, wechattest.Callback{Mode: wechattest.Plaintext, Format: wechattest.XML})
	f.emu.Accept(appID, alice, tplOnce)
	f.emu.Accept(appID, alice, tplOnce)
	f.emu.Unsubscribe(appID, alice, tplOnce)
	if s := f.emu.Subscription(appID, alice, tplOnce); s.Status != wechattest.StatusReject || s.Credits != 0 {
		t.Fatalf("after unsubscribe: %+v", s)
	}
	r := onlyPush(t, f, rc)
	var m xmlEvent
	if err := xml.Unmarshal(openPush(t, r, wechattest.Plaintext, wechattest.XML), &m); err != nil {
		t.Fatal(err)
	}
	if m.Event != wechattest.EventChange || m.Change == nil || len(m.Change.List) != 1 ||
		m.Change.List[0].TemplateId != tplOnce || m.Change.List[0].SubscribeStatusString != "reject" || m.Popup != nil {
		t.Fatalf("change event %s", r.body)
	}
	if strings.Contains(string(r.body), "PopupScene") {
		t.Errorf("change event carries PopupScene: %s", r.body)
	}
}

func TestPushRetriesThreeTimesWithTheSameCreateTime(t *testing.T) {
	tests := []struct {
		name      string
		answer    func(n int, w http.ResponseWriter, r *http.Request)
		tries     int
		delivered bool
		// timeout is Callback.Timeout; 0: a minute, which no answer here
		// needs, so that load cannot turn a slow answer into a retry.
		timeout time.Duration
	}{
		{"third try succeeds", func(n int, w http.ResponseWriter, _ *http.Request) {
			if n < 3 {
				w.WriteHeader(http.StatusInternalServerError - 1 + n) // 500, then 501
				return
			}
			_, _ = io.WriteString(w, "success")
		}, 3, true, 0},
		{"never succeeds", func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }, 3, false, 0},
		// A try may time out before it even reaches the receiver (under
		// load), so the receiver sees at most three; the emulator made three.
		{"never answers in time", func(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, 3, false, 50 * time.Millisecond},
		{"first succeeds", nil, 1, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, wechattest.Options{})
			rc := newReceiver(t, tt.answer)
			timeout := cmp.Or(tt.timeout, time.Minute)
			f.callback(t, rc, wechattest.Callback{Mode: wechattest.Safe, Format: wechattest.JSON, Timeout: timeout})
			f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept"})
			f.emu.FlushPushes()
			p := f.emu.Pushes()
			if len(p) != 1 || len(p[0].Tries) != tt.tries || p[0].Delivered != tt.delivered {
				t.Fatalf("Pushes() = %+v", p)
			}
			got := rc.received()
			if n := len(got); n > tt.tries || n < tt.tries && tt.timeout == 0 {
				t.Fatalf("receiver got %d tries, want %d", n, tt.tries)
			}
			for _, r := range got {
				if string(r.body) != p[0].Body || r.query.Encode() != p[0].Query.Encode() {
					t.Fatalf("a try differs from the push:\n%s %s\n%s %s", p[0].Query.Encode(), p[0].Body, r.query.Encode(), r.body)
				}
			}
			createTimes := map[string]bool{}
			for _, r := range got {
				var m struct{ CreateTime json.Number }
				_ = json.Unmarshal(openPush(t, r, wechattest.Safe, wechattest.JSON), &m)
				createTimes[m.CreateTime.String()] = true
			}
			if len(createTimes) > 1 {
				t.Fatalf("CreateTime changed across tries: %v", createTimes)
			}
		})
	}
}

func TestCloseStopsPushDelivery(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	arrived := make(chan struct{}, 1)
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done() // never answers; the emulator must give up on Close
	})
	f.callback(t, rc, wechattest.Callback{Mode: wechattest.Plaintext, Timeout: time.Hour})
	f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept"})
	<-arrived
	if err := f.emu.Close(); err != nil {
		t.Fatal(err)
	}
	p := f.emu.Pushes()
	if len(p) != 1 || p[0].Delivered || len(p[0].Tries) != 1 || p[0].Tries[0].Err == "" {
		t.Fatalf("push cut off by Close: %+v", p)
	}
	if err := f.emu.PushEvent(appID, wechattest.Event{Type: wechattest.EventChange, OpenID: alice}); !errors.Is(err, wechattest.ErrClosed) {
		t.Fatalf("PushEvent after Close: %v, want ErrClosed", err)
	}
}

func TestPushMessageAndPushRaw(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	rc := newReceiver(t, nil)
	f.callback(t, rc, wechattest.Callback{Mode: wechattest.Compatible, Format: wechattest.JSON})

	demo := `{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}`
	if err := f.emu.PushMessage(appID, "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", []byte(demo)); err != nil {
		t.Fatal(err)
	}
	r := onlyPush(t, f, rc)
	if plain := openPush(t, r, wechattest.Compatible, wechattest.JSON); string(plain) != demo {
		t.Fatalf("PushMessage plaintext %s", plain)
	}

	q := url.Values{"signature": {"forged"}, "timestamp": {"1"}, "nonce": {"2"}}
	if err := f.emu.PushRaw(appID, q, []byte("<xml>not signed</xml>")); err != nil {
		t.Fatal(err)
	}
	f.emu.FlushPushes()
	got := rc.received()
	if len(got) != 2 || string(got[1].body) != "<xml>not signed</xml>" || got[1].query.Encode() != q.Encode() {
		t.Fatalf("PushRaw sent %+v", got[len(got)-1])
	}
	if err := f.emu.PushMessage(appID, alice, []byte("not an object")); err == nil {
		t.Fatal("compatible mode accepted a message it cannot add Encrypt to")
	}
}

func TestPushWithoutCallback(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	if err := f.emu.PushEvent(appID, wechattest.Event{Type: wechattest.EventPopup}); !errors.Is(err, wechattest.ErrNoCallback) {
		t.Fatalf("PushEvent without callback: %v", err)
	}
	// Subscribing without a callback changes state and pushes nothing.
	f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept"})
	f.emu.FlushPushes()
	if p := f.emu.Pushes(); len(p) != 0 || f.emu.Credits(appID, alice, tplOnce) != 1 {
		t.Fatalf("pushes %v, credits %d", p, f.emu.Credits(appID, alice, tplOnce))
	}
}

func TestSetCallbackRefusesBadConfig(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	tests := []struct {
		name string
		cb   wechattest.Callback
	}{
		{"not a URL", wechattest.Callback{URL: "callback"}},
		{"ftp", wechattest.Callback{URL: "ftp://example.com/cb"}},
		{"safe without key", wechattest.Callback{URL: "http://127.0.0.1/cb", Mode: wechattest.Safe}},
		{"compatible with a short key", wechattest.Callback{URL: "http://127.0.0.1/cb", Mode: wechattest.Compatible, EncodingAESKey: "abc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.emu.SetCallback(appID, tt.cb); err == nil {
				t.Fatal("accepted")
			}
			if err := tt.cb.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}

func TestParseModeAndFormat(t *testing.T) {
	for _, s := range []string{"plaintext", "compatible", "safe", "SAFE"} {
		m, err := wechattest.ParseMode(s)
		if err != nil || !strings.EqualFold(m.String(), s) {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	for _, s := range []string{"json", "xml"} {
		f, err := wechattest.ParseFormat(s)
		if err != nil || f.String() != s {
			t.Errorf("ParseFormat(%q) = %v, %v", s, f, err)
		}
	}
	if _, err := wechattest.ParseMode("aes"); err == nil {
		t.Error("ParseMode(aes) accepted")
	}
	if _, err := wechattest.ParseFormat("yaml"); err == nil {
		t.Error("ParseFormat(yaml) accepted")
	}
}

// The receiving half of the protocol (package wechat) opens every push the
// emulator makes: the two halves agree on signatures, crypto and shapes.
func TestPushesOpenWithPackageWechat(t *testing.T) {
	for _, mode := range []wechattest.Mode{wechattest.Plaintext, wechattest.Compatible, wechattest.Safe} {
		for _, format := range []wechattest.Format{wechattest.JSON, wechattest.XML} {
			t.Run(mode.String()+"/"+format.String(), func(t *testing.T) {
				f := newFixture(t, wechattest.Options{})
				rc := newReceiver(t, nil)
				f.callback(t, rc, wechattest.Callback{Mode: mode, Format: format, SentEvents: true, SentEventDelay: -1})
				f.emu.Subscribe(appID, alice, map[string]string{tplOnce: "accept", tplEnum: "reject"})
				a := f.send(f.token(), msg(alice, tplOnce, goodOnce))
				f.emu.Unsubscribe(appID, alice, tplOnce)
				f.emu.FlushPushes()
				// The emulator's app has a key in every mode: a receiver
				// takes its plaintext pushes only if it allows them.
				cfg := wechat.PushConfig{AppID: appID, Token: pushToken, EncodingAESKey: aesKey, AllowPlaintext: mode == wechattest.Plaintext}
				events := map[string]*wechat.Push{}
				for _, r := range rc.received() {
					p, err := cfg.Open(r.query, r.body, f.clock.Now(), 5*time.Minute)
					if err != nil {
						t.Fatalf("Open: %v\n%s", err, r.body)
					}
					if p.Mode != mode.String() || p.Format != format.String() || p.FromUserName != alice {
						t.Errorf("opened %+v", p)
					}
					events[p.Event] = p
				}
				popup, change, sent := events[wechattest.EventPopup], events[wechattest.EventChange], events[wechattest.EventSent]
				if popup == nil || len(popup.Subscriptions) != 2 {
					t.Fatalf("popup event: %+v", popup)
				}
				if change == nil || len(change.Subscriptions) != 1 || change.Subscriptions[0] != (wechat.SubscriptionEvent{TemplateID: tplOnce, Status: "reject"}) {
					t.Fatalf("change event: %+v", change)
				}
				want := wechat.SentEvent{TemplateID: tplOnce, MsgID: string(a.fields["msgid"]), ErrorCode: 0, ErrorStatus: "success"}
				if sent == nil || len(sent.Sent) != 1 || sent.Sent[0] != want {
					t.Fatalf("sent event: %+v", sent)
				}
			})
		}
	}
}

// The delivery report comes a while after the send was answered; an
// emulator closed meanwhile never pushes it.
func TestSentEventWaitsItsDelayAndCloseCancelsIt(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	rc := newReceiver(t, nil)
	f.callback(t, rc, wechattest.Callback{Mode: wechattest.Safe, SentEvents: true, SentEventDelay: time.Hour})
	if a := f.send(f.token(), msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
		t.Fatalf("send: %s", a.body)
	}
	if err := f.emu.Close(); err != nil {
		t.Fatal(err)
	}
	p := f.emu.Pushes()
	if len(p) != 1 || p[0].Event != wechattest.EventSent || p[0].Delivered || len(p[0].Tries) != 1 || p[0].Tries[0].Err == "" {
		t.Fatalf("Pushes() = %+v", p)
	}
	if got := rc.received(); len(got) != 0 {
		t.Fatalf("pushed before its delay: %d requests", len(got))
	}
}

func TestVerifyCallback(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	cfg := wechat.PushConfig{AppID: appID, Token: pushToken, EncodingAESKey: aesKey}
	good := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method != http.MethodGet || q.Get("signature") != sha1Sorted(pushToken, q.Get("timestamp"), q.Get("nonce")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		echo, err := cfg.VerifyURL(q, f.clock.Now(), time.Minute)
		if err != nil {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, echo)
	})
	f.callback(t, good, wechattest.Callback{Mode: wechattest.Safe})
	if err := f.emu.VerifyCallback(context.Background(), appID); err != nil {
		t.Fatalf("a receiver that echoes: %v", err)
	}

	bad := newReceiver(t, nil) // answers "success", not the echostr
	f.callback(t, bad, wechattest.Callback{Mode: wechattest.Safe})
	if err := f.emu.VerifyCallback(context.Background(), appID); !errors.Is(err, wechattest.ErrVerifyFailed) {
		t.Fatalf("a receiver that does not echo: %v", err)
	}
	if err := f.emu.VerifyCallback(context.Background(), otherID); !errors.Is(err, wechattest.ErrNoCallback) {
		t.Fatalf("no callback: %v", err)
	}
}
