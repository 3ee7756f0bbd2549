package wechattest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

const (
	oaID     = "wx0a0a0a0a0a0a0a0a"
	oaSecret = "oa-s3cret"

	tplMsg     = "TM_statement" // template message: thing2, amount3, const4, time5
	tplBiz     = "TS_once"      // one-time subscription notification: thing1
	tplBizLong = "TS_long"      // long-term subscription notification: phrase1

	// carol is one person: o-carol in the Mini Program, oa-carol in the
	// official account, union-carol across both.
	carolMP    = "o-carol"
	carolOA    = "oa-carol"
	carolUnion = "union-carol"
)

var goodStatement = map[string]string{"thing2": "Acme 对账单", "amount3": "￥1280.50", "const4": "已出账", "time5": "2026-11-01 09:00"}

// newOAFixture is newFixture with an official account, its templates and
// carol, who does not follow it yet.
func newOAFixture(t *testing.T, opts wechattest.Options) *fixture {
	t.Helper()
	f := newFixture(t, opts)
	f.emu.AddOfficialAccount(oaID, oaSecret)
	f.emu.AddTemplate(oaID, wechattest.Template{ID: tplMsg, Title: "对账单通知", Kind: wechattest.TemplateMessage,
		Keywords: map[string]string{"thing2": "thing", "amount3": "amount", "const4": "const", "time5": "time"},
		Enums:    map[string][]string{"const4": {"已出账", "已结清"}}})
	f.emu.AddTemplate(oaID, wechattest.Template{ID: tplBiz, Title: "到货通知", Kind: wechattest.OneTime,
		Keywords: map[string]string{"thing1": "thing"}})
	f.emu.AddTemplate(oaID, wechattest.Template{ID: tplBizLong, Title: "状态提醒", Kind: wechattest.LongTerm,
		Keywords: map[string]string{"phrase1": "phrase"}})
	f.emu.AddPerson(wechattest.Person{UnionID: carolUnion, OpenIDs: map[string]string{appID: carolMP, oaID: carolOA}})
	return f
}

func (f *fixture) oaToken() string {
	f.t.Helper()
	a := f.do(http.MethodPost, wechattest.PathStableToken, nil,
		map[string]any{"grant_type": "client_credential", "appid": oaID, "secret": oaSecret})
	tok := a.str("access_token")
	if tok == "" {
		f.t.Fatalf("no official account token: %s", a.body)
	}
	return tok
}

func (f *fixture) post(path, tok string, body any) answer {
	f.t.Helper()
	return f.do(http.MethodPost, path, url.Values{"access_token": {tok}}, body)
}

// tmsg is a template/send body.
func tmsg(to, tpl string, data map[string]string, extra map[string]any) map[string]any {
	m := msg(to, tpl, data)
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func (f *fixture) oaCallback(t *testing.T, rc *receiver, cb wechattest.Callback) {
	t.Helper()
	cb.URL = rc.srv.URL + "/wechat/callback/oa"
	cb.Token = pushToken
	if cb.Mode != wechattest.Plaintext {
		cb.EncodingAESKey = aesKey
	}
	if err := f.emu.SetCallback(oaID, cb); err != nil {
		t.Fatal(err)
	}
}

// openWithClient opens a push the way wxbridge does, with package wechat's
// PushConfig: what the emulator pushes, the bridge can read.
func openWithClient(t *testing.T, f *fixture, r received, mode wechattest.Mode, appid string) *wechat.Push {
	t.Helper()
	cfg := wechat.PushConfig{AppID: appid, Token: pushToken}
	if mode != wechattest.Plaintext {
		cfg.EncodingAESKey = aesKey
	}
	p, err := cfg.Open(r.query, r.body, f.clock.Now(), time.Minute)
	if err != nil {
		t.Fatalf("Open(%s): %v", r.body, err)
	}
	return p
}

var modes = []wechattest.Mode{wechattest.Plaintext, wechattest.Compatible, wechattest.Safe}
var formats = []wechattest.Format{wechattest.JSON, wechattest.XML}

func TestTemplateSendToAFollower(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{})
	f.emu.Follow(oaID, carolOA)
	a := f.post(wechattest.PathTemplateSend, f.oaToken(), tmsg(carolOA, tplMsg, goodStatement, map[string]any{
		"url": "https://example.com/s/7", "client_msg_id": "evt-1.statement.u-carol",
		"miniprogram": map[string]string{"appid": appID, "pagepath": "pages/statement?id=7"}}))
	if a.errcode != 0 || a.errmsg != "ok" || len(a.num("msgid").String()) != 19 {
		t.Fatalf("template/send: %s", a.body)
	}
	want := wechattest.Sent{AppID: oaID, Path: wechattest.PathTemplateSend, MsgID: a.num("msgid").String(), ToUser: carolOA,
		TemplateID: tplMsg, URL: "https://example.com/s/7", MiniProgram: &wechat.MiniProgram{AppID: appID, PagePath: "pages/statement?id=7"},
		ClientMsgID: "evt-1.statement.u-carol", Data: goodStatement, At: f.clock.Now()}
	if got := f.emu.Sends(); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Fatalf("Sends() = %+v\nwant [%+v]", got, want)
	}
}

