package wechattest_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// autoFixture is an emulator that knows no app and no template, as
// `wxbridge emulate` runs without a rules file.
func autoFixture(t *testing.T, cb wechattest.Callback, autoTemplates bool) *fixture {
	t.Helper()
	emu := wechattest.New(wechattest.Options{AutoUsers: true, AutoTemplates: autoTemplates,
		AutoApps: &wechattest.AppDefaults{Secret: "dev-secret", Callback: cb}})
	srv := newServer(t, emu)
	t.Cleanup(func() { _ = emu.Close() })
	return &fixture{t: t, emu: emu, srv: srv}
}

func (f *fixture) stableFor(appid, secret string) answer {
	f.t.Helper()
	return f.do(http.MethodPost, wechattest.PathStableToken, nil,
		map[string]any{"grant_type": "client_credential", "appid": appid, "secret": secret})
}

// TestAutoAppsServeAnyAppIDWithTheDefaultSecret follows a mini program
// backend that keeps its own appid and template ids: its token request,
// the user's popup, the push it receives and the send all work with the
// emulator's secret, push token and AES key; a wrong secret still gets
// 40125 and a bad keyword value still gets 47003.
func TestAutoAppsServeAnyAppIDWithTheDefaultSecret(t *testing.T) {
	const myApp, myTpl = "wx5f3a1b2c3d4e5f60", "tmpl-order-shipped"
	rc := newReceiver(t, nil)
	f := autoFixture(t, wechattest.Callback{URL: rc.srv.URL + "/callback", Token: pushToken, EncodingAESKey: aesKey,
		Mode: wechattest.Safe, Format: wechattest.JSON}, true)

	wantErr(t, f.stableFor(myApp, "my-real-secret"), 40125, "invalid appsecret")
	tok := f.stableFor(myApp, "dev-secret").str("access_token")
	if tok == "" {
		t.Fatal("no token for an appid the emulator had never seen")
	}
	data := map[string]string{"thing1": "Acme 订单", "time2": "2026-11-01 09:00"}
	wantErr(t, f.send(tok, msg(alice, myTpl, data)), 43101, "user refuse to accept the msg")

	var res map[string]string
	if st := f.dev(http.MethodPost, "/_dev/subscribe", map[string]any{"appid": myApp, "openid": alice,
		"results": map[string]string{myTpl: "accept"}}, &res); st != 200 || res[myTpl] != "accept" {
		t.Fatalf("subscribe: %d %v", st, res)
	}
	p := onlyPush(t, f, rc)
	cfg := wechat.PushConfig{AppID: myApp, Token: pushToken, EncodingAESKey: aesKey}
	opened, err := cfg.Open(p.query, p.body, time.Now(), 5*time.Minute) // the emulator runs on the real clock here
	if err != nil {
		t.Fatalf("open the push: %v", err)
	}
	if p.path != "/callback" || opened.Mode != wechat.ModeSafe || len(opened.Subscriptions) != 1 ||
		opened.Subscriptions[0].TemplateID != myTpl || opened.Subscriptions[0].Status != "accept" {
		t.Fatalf("push to %s: %+v", p.path, opened)
	}

	bad := map[string]string{"thing1": "a thing of far more than twenty characters", "time2": "2026-11-01 09:00"}
	wantErr(t, f.send(tok, msg(alice, myTpl, bad)), 47003, "argument invalid! data.thing1.value invalid")
	wantErr(t, f.send(tok, msg(alice, myTpl, map[string]string{"thingy1": "x"})), 47003, "argument invalid! data.thingy1.value invalid")
	if a := f.send(tok, msg(alice, myTpl, data)); a.errcode != 0 {
		t.Fatalf("send after the accept: %s", a.body)
	}
	wantErr(t, f.send(tok, msg(alice, myTpl, data)), 43101, "user refuse to accept the msg") // one-time: the credit is spent

	list := f.do(http.MethodGet, wechattest.PathTemplates, url.Values{"access_token": {tok}}, nil)
	var tpls []struct {
		ID   string `json:"priTmplId"`
		Type int    `json:"type"`
	}
	if err := json.Unmarshal(list.fields["data"], &tpls); err != nil || len(tpls) != 1 || tpls[0].ID != myTpl || tpls[0].Type != 2 {
		t.Fatalf("gettemplate: %s", list.body)
	}
	if ids := f.emu.AppIDs(); len(ids) != 1 || ids[0] != myApp {
		t.Fatalf("apps %v", ids)
	}
}

// TestAutoAppsWithoutAutoTemplates: apps come on their own, templates do
// not: an unknown template id is still 40037, and an empty appid still 41002.
func TestAutoAppsWithoutAutoTemplates(t *testing.T) {
	f := autoFixture(t, wechattest.Callback{}, false)
	wantErr(t, f.stableFor("", "dev-secret"), 41002, "appid missing")
	tok := f.stableFor("wx0000000000000abc", "dev-secret").str("access_token")
	wantErr(t, f.send(tok, msg(alice, "TPL_unknown", goodOnce)), 40037, "invalid template id")
}
