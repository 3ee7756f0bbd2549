package wechattest_test

import (
	"math/big"
	"net/http"
	"net/url"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

func TestSendSuccessAnswersAMsgIDAbove2Pow53AndRecordsTheSend(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	f.emu.Accept(appID, alice, tplOnce)
	tok := f.token()
	m := msg(alice, tplOnce, goodOnce)
	m["page"], m["miniprogram_state"], m["lang"] = "pages/order/detail?id=7", "formal", "zh_CN"
	a := f.send(tok, m)
	if a.status != http.StatusOK || a.errcode != 0 || a.errmsg != "ok" {
		t.Fatalf("send: %s", a.body)
	}
	raw := string(a.fields["msgid"])
	n, ok := new(big.Int).SetString(raw, 10)
	if !ok || len(raw) != 19 || n.Cmp(new(big.Int).Lsh(big.NewInt(1), 53)) <= 0 {
		t.Fatalf("msgid %s: want a bare 19-digit JSON number above 2^53", raw)
	}
	want := wechattest.Sent{AppID: appID, Path: wechattest.PathSend, MsgID: raw, ToUser: alice, TemplateID: tplOnce, Page: "pages/order/detail?id=7",
		State: "formal", Lang: "zh_CN", Data: goodOnce, At: f.clock.Now()}
	if got := f.emu.Sends(); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Fatalf("Sends() = %+v\nwant [%+v]", got, want)
	}
	// msgids are unique.
	f.emu.Accept(appID, alice, tplOnce)
	if b := f.send(tok, msg(alice, tplOnce, goodOnce)); string(b.fields["msgid"]) == raw {
		t.Fatal("two sends share a msgid")
	}
}

func TestSendErrors(t *testing.T) {
	f := newFixture(t, wechattest.Options{TokenTTL: time.Hour})
	expired := f.token()
	f.clock.Add(time.Hour)
	tok := f.token()
	f.emu.Accept(appID, alice, tplOnce)
	f.emu.Accept(appID, alice, tplLong)
	f.emu.Reject(appID, bob, tplOnce)
	f.emu.SetPages(appID, "pages/index/index", "pages/order/detail")

	withPage := func(page, state string) map[string]any {
		m := msg(alice, tplOnce, goodOnce)
		m["page"], m["miniprogram_state"] = page, state
		return m
	}
	with := func(field, value string) map[string]any {
		m := msg(alice, tplOnce, goodOnce)
		m[field] = value
		return m
	}
	data := func(kv ...string) map[string]string {
		d := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			d[kv[i]] = kv[i+1]
		}
		return d
	}
	tests := []struct {
		name  string
		token string
		body  any
		code  int
		msg   string
	}{
		{"no token", "", msg(alice, tplOnce, goodOnce), 41001, "access_token missing"},
		{"unknown token", "EMU_nope", msg(alice, tplOnce, goodOnce), 40001, "invalid credential"},
		{"expired token", expired, msg(alice, tplOnce, goodOnce), 42001, "access_token expired"},
		{"not JSON", tok, "{", 47001, "data format error"},
		{"unknown openid", tok, msg("o-nobody", tplOnce, goodOnce), 40003, "invalid openid"},
		{"empty openid", tok, msg("", tplOnce, goodOnce), 40003, "invalid openid"},
		{"unknown template", tok, msg(alice, "TPL_404", goodOnce), 40037, "invalid template id"},
		{"thing too long", tok, msg(alice, tplOnce, data("thing1", "一二三四五六七八九十一二三四五六七八九十一", "time2", "15:01")), 47003, "argument invalid! data.thing1.value invalid"},
		{"newline", tok, msg(alice, tplOnce, data("thing1", "a\nb", "time2", "15:01")), 47003, "argument invalid! data.thing1.value invalid"},
		{"empty value", tok, msg(alice, tplOnce, data("thing1", "", "time2", "15:01")), 47003, "argument invalid! data.thing1.value invalid"},
		{"bad time", tok, msg(alice, tplOnce, data("thing1", "ok", "time2", "2026-11-01T09:00:00Z")), 47003, "argument invalid! data.time2.value invalid"},
		{"missing keyword", tok, msg(alice, tplOnce, data("thing1", "ok")), 47003, "argument invalid! data.time2.value invalid"},
		{"extra keyword", tok, msg(alice, tplOnce, data("thing1", "ok", "time2", "15:01", "thing9", "x")), 47003, "argument invalid! data.thing9.value invalid"},
		{"no data", tok, map[string]any{"touser": alice, "template_id": tplOnce}, 47003, "argument invalid! data.thing1.value invalid"},
		{"value not a string", tok, map[string]any{"touser": alice, "template_id": tplOnce,
			"data": map[string]any{"thing1": map[string]any{"value": true}, "time2": map[string]any{"value": "15:01"}}}, 47003, "argument invalid! data.thing1.value invalid"},
		{"first bad field in template order", tok, msg(alice, tplOnce, data("thing1", "", "time2", "")), 47003, "argument invalid! data.thing1.value invalid"},
		{"bad state", tok, with("miniprogram_state", "beta"), 47003, "argument invalid! miniprogram_state invalid"},
		{"bad lang", tok, with("lang", "fr_FR"), 47003, "argument invalid! lang invalid"},
		{"page not released", tok, withPage("pages/secret/index", "formal"), 41030, "invalid page"},
		{"page not released, state omitted", tok, withPage("/pages/secret/index?x=1", ""), 41030, "invalid page"},
		{"rejected", tok, msg(bob, tplOnce, goodOnce), 43101, "user refuse to accept the msg"},
		{"never accepted", tok, msg(bob, tplLong, data("phrase1", "配送中")), 43101, "user refuse to accept the msg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := url.Values{}
			if tt.token != "" {
				q.Set("access_token", tt.token)
			}
			wantErr(t, f.do(http.MethodPost, wechattest.PathSend, q, tt.body), tt.code, tt.msg)
		})
	}
	if n := len(f.emu.Sends()); n != 0 {
		t.Fatalf("failed sends were recorded: %d", n)
	}
	if c := f.emu.Credits(appID, alice, tplOnce); c != 1 {
		t.Fatalf("failed sends spent credits: %d left, want 1", c)
	}

	t.Run("wrong method", func(t *testing.T) {
		wantErr(t, f.do(http.MethodGet, wechattest.PathSend, url.Values{"access_token": {tok}}, nil), 43002, "require POST method")
	})
	t.Run("released pages and other builds pass", func(t *testing.T) {
		for _, m := range []map[string]any{withPage("pages/order/detail?id=7", "formal"), withPage("pages/secret/index", "developer")} {
			f.emu.Accept(appID, alice, tplOnce)
			if a := f.send(tok, m); a.errcode != 0 {
				t.Fatalf("send with page %v: %s", m["page"], a.body)
			}
		}
	})
	t.Run("banned template", func(t *testing.T) {
		f.emu.BanTemplate(appID, tplLong)
		wantErr(t, f.send(tok, msg(alice, tplLong, data("phrase1", "配送中"))), 43107, "")
	})
}