func TestTemplateSendRefusals(t *testing.T) {
	long := strings.Repeat("长", 21)
	tests := []struct {
		name  string
		setup func(f *fixture)
		tok   func(f *fixture) string // default: the official account's
		body  any
		code  int
		msg   string
	}{
		{name: "not following", body: tmsg(carolOA, tplMsg, goodStatement, nil), code: 43004, msg: "require subscribe"},
		{name: "unfollowed", setup: func(f *fixture) { f.emu.Follow(oaID, carolOA); f.emu.Unfollow(oaID, carolOA) },
			body: tmsg(carolOA, tplMsg, goodStatement, nil), code: 43004, msg: "require subscribe"},
		{name: "an openid the account never saw", body: tmsg("oa-nobody", tplMsg, goodStatement, nil), code: 40003, msg: "invalid openid"},
		{name: "the person's Mini Program openid", body: tmsg(carolMP, tplMsg, goodStatement, nil), code: 40003, msg: "invalid openid"},
		{name: "unknown template", body: tmsg(carolOA, "TM_nope", goodStatement, nil), code: 40037, msg: "invalid template_id"},
		{name: "a subscription notification template", body: tmsg(carolOA, tplBiz, map[string]string{"thing1": "x"}, nil), code: 40037, msg: "invalid template_id"},
		{name: "thing over 20", body: tmsg(carolOA, tplMsg, with(goodStatement, "thing2", long), nil), code: 47003, msg: "argument invalid! data.thing2.value invalid"},
		{name: "keyword left out", body: tmsg(carolOA, tplMsg, with(goodStatement, "time5", ""), nil), code: 47003, msg: "argument invalid! data.time5.value is empty"},
		{name: "const not an approved value", body: tmsg(carolOA, tplMsg, with(goodStatement, "const4", "已作废"), nil), code: 47003, msg: "argument invalid! data.const4.value invalid"},
		{name: "amount over 12 digits", body: tmsg(carolOA, tplMsg, with(goodStatement, "amount3", "￥12345678901.23"), nil), code: 47003, msg: "argument invalid! data.amount3.value invalid"},
		{name: "a mini program that is not one", body: tmsg(carolOA, tplMsg, goodStatement, map[string]any{"miniprogram": map[string]string{"appid": "wx9999999999999999"}}), code: 40013, msg: "invalid appid"},
		{name: "the account itself as the mini program", body: tmsg(carolOA, tplMsg, goodStatement, map[string]any{"miniprogram": map[string]string{"appid": oaID}}), code: 40013, msg: "invalid appid"},
		{name: "client_msg_id over 64 bytes", body: tmsg(carolOA, tplMsg, goodStatement, map[string]any{"client_msg_id": strings.Repeat("k", 65)}), code: 45067, msg: "clientmsgid size out of limit"},
		{name: "a Mini Program's token", tok: func(f *fixture) string { return f.token() }, body: tmsg(carolOA, tplMsg, goodStatement, nil), code: 48001, msg: "api unauthorized"},
		{name: "not JSON", body: "{", code: 47001, msg: "data format error"},
		{name: "daily quota", setup: func(f *fixture) { f.emu.SetFaults(wechattest.Faults{QuotaExhausted: true}) },
			body: tmsg(carolOA, tplMsg, goodStatement, nil), code: 45009, msg: "reach max api daily quota limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOAFixture(t, wechattest.Options{})
			if !strings.Contains(tt.name, "follow") {
				f.emu.AddFollower(oaID, carolOA, "")
			}
			if tt.setup != nil {
				tt.setup(f)
			}
			tok := f.oaToken()
			if tt.tok != nil {
				tok = tt.tok(f)
			}
			wantErr(t, f.post(wechattest.PathTemplateSend, tok, tt.body), tt.code, tt.msg)
			if got := f.emu.Sends(); len(got) != 0 {
				t.Errorf("a refused message was recorded: %+v", got)
			}
			if got := f.emu.Errors(); got[tt.code] != 1 {
				t.Errorf("Errors() = %v, want %d once", got, tt.code)
			}
		})
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{}
	for key, val := range m {
		out[key] = val
	}
	if v == "" {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

// The longest amount a template message takes is 12 digits, where a
// subscribe message stops at 10.
func TestTemplateSendAmountOf12Digits(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{})
	f.emu.AddFollower(oaID, carolOA, "")
	a := f.post(wechattest.PathTemplateSend, f.oaToken(), tmsg(carolOA, tplMsg, with(goodStatement, "amount3", "￥1234567890.12"), nil))
	if a.errcode != 0 {
		t.Fatalf("12 digits: %s", a.body)
	}
	if wechattest.ValidKeyword("amount", "￥1234567890.12", nil) {
		t.Error("a subscribe message takes 12 digits; it should stop at 10")
	}
}

// client_msg_id: one message per openid and id for 10 minutes; the repeat
// is refused with the first message's msgid and sends nothing.
func TestTemplateSendClientMsgIDRefusesARepeat(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{})
	f.emu.AddFollower(oaID, carolOA, "")
	f.emu.AddPerson(wechattest.Person{UnionID: "union-dan", OpenIDs: map[string]string{oaID: "oa-dan"}})
	f.emu.AddFollower(oaID, "oa-dan", "")
	tok := f.oaToken()
	send := func(to, id string) answer {
		extra := map[string]any{}
		if id != "" {
			extra["client_msg_id"] = id
		}
		return f.post(wechattest.PathTemplateSend, tok, tmsg(to, tplMsg, goodStatement, extra))
	}
	first := send(carolOA, "k1")
	if first.errcode != 0 {
		t.Fatalf("first: %s", first.body)
	}
	f.clock.Add(9*time.Minute + 59*time.Second)
	again := send(carolOA, "k1")
	wantErr(t, again, 45065, "clientmsgid exist")
	if again.num("msgid") != first.num("msgid") {
		t.Errorf("repeat msgid %s, want the first's %s", again.num("msgid"), first.num("msgid"))
	}
	if n := len(f.emu.Sends()); n != 1 {
		t.Fatalf("%d sends after a repeat, want 1", n)
	}
	// Another user, another id, or no id: new messages.
	for _, c := range []struct{ to, id string }{{"oa-dan", "k1"}, {carolOA, "k2"}, {carolOA, ""}, {carolOA, ""}} {
		if a := send(c.to, c.id); a.errcode != 0 || a.num("msgid") == first.num("msgid") {
			t.Errorf("send to %s with %q: %s", c.to, c.id, a.body)
		}
	}
	// After the window the id is forgotten.
	f.clock.Add(time.Second)
	if a := send(carolOA, "k1"); a.errcode != 0 || a.num("msgid") == first.num("msgid") {
		t.Errorf("after 10 minutes: %s", a.body)
	}
	if got := f.emu.Sends(); len(got) != 6 || got[0].ClientMsgID != "k1" || got[3].ClientMsgID != "" {
		t.Errorf("Sends() = %+v", got)
	}
}

