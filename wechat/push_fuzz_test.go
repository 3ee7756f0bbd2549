package wechat_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

// Everything that parses what arrives on the callback URL is fuzzed. The seed
// corpus (the reference's vectors and the §6 shapes) runs with go test; run
// a fuzzer with e.g.
//
//	go test ./wechat -run '^$' -fuzz '^FuzzParseJSON$' -fuzztime 30s

func parseSeeds(format string) []string {
	var seeds []string
	for _, ec := range eventCases {
		if format == wechat.FormatJSON {
			seeds = append(seeds, ec.json)
		} else {
			seeds = append(seeds, ec.xml)
		}
	}
	if format == wechat.FormatJSON {
		return append(seeds, vecAMsg, vecABody, vecEPostBody, vecAReplyJSON,
			`{"MsgType":"event","Event":"subscribe_msg_change_event","SubscribeMsgChangeEvent":{"List":[{"TemplateId":"t"}]}}`,
			`{"MsgType":"event","Event":"subscribe_msg_sent_event","List":{"TemplateId":"t","MsgID":1e400,"ErrorCode":"99999999999999999999"}}`)
	}
	return append(seeds, vecBMsg, vecBBody, vecDMsg, vecDBody, vecCReplyMsg,
		`<xml><MsgType>event</MsgType><Event>subscribe_msg_change_event</Event><SubscribeMsgPopupEvent><List><TemplateId>t</TemplateId></List></SubscribeMsgPopupEvent></xml>`,
		`<!DOCTYPE x [<!ENTITY a "aaaa">]><xml><MsgType>&a;</MsgType></xml>`)
}

// checkParsed holds for every accepted message, whatever its bytes.
func checkParsed(t *testing.T, p *wechat.Push, format string) {
	t.Helper()
	if p.MsgType == "" || p.Format != format {
		t.Fatalf("accepted a push without MsgType or with format %q", p.Format)
	}
	for _, s := range p.Subscriptions {
		if s.TemplateID == "" {
			t.Fatal("accepted a subscription without a template id")
		}
	}
	for _, s := range p.Sent {
		if s.TemplateID == "" || s.MsgID == "" {
			t.Fatal("accepted a sent event without template id or msgid")
		}
	}
	if j := p.TemplateJob; j != nil && (j.MsgID == "" || j.MsgID != p.MsgID || p.Event != wechat.EventTemplateSendJobFinish) {
		t.Fatalf("accepted a template receipt %+v with MsgID %q on event %q", j, p.MsgID, p.Event)
	}
	if (p.Follow != nil) != (p.MsgType == "event" && (p.Event == wechat.EventFollow || p.Event == wechat.EventUnfollow)) {
		t.Fatalf("Follow %+v on event %q", p.Follow, p.Event)
	}
	if k := p.DedupeKey(); k == "" || len(k) > 512 {
		t.Fatalf("DedupeKey of %d bytes", len(k))
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range parseSeeds(wechat.FormatJSON) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := wechat.ParsePush(body, wechat.FormatJSON)
		if err != nil {
			return
		}
		checkParsed(t, p, wechat.FormatJSON)
	})
}

func FuzzParseXML(f *testing.F) {
	for _, s := range parseSeeds(wechat.FormatXML) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := wechat.ParsePush(body, wechat.FormatXML)
		if err != nil {
			return
		}
		checkParsed(t, p, wechat.FormatXML)
	})
}

// FuzzDecrypt feeds arbitrary Encrypt fields to the decryptor under a
// non-zero and the all-zero key.
func FuzzDecrypt(f *testing.F) {
	for _, v := range []string{bodyEncrypt(f, vecABody), vecAReplyEncrypt, vecBEncrypt, vecBReplyEncrypt, vecCEncrypt, vecCReplyEncrypt, bodyEncrypt(f, vecDBody), "", "AAAA", "====", "\n"} {
		f.Add(v, true)
		f.Add(v, false)
	}
	keyC, keyA := mustKey(f, vecCAESKey), mustKey(f, vecAAESKey)
	f.Fuzz(func(t *testing.T, enc string, useC bool) {
		key := keyA
		if useC {
			key = keyC
		}
		msg, appid, err := wechat.Decrypt(key, enc)
		if err != nil {
			return
		}
		// Whatever decrypts must survive a round trip.
		again, err := wechat.Encrypt(key, appid, msg, nil)
		if err != nil {
			t.Fatalf("re-encrypt: %v", err)
		}
		msg2, appid2, err := wechat.Decrypt(key, again)
		if err != nil || !bytes.Equal(msg, msg2) || appid != appid2 {
			t.Fatalf("round trip: %q %q %v", msg2, appid2, err)
		}
	})
}