func TestSendAcceptsNumbersAsValues(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	f.emu.AddTemplate(appID, wechattest.Template{ID: "TPL_num", Keywords: map[string]string{"number1": "number"}})
	a := f.send(f.token(), map[string]any{"touser": alice, "template_id": "TPL_num",
		"data": map[string]any{"number1": map[string]any{"value": 42.5}}})
	if a.errcode != 0 || f.emu.Sends()[0].Data["number1"] != "42.5" {
		t.Fatalf("number value: %s, %+v", a.body, f.emu.Sends())
	}
}

func TestOneTimeCreditsAddUpAndEachIsOneSend(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	tok := f.token()
	f.emu.Accept(appID, alice, tplOnce)
	f.emu.Accept(appID, alice, tplOnce)
	if c := f.emu.Credits(appID, alice, tplOnce); c != 2 {
		t.Fatalf("credits after two accepts: %d", c)
	}
	for i := 1; i <= 2; i++ {
		if a := f.send(tok, msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
			t.Fatalf("send %d: %s", i, a.body)
		}
		if c := f.emu.Credits(appID, alice, tplOnce); c != 2-i {
			t.Fatalf("credits after send %d: %d", i, c)
		}
	}
	wantErr(t, f.send(tok, msg(alice, tplOnce, goodOnce)), 43101, "user refuse to accept the msg")
	if n := len(f.emu.Sends()); n != 2 {
		t.Fatalf("%d sends recorded, want 2", n)
	}
	// Credits are per template: tplOnce2 was never accepted.
	wantErr(t, f.send(tok, msg(alice, tplOnce2, map[string]string{"thing1": "x"})), 43101, "user refuse")
}