// TEMPLATESENDJOBFINISH in every mode and format, as WeChat pushes it and
// as package wechat reads it: success, refused by the user, failed.
func TestTemplateJobFinishPushes(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(f *fixture)
		status string
	}{
		{"success", nil, wechat.TemplateStatusSuccess},
		{"user block", func(f *fixture) { f.emu.RefuseMessages(oaID, carolOA, true) }, wechat.TemplateStatusUserBlock},
		{"system failed", func(f *fixture) { f.emu.SetFaults(wechattest.Faults{TemplateJobFailRate: 1}) }, wechat.TemplateStatusSystemFailed},
	}
	for _, mode := range modes {
		for _, format := range formats {
			for _, c := range cases {
				t.Run(mode.String()+"/"+format.String()+"/"+c.name, func(t *testing.T) {
					f := newOAFixture(t, wechattest.Options{})
					f.emu.AddFollower(oaID, carolOA, "")
					rc := newReceiver(t, nil)
					f.oaCallback(t, rc, wechattest.Callback{Mode: mode, Format: format, SentEventDelay: -1})
					if c.setup != nil {
						c.setup(f)
					}
					a := f.post(wechattest.PathTemplateSend, f.oaToken(), tmsg(carolOA, tplMsg, goodStatement, nil))
					if a.errcode != 0 {
						t.Fatalf("template/send: %s", a.body)
					}
					msgid := a.num("msgid").String()
					r := onlyPush(t, f, rc)
					plain := openPushOf(t, r, mode, format, oaID)
					if format == wechattest.XML && !strings.Contains(string(plain), "<MsgID>"+msgid+"</MsgID><Status><![CDATA["+c.status+"]]></Status></xml>") {
						t.Errorf("XML receipt %s", plain)
					}
					if format == wechattest.JSON && !strings.Contains(string(plain), `"MsgID":"`+msgid+`","Status":"`+c.status+`"`) {
						t.Errorf("JSON receipt %s", plain)
					}
					p := openWithClient(t, f, r, mode, oaID)
					if p.Event != wechat.EventTemplateSendJobFinish || p.FromUserName != carolOA || p.TemplateJob == nil ||
						*p.TemplateJob != (wechat.TemplateJobEvent{MsgID: msgid, Status: c.status}) {
						t.Errorf("push read as %+v (job %+v)", p, p.TemplateJob)
					}
				})
			}
		}
	}
}