// FuzzEncryptRoundTrip: any message and appid come back as they went in,
// and the independent decryptor agrees.
func FuzzEncryptRoundTrip(f *testing.F) {
	f.Add([]byte(vecCMsg), vecCAppID, []byte(vecCRandom))
	f.Add([]byte(""), "", []byte("0123456789abcdef"))
	f.Add([]byte(vecBMsg), vecBPlatformAppID, []byte(vecBRandom))
	key := mustKey(f, vecCAESKey)
	f.Fuzz(func(t *testing.T, msg []byte, appid string, random []byte) {
		if len(random) != 16 {
			random = nil
		}
		enc, err := wechat.Encrypt(key, appid, msg, random)
		if err != nil {
			t.Fatal(err)
		}
		got, gotApp, err := wechat.Decrypt(key, enc)
		if err != nil || !bytes.Equal(got, msg) || gotApp != appid {
			t.Fatalf("Decrypt(Encrypt) = %q, %q, %v", got, gotApp, err)
		}
		if m, a, ok := indepDecrypt(t, key, key[:16], enc); !ok || !bytes.Equal(m, msg) || a != appid {
			t.Fatalf("independent decrypt = %q, %q, %v", m, a, ok)
		}
	})
}

// FuzzServeHTTP drives the handler with arbitrary methods, queries and
// bodies: it must never panic, must answer one of its documented statuses,
// and may call Handle only for a request it answers 200 or 500.
func FuzzServeHTTP(f *testing.F) {
	f.Add("POST", "vecA", vecAQuery, []byte(vecABody))
	f.Add("POST", "vecB", vecBQuery, []byte(vecBBody))
	f.Add("POST", "vecD", "signature="+vecDSignature+"&timestamp="+vecDTimestamp+"&nonce="+vecDNonce+"&encrypt_type=aes&msg_signature="+vecDMsgSignature, []byte(vecDBody))
	f.Add("POST", "vecE", vecEPostQuery, []byte(vecEPostBody))
	f.Add("GET", "vecE", vecEGetQuery, []byte(nil))
	f.Add("PUT", "vecA", vecAQuery, []byte(vecABody))
	f.Add("POST", "vecA", "encrypt_type=aes&msg_signature=x&timestamp=1&nonce=1", []byte(`{"Encrypt":"AAAA"}`))
	allowed := map[int]bool{200: true, 400: true, 401: true, 403: true, 404: true, 405: true, 413: true, 500: true}
	f.Fuzz(func(t *testing.T, method, app, rawQuery string, body []byte) {
		if !validMethod(method) || strings.ContainsAny(app, "/?#%") || app == "." || app == ".." {
			return
		}
		calls := 0
		var at time.Time
		if q, err := url.ParseQuery(rawQuery); err == nil {
			if ts := q.Get("timestamp"); ts != "" {
				at = time.Unix(parseOr(ts, baseTime), 0) // make the vectors fresh
			}
		}
		h := &wechat.PushHandler{
			Config: func(app string) (wechat.PushConfig, bool) {
				c, ok := testApps[app]
				return c, ok
			},
			Handle:  func(context.Context, string, *wechat.Push) error { calls++; return nil },
			MaxBody: 4 << 10,
			Now:     func() time.Time { return at },
		}
		mux := http.NewServeMux()
		mux.Handle("/wechat/callback/{app}", h)
		req := httptest.NewRequest("GET", "/", nil)
		req.Method = method
		req.URL = &url.URL{Path: "/wechat/callback/" + app, RawQuery: rawQuery}
		req.Body = httpBody(body)
		req.ContentLength = int64(len(body))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if app != "" && !allowed[rec.Code] {
			t.Fatalf("status %d", rec.Code)
		}
		if calls > 0 && rec.Code != 200 && rec.Code != 500 {
			t.Fatalf("Handle called for a request answered %d", rec.Code)
		}
		if calls > 0 && method != http.MethodPost {
			t.Fatalf("Handle called for %s", method)
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

func parseOr(s string, def int64) int64 {
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' || n > 1e15 {
			return def
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

type bodyReader struct{ *bytes.Reader }

func (bodyReader) Close() error { return nil }

func httpBody(b []byte) bodyReader { return bodyReader{bytes.NewReader(b)} }

// FuzzServeHTTPSigned gets past the signature: arbitrary messages, properly
// signed (and encrypted), must be answered 200 with one Handle call or 400
// with none.
func FuzzServeHTTPSigned(f *testing.F) {
	for _, format := range []string{wechat.FormatJSON, wechat.FormatXML} {
		for _, s := range parseSeeds(format) {
			f.Add([]byte(s), true)
			f.Add([]byte(s), false)
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte, safe bool) {
		mode := wechat.ModePlaintext
		if safe {
			mode = wechat.ModeSafe
		}
		r := wire(t, pushSpec{mode: mode, msg: string(msg)})
		calls := 0
		h := &wechat.PushHandler{
			Config: func(app string) (wechat.PushConfig, bool) { return testApps[appFor(mode)], true },
			Handle: func(context.Context, string, *wechat.Push) error { calls++; return nil },
			Now:    func() time.Time { return time.Unix(baseTime, 0) },
		}
		mux := http.NewServeMux()
		mux.Handle("/wechat/callback/{app}", h)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/wechat/callback/main?"+r.query.Encode(), bytes.NewReader(r.body)))
		switch {
		case rec.Code == 200 && calls == 1:
		case rec.Code == 400 && calls == 0:
		case rec.Code == 413 && calls == 0 && len(r.body) > wechat.DefaultPushMaxBody:
		default:
			t.Fatalf("%s: status %d with %d Handle calls", mode, rec.Code, calls)
		}
	})
}