func TestRejectEndsCreditsUntilTheNextAccept(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	tok := f.token()
	for i := 0; i < 3; i++ {
		f.emu.Accept(appID, alice, tplOnce)
	}
	f.emu.Reject(appID, alice, tplOnce)
	if s := f.emu.Subscription(appID, alice, tplOnce); s.Status != wechattest.StatusReject || s.Credits != 0 {
		t.Fatalf("after reject: %+v", s)
	}
	wantErr(t, f.send(tok, msg(alice, tplOnce, goodOnce)), 43101, "user refuse")
	f.emu.Accept(appID, alice, tplOnce)
	if c := f.emu.Credits(appID, alice, tplOnce); c != 1 {
		t.Fatalf("accept after reject: %d credits, want 1", c)
	}
	if a := f.send(tok, msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
		t.Fatalf("send after re-accept: %s", a.body)
	}
}

func TestLongTermAllowsSendsUntilRejected(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	tok := f.token()
	f.emu.Accept(appID, alice, tplLong)
	body := msg(alice, tplLong, map[string]string{"phrase1": "配送中"})
	for i := 0; i < 5; i++ {
		if a := f.send(tok, body); a.errcode != 0 {
			t.Fatalf("long-term send %d: %s", i, a.body)
		}
	}
	if s := f.emu.Subscription(appID, alice, tplLong); s.Status != wechattest.StatusAccept || s.Credits != 0 {
		t.Fatalf("long-term state: %+v", s)
	}
	f.emu.Reject(appID, alice, tplLong)
	wantErr(t, f.send(tok, body), 43101, "user refuse")
}

func TestBanRefusesSendsAndAccepts(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	tok := f.token()
	f.emu.Accept(appID, alice, tplOnce)
	f.emu.Ban(appID, alice, tplOnce)
	f.emu.Accept(appID, alice, tplOnce)
	if s := f.emu.Subscription(appID, alice, tplOnce); s.Status != wechattest.StatusBan || s.Credits != 0 {
		t.Fatalf("banned user state: %+v", s)
	}
	wantErr(t, f.send(tok, msg(alice, tplOnce, goodOnce)), 43101, "user refuse")
}

func TestConcurrentSendsToOneUserGet43108(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	tok := f.token()
	held := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	wechattest.SetHoldHook(f.emu, func() {
		first := false
		once.Do(func() { first = true })
		if first {
			close(held)
			<-release
		}
	})
	done := make(chan answer)
	go func() { done <- f.send(tok, msg(alice, tplOnce, goodOnce)) }()
	<-held // the first send holds alice now

	wantErr(t, f.send(tok, msg(alice, tplOnce, goodOnce)), 43108, "")
	// Another user is not affected.
	if a := f.send(tok, msg(bob, tplOnce, goodOnce)); a.errcode != 0 {
		t.Fatalf("send to bob while alice is held: %s", a.body)
	}
	close(release)
	if a := <-done; a.errcode != 0 {
		t.Fatalf("held send: %s", a.body)
	}
	// Once the first send is over, alice can be sent to again.
	if a := f.send(tok, msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
		t.Fatalf("send after the overlap: %s", a.body)
	}
	// The refusal is counted: a benchmark can say how many sends met one.
	if got := f.emu.Errors(); !reflect.DeepEqual(got, map[int]int{43108: 1}) {
		t.Errorf("Errors() = %v, want 43108 once", got)
	}
}

func TestAutoUsersAndAutoSubscribe(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoUsers: true})
	tok := f.token()
	// AutoUsers: an unknown openid is a user, but still needs credits.
	wantErr(t, f.send(tok, msg("o-new", tplOnce, goodOnce)), 43101, "user refuse")

	g := newFixture(t, wechattest.Options{AutoSubscribe: true})
	tok = g.token()
	for i := 0; i < 3; i++ {
		if a := g.send(tok, msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
			t.Fatalf("AutoSubscribe send %d: %s", i, a.body)
		}
	}
	wantErr(t, g.send(tok, msg("o-new", tplOnce, goodOnce)), 40003, "invalid openid")
	g.emu.Reject(appID, alice, tplOnce)
	wantErr(t, g.send(tok, msg(alice, tplOnce, goodOnce)), 43101, "user refuse")
}

func TestTemplateWithoutKeywordsChecksKeysByTheirPrefix(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	f.emu.AddTemplate(appID, wechattest.Template{ID: "TPL_free"})
	tok := f.token()
	if a := f.send(tok, msg(alice, "TPL_free", map[string]string{"phrase3": "审核通过", "name1": "订阅", "date2": "2019-12-25 09:42"})); a.errcode != 0 {
		t.Fatalf("the official example: %s", a.body)
	}
	wantErr(t, f.send(tok, msg(alice, "TPL_free", map[string]string{"phrase3": "not chinese"})), 47003, "argument invalid! data.phrase3.value invalid")
}