// Follow and unfollow push subscribe and unsubscribe in every mode and
// format; a follow through a QR code carries its scene.
func TestFollowPushes(t *testing.T) {
	for _, mode := range modes {
		for _, format := range formats {
			t.Run(mode.String()+"/"+format.String(), func(t *testing.T) {
				f := newOAFixture(t, wechattest.Options{})
				rc := newReceiver(t, nil)
				f.oaCallback(t, rc, wechattest.Callback{Mode: mode, Format: format})
				f.emu.FollowByQR(oaID, carolOA, "123123")
				f.emu.FlushPushes()
				f.emu.Follow(oaID, carolOA) // already following: nothing
				f.emu.FlushPushes()
				f.emu.Unfollow(oaID, carolOA)
				f.emu.FlushPushes()
				f.emu.Unfollow(oaID, carolOA) // already gone: nothing
				f.emu.Follow(oaID, carolOA)
				f.emu.FlushPushes()
				got := rc.received()
				if len(got) != 3 {
					t.Fatalf("%d pushes, want 3", len(got))
				}
				want := []wechat.FollowEvent{{Following: true, EventKey: "qrscene_123123"}, {}, {Following: true}}
				for i, r := range got {
					openPushOf(t, r, mode, format, oaID)
					p := openWithClient(t, f, r, mode, oaID)
					if p.Follow == nil || p.FromUserName != carolOA {
						t.Fatalf("push %d read as %+v", i, p)
					}
					ticket := p.Follow.Ticket
					p.Follow.Ticket = ""
					if *p.Follow != want[i] || (i == 0) != (ticket != "") {
						t.Errorf("push %d: %+v (ticket %q), want %+v", i, *p.Follow, ticket, want[i])
					}
					if scene, ok := p.Follow.QRScene(); i == 0 && (!ok || scene != "123123") {
						t.Errorf("QRScene() = %q, %v", scene, ok)
					}
				}
				if !f.emu.Following(oaID, carolOA) {
					t.Error("not following after following again")
				}
			})
		}
	}
}

// Subscription notifications: the credits of subscribe messages, the popup
// and change events on the official account's callback, and no need to
// follow.
func TestBizSend(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{})
	rc := newReceiver(t, nil)
	f.oaCallback(t, rc, wechattest.Callback{Mode: wechattest.Safe, Format: wechattest.XML, SentEvents: true, SentEventDelay: -1})
	tok := f.oaToken()
	send := func(tpl string, data map[string]string) answer {
		return f.post(wechattest.PathBizSend, tok, map[string]any{"touser": carolOA, "template_id": tpl,
			"page": "https://example.com/s/7", "miniprogram": map[string]string{"appid": appID, "pagepath": "pages/s"},
			"data": msg("", "", data)["data"]})
	}
	thing := map[string]string{"thing1": "Acme 到货"}
	wantErr(t, send(tplBiz, thing), 43101, "user refuse to accept the msg")

	res := f.emu.Subscribe(oaID, carolOA, map[string]string{tplBiz: "accept"})
	if res[tplBiz] != "accept" {
		t.Fatalf("Subscribe = %v", res)
	}
	f.emu.FlushPushes()
	popup := openWithClient(t, f, rc.received()[0], wechattest.Safe, oaID)
	if popup.Event != wechat.EventSubscribePopup || len(popup.Subscriptions) != 1 ||
		popup.Subscriptions[0] != (wechat.SubscriptionEvent{TemplateID: tplBiz, Status: "accept", PopupScene: "1"}) {
		t.Fatalf("popup %+v", popup)
	}

	a := send(tplBiz, thing)
	if a.errcode != 0 {
		t.Fatalf("with a credit: %s", a.body)
	}
	wantErr(t, send(tplBiz, thing), 43101, "user refuse to accept the msg") // the credit is spent
	f.emu.FlushPushes()
	sent := openWithClient(t, f, rc.received()[1], wechattest.Safe, oaID)
	if sent.Event != wechat.EventSubscribeSent || len(sent.Sent) != 1 || sent.Sent[0].MsgID != a.num("msgid").String() {
		t.Errorf("sent event %+v", sent)
	}
	got := f.emu.Sends()
	if len(got) != 1 || got[0].Path != wechattest.PathBizSend || got[0].Page != "https://example.com/s/7" ||
		got[0].MiniProgram == nil || got[0].MiniProgram.AppID != appID {
		t.Errorf("Sends() = %+v", got)
	}

	// Long-term: one accept, many sends, until the user turns it off.
	f.emu.Subscribe(oaID, carolOA, map[string]string{tplBizLong: "accept"})
	for i := range 3 {
		if a := send(tplBizLong, map[string]string{"phrase1": "已到货"}); a.errcode != 0 {
			t.Fatalf("long-term send %d: %s", i, a.body)
		}
	}
	f.emu.Unsubscribe(oaID, carolOA, tplBizLong)
	wantErr(t, send(tplBizLong, map[string]string{"phrase1": "已到货"}), 43101, "user refuse to accept the msg")
	f.emu.FlushPushes()
	var change *wechat.Push
	for _, r := range rc.received() {
		if p := openWithClient(t, f, r, wechattest.Safe, oaID); p.Event == wechat.EventSubscribeChange {
			change = p
		}
	}
	if change == nil || change.Subscriptions[0] != (wechat.SubscriptionEvent{TemplateID: tplBizLong, Status: "reject"}) {
		t.Errorf("change event %+v", change)
	}

	// The data is checked; a template message template is not a
	// subscription notification; a Mini Program's token cannot send them.
	f.emu.Accept(oaID, carolOA, tplBiz)
	wantErr(t, send(tplBiz, map[string]string{"thing1": strings.Repeat("长", 21)}), 47003, "argument invalid! data.thing1.value invalid")
	wantErr(t, send(tplMsg, goodStatement), 40037, "invalid template_id")
	wantErr(t, f.post(wechattest.PathBizSend, f.token(), map[string]any{"touser": carolOA, "template_id": tplBiz}), 48001, "api unauthorized")
	if f.emu.Credits(oaID, carolOA, tplBiz) != 1 {
		t.Error("a refused send spent the credit")
	}
	// And an official account's token cannot send subscribe messages.
	wantErr(t, f.send(tok, msg(alice, tplOnce, goodOnce)), 48001, "api unauthorized")
}

func TestUserInfo(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{})
	f.emu.FollowByQR(oaID, carolOA, "98765")
	f.emu.AddPerson(wechattest.Person{UnionID: "union-erin", OpenIDs: map[string]string{oaID: "oa-erin"}})
	f.emu.Follow(oaID, "oa-erin")
	f.emu.Unfollow(oaID, "oa-erin")
	tok := f.oaToken()
	get := func(openid string) answer {
		return f.do(http.MethodGet, wechattest.PathUserInfo, url.Values{"access_token": {tok}, "openid": {openid}, "lang": {"zh_CN"}}, nil)
	}
	a := get(carolOA)
	var follower map[string]any
	_ = json.Unmarshal(a.body, &follower)
	want := map[string]any{"subscribe": 1.0, "openid": carolOA, "language": "zh_CN", "subscribe_time": float64(f.clock.Now().Unix()),
		"unionid": carolUnion, "remark": "", "groupid": 0.0, "tagid_list": []any{}, "subscribe_scene": "ADD_SCENE_QR_CODE",
		"qr_scene": 98765.0, "qr_scene_str": ""}
	if !reflect.DeepEqual(follower, want) {
		t.Errorf("follower: %s\nwant %v", a.body, want)
	}
	// Someone who unfollowed: subscribe 0 and nothing else, no unionid.
	if a := get("oa-erin"); string(a.body) != `{"subscribe":0,"openid":"oa-erin"}` {
		t.Errorf("unfollowed: %s", a.body)
	}
	wantErr(t, get("oa-nobody"), 40003, "invalid openid")
	wantErr(t, get(carolMP), 40003, "invalid openid")

	batch := func(ids ...string) answer {
		var list []map[string]string
		for _, id := range ids {
			list = append(list, map[string]string{"openid": id, "lang": "zh_CN"})
		}
		return f.post(wechattest.PathUserInfoBatch, tok, map[string]any{"user_list": list})
	}
	b := batch("oa-erin", carolOA)
	var out struct {
		List []struct {
			Subscribe int    `json:"subscribe"`
			OpenID    string `json:"openid"`
			UnionID   string `json:"unionid"`
		} `json:"user_info_list"`
	}
	if err := json.Unmarshal(b.body, &out); err != nil || len(out.List) != 2 || out.List[0].OpenID != "oa-erin" ||
		out.List[0].Subscribe != 0 || out.List[1].UnionID != carolUnion || out.List[1].Subscribe != 1 {
		t.Errorf("batchget: %s", b.body)
	}
	wantErr(t, batch(carolOA, "oa-nobody"), 40003, "invalid openid")
	wantErr(t, batch(), 40032, "invalid openid list size")
	var many []string
	for range 101 {
		many = append(many, carolOA)
	}
	wantErr(t, batch(many...), 40032, "invalid openid list size")
	if a := batch(many[:100]...); a.errcode != 0 || strings.Count(string(a.body), `"openid"`) != 100 {
		t.Errorf("100 openids: %.200s", a.body)
	}
}

// A person declared once is the same unionid through code2session on the
// Mini Program and user/info on the official account.
func TestPersonIsOneUnionIDAcrossApps(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{})
	f.emu.Follow(oaID, carolOA)
	code := f.emu.IssueCode(appID, carolMP, "")
	a := f.do(http.MethodGet, wechattest.PathCode2Session, url.Values{"appid": {appID}, "secret": {secret}, "js_code": {code}, "grant_type": {"authorization_code"}}, nil)
	if a.str("openid") != carolMP || a.str("unionid") != carolUnion {
		t.Fatalf("code2session: %s", a.body)
	}
	i := f.do(http.MethodGet, wechattest.PathUserInfo, url.Values{"access_token": {f.oaToken()}, "openid": {carolOA}}, nil)
	if i.str("unionid") != carolUnion || i.str("openid") != carolOA {
		t.Fatalf("user/info: %s", i.body)
	}
	// A follower from before keeps the unionid it was given.
	f.emu.AddFollower(oaID, "oa-frank", "union-frank")
	if !f.emu.Following(oaID, "oa-frank") {
		t.Error("AddFollower: not following")
	}
}

// package wechat's client against the emulator: what it sends, the
// emulator takes; what the emulator refuses, the client classifies.
func TestOfficialAccountThroughTheClient(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{})
	c, err := wechat.New(wechat.Config{BaseURL: f.srv.URL, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	c.SetApp("oa", wechat.App{AppID: oaID, Secret: oaSecret})
	ctx := context.Background()
	m := wechat.TemplateMessage{ToUser: carolOA, TemplateID: tplMsg, ClientMsgID: "evt-9.statement.u-carol", Data: goodStatement,
		MiniProgram: wechat.MiniProgram{AppID: appID, PagePath: "pages/s?id=9"}}
	if _, err := c.SendTemplate(ctx, "oa", m); !errors.Is(err, wechat.ErrNotFollowing) || !errors.Is(err, wechat.ErrRecipient) {
		t.Fatalf("to a non-follower: %v", err)
	}
	f.emu.Follow(oaID, carolOA)
	msgid, err := c.SendTemplate(ctx, "oa", m)
	if err != nil || msgid == "" {
		t.Fatalf("SendTemplate = %q, %v", msgid, err)
	}
	again, err := c.SendTemplate(ctx, "oa", m)
	if !errors.Is(err, wechat.ErrAlreadySent) || again != msgid {
		t.Fatalf("the repeat = %q, %v; want %s and ErrAlreadySent", again, err, msgid)
	}
	if n := len(f.emu.Sends()); n != 1 {
		t.Errorf("%d sends, want 1", n)
	}
	bad := m
	bad.ClientMsgID, bad.Data = "", with(goodStatement, "thing2", strings.Repeat("长", 21))
	_, err = c.SendTemplate(ctx, "oa", bad)
	var api *wechat.APIError
	if !errors.Is(err, wechat.ErrConfig) || !errors.As(err, &api) || api.Field() != "thing2" {
		t.Errorf("bad data: %v", err)
	}

	f.emu.Accept(oaID, carolOA, tplBiz)
	if id, err := c.SendBizSubscribe(ctx, "oa", wechat.BizMessage{ToUser: carolOA, TemplateID: tplBiz, Data: map[string]string{"thing1": "到货"}}); err != nil || id == "" {
		t.Errorf("SendBizSubscribe = %q, %v", id, err)
	}
	if _, err := c.SendBizSubscribe(ctx, "oa", wechat.BizMessage{ToUser: carolOA, TemplateID: tplBiz, Data: map[string]string{"thing1": "到货"}}); !errors.Is(err, wechat.ErrNotSubscribed) {
		t.Errorf("without a credit: %v", err)
	}

	var ids []string
	for i := range 150 {
		id := fmt.Sprintf("oa-%03d", i)
		ids = append(ids, id)
		f.emu.AddFollower(oaID, id, "union-"+id)
	}
	ids = append(ids, "oa-stray", carolOA)
	infos, err := c.UserInfoBatch(ctx, "oa", ids)
	if !errors.Is(err, wechat.ErrInvalidOpenID) || len(infos) != 151 || infos[150].UnionID != carolUnion || infos[7].UnionID != "union-oa-007" {
		t.Errorf("UserInfoBatch: %d infos, %v", len(infos), err)
	}
	if got := f.emu.Errors(); got[43004] != 1 || got[45065] != 1 || got[47003] != 1 || got[43101] != 1 || got[40003] != 2 {
		t.Errorf("Errors() = %v", got)
	}
}

// The /_dev/ endpoints drive the official account from a shell: a person
// across apps, follow, block, unfollow, the followers, the error counts.
func TestDevOfficialAccountEndpoints(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{})
	rc := newReceiver(t, nil)
	f.oaCallback(t, rc, wechattest.Callback{Mode: wechattest.Safe, Format: wechattest.JSON, SentEventDelay: -1})
	var ok map[string]any
	if st := f.dev(http.MethodPost, "/_dev/person", map[string]any{"unionid": "union-gus", "openids": map[string]string{appID: "o-gus", oaID: "oa-gus"}}, &ok); st != 200 {
		t.Fatalf("person: %d %v", st, ok)
	}
	// appid may be left out: the emulator has one official account.
	if st := f.dev(http.MethodPost, "/_dev/follow", map[string]string{"openid": "oa-gus", "scene": "42"}, &ok); st != 200 {
		t.Fatalf("follow: %d %v", st, ok)
	}
	if st := f.dev(http.MethodPost, "/_dev/block", map[string]string{"appid": oaID, "openid": "oa-gus"}, &ok); st != 200 {
		t.Fatalf("block: %d %v", st, ok)
	}
	var followers []wechattest.Follower
	f.dev(http.MethodGet, "/_dev/followers", nil, &followers)
	want := []wechattest.Follower{{OpenID: carolOA, UnionID: carolUnion}, {OpenID: "oa-gus", UnionID: "union-gus", Following: true, Refusing: true}}
	if !reflect.DeepEqual(followers, want) {
		t.Fatalf("followers %+v\nwant %+v", followers, want)
	}
	if a := f.post(wechattest.PathTemplateSend, f.oaToken(), tmsg("oa-gus", tplMsg, goodStatement, nil)); a.errcode != 0 {
		t.Fatalf("template/send to a blocking follower is accepted: %s", a.body)
	}
	f.dev(http.MethodPost, "/_dev/unblock", map[string]string{"openid": "oa-gus"}, &ok)
	f.dev(http.MethodPost, "/_dev/unfollow", map[string]string{"openid": "oa-gus"}, &ok)
	wantErr(t, f.post(wechattest.PathTemplateSend, f.oaToken(), tmsg("oa-gus", tplMsg, goodStatement, nil)), 43004, "require subscribe")
	f.emu.FlushPushes()
	var events []string
	for _, r := range rc.received() {
		p := openWithClient(t, f, r, wechattest.Safe, oaID)
		e := p.Event
		if p.TemplateJob != nil {
			e += " " + p.TemplateJob.Status
		}
		events = append(events, e)
	}
	// Pushes go out concurrently, as WeChat's do: their order is not
	// promised.
	sort.Strings(events)
	if !reflect.DeepEqual(events, []string{"TEMPLATESENDJOBFINISH failed:user block", "subscribe", "unsubscribe"}) {
		t.Errorf("pushed %v", events)
	}
	var errs map[string]int
	f.dev(http.MethodGet, "/_dev/errors", nil, &errs)
	if !reflect.DeepEqual(errs, map[string]int{"43004": 1}) {
		t.Errorf("errors %v", errs)
	}
	var sends []wechattest.Sent
	f.dev(http.MethodGet, "/_dev/sends?appid="+oaID, nil, &sends)
	if len(sends) != 1 || sends[0].Path != wechattest.PathTemplateSend {
		t.Errorf("sends %+v", sends)
	}

	// What they refuse.
	for _, c := range []struct {
		path string
		body any
	}{
		{"/_dev/follow", map[string]string{"appid": appID, "openid": "o-gus"}}, // a Mini Program
		{"/_dev/follow", map[string]string{"appid": oaID}},                     // no openid
		{"/_dev/person", map[string]any{"unionid": "u", "openids": map[string]string{"wx9999999999999999": "o"}}},
	} {
		if st := f.dev(http.MethodPost, c.path, c.body, nil); st != http.StatusBadRequest && st != http.StatusNotFound {
			t.Errorf("%s %v: %d", c.path, c.body, st)
		}
	}
	var index string
	a := f.do(http.MethodGet, "/_dev/", nil, nil)
	index = string(a.body)
	for _, ep := range []string{"/_dev/person", "/_dev/follow", "/_dev/unfollow", "/_dev/block", "/_dev/unblock", "/_dev/followers", "/_dev/errors"} {
		if !strings.Contains(index, ep) {
			t.Errorf("/_dev/ does not list %s", ep)
		}
	}
}

// The follower list pages as WeChat's does (next_openid, "" after the last
// page, total the whole count), and the client walks it: followers only,
// each once, one that unfollows mid-walk not breaking it.
func TestFollowerListPages(t *testing.T) {
	f := newOAFixture(t, wechattest.Options{FollowerPage: 4})
	var want []string
	for i := range 10 {
		id := fmt.Sprintf("oa-%02d", i)
		f.emu.AddFollower(oaID, id, "union-"+id)
		want = append(want, id)
	}
	// carol is the account's user but does not follow: not listed.
	c, err := wechat.New(wechat.Config{BaseURL: f.srv.URL, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	c.SetApp("oa", wechat.App{AppID: oaID, Secret: oaSecret})
	ctx := context.Background()
	var got []string
	var pages []int
	next := ""
	for {
		p, err := c.Followers(ctx, "oa", next)
		if err != nil {
			t.Fatal(err)
		}
		if p.Total != 10-boolInt(len(pages) >= 1) {
			t.Errorf("page %d: total %d", len(pages), p.Total)
		}
		pages = append(pages, len(p.OpenIDs))
		got = append(got, p.OpenIDs...)
		if len(pages) == 1 {
			// oa-05 unfollows after the first page: the walk goes on
			// past it.
			f.emu.Unfollow(oaID, "oa-05")
		}
		if p.Next == "" {
			break
		}
		next = p.Next
	}
	want = append(want[:5], want[6:]...)
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(pages, []int{4, 4, 1}) {
		t.Errorf("followers %v in pages %v; want %v", got, pages, want)
	}
	// A Mini Program's token may not list anyone.
	mp := f.do(http.MethodGet, wechattest.PathUserList, url.Values{"access_token": {f.token()}}, nil)
	wantErr(t, mp, 48001, "api unauthorized")
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
