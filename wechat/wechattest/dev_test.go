package wechattest_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// dev calls a /_dev/ endpoint and decodes its JSON answer into out.
func (f *fixture) dev(method, path string, body any, out any) int {
	f.t.Helper()
	a := f.do(method, path, nil, body)
	if out != nil {
		if err := json.Unmarshal(a.body, out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, a.body)
		}
	}
	return a.status
}

func TestDevEndpointsDriveTheEmulatorFromAShell(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	rc := newReceiver(t, nil)
	f.callback(t, rc, wechattest.Callback{Mode: wechattest.Safe, Format: wechattest.JSON})

	var res map[string]string
	if st := f.dev(http.MethodPost, "/_dev/subscribe", map[string]any{"appid": appID, "openid": alice, "results": map[string]string{tplOnce: "accept"}}, &res); st != 200 ||
		res["errMsg"] != "requestSubscribeMessage:ok" || res[tplOnce] != "accept" {
		t.Fatalf("subscribe: %d %v", st, res)
	}
	var subs []wechattest.Subscription
	f.dev(http.MethodGet, "/_dev/subscriptions?appid="+appID+"&openid="+alice, nil, &subs)
	if !reflect.DeepEqual(subs, []wechattest.Subscription{{TemplateID: tplOnce, Status: "accept", Credits: 1}}) {
		t.Fatalf("subscriptions: %+v", subs)
	}

	if a := f.send(f.token(), msg(alice, tplOnce, goodOnce)); a.errcode != 0 {
		t.Fatalf("send: %s", a.body)
	}
	var sends []wechattest.Sent
	f.dev(http.MethodGet, "/_dev/sends?openid="+alice, nil, &sends)
	if len(sends) != 1 || sends[0].Data["thing1"] != goodOnce["thing1"] {
		t.Fatalf("sends: %+v", sends)
	}
	f.dev(http.MethodGet, "/_dev/sends?openid="+bob, nil, &sends)
	if len(sends) != 0 {
		t.Fatalf("sends filtered by bob: %+v", sends)
	}

	var ok map[string]bool
	if st := f.dev(http.MethodPost, "/_dev/unsubscribe", map[string]string{"appid": appID, "openid": alice, "template_id": tplOnce}, &ok); st != 200 || !ok["ok"] {
		t.Fatalf("unsubscribe: %d", st)
	}
	if s := f.emu.Subscription(appID, alice, tplOnce); s.Status != wechattest.StatusReject {
		t.Fatalf("after /_dev/unsubscribe: %+v", s)
	}

	f.emu.FlushPushes()
	var pushes []wechattest.Push
	f.dev(http.MethodGet, "/_dev/pushes", nil, &pushes)
	events := map[string]bool{}
	for _, p := range pushes {
		events[p.Event] = p.Delivered
	}
	if !events[wechattest.EventPopup] || !events[wechattest.EventChange] {
		t.Fatalf("pushes: %+v", pushes)
	}

	// appid may be left out: the fixture has two apps, so here it may not.
	var code map[string]string
	if st := f.dev(http.MethodPost, "/_dev/code", map[string]string{"openid": "o-carol"}, &code); st != http.StatusBadRequest {
		t.Fatalf("code without appid on a two-app emulator: %d %v", st, code)
	}
	f.dev(http.MethodPost, "/_dev/code", map[string]string{"appid": appID, "openid": "o-carol", "unionid": "u-c"}, &code)
	if a := f.code2session(appID, secret, code["code"]); a.str("openid") != "o-carol" || a.str("unionid") != "u-c" {
		t.Fatalf("code from /_dev/code: %s", a.body)
	}

	tok := f.token()
	f.dev(http.MethodPost, "/_dev/invalidate", map[string]string{"appid": appID}, &ok)
	if code := f.templatesCode(tok); code != 40001 {
		t.Fatalf("token after /_dev/invalidate: %d", code)
	}

	var calls map[string]int
	f.dev(http.MethodGet, "/_dev/calls", nil, &calls)
	if calls[wechattest.PathSend] != 1 || calls[wechattest.PathCode2Session] != 1 {
		t.Fatalf("calls: %v", calls)
	}
}

func TestDevFaults(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	body := map[string]any{"latency": "50ms", "jitter": "5ms", "system_error_rate": 0.25, "quota_exhausted": true,
		"paths": []string{wechattest.PathSend}, "seed": 7}
	var got map[string]any
	if st := f.dev(http.MethodPost, "/_dev/faults", body, &got); st != 200 {
		t.Fatalf("POST faults: %d %v", st, got)
	}
	want := wechattest.Faults{Latency: 50 * time.Millisecond, Jitter: 5 * time.Millisecond, SystemErrorRate: 0.25,
		QuotaExhausted: true, Paths: []string{wechattest.PathSend}, Seed: 7}
	if cur := f.emu.Faults(); !reflect.DeepEqual(cur, want) {
		t.Fatalf("Faults() = %+v, want %+v", cur, want)
	}
	f.dev(http.MethodGet, "/_dev/faults", nil, &got)
	if got["latency"] != "50ms" || got["quota_exhausted"] != true {
		t.Fatalf("GET faults: %v", got)
	}
	for _, bad := range []string{`{"latency":"soon"}`, `{"latencyy":"1s"}`, `nope`} {
		if st := f.dev(http.MethodPost, "/_dev/faults", bad, nil); st != http.StatusBadRequest {
			t.Errorf("POST faults %s: %d, want 400", bad, st)
		}
	}
	f.dev(http.MethodPost, "/_dev/faults", map[string]any{}, &got)
	if cur := f.emu.Faults(); !reflect.DeepEqual(cur, wechattest.Faults{}) {
		t.Fatalf("{} must turn faults off: %+v", cur)
	}
}

func TestDevErrorsAndIndex(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	a := f.do(http.MethodGet, "/_dev/", nil, nil)
	if a.status != 200 || !strings.Contains(string(a.body), "POST /_dev/subscribe") {
		t.Fatalf("index: %d %s", a.status, a.body)
	}
	tests := []struct {
		method, path string
		body         any
		status       int
	}{
		{http.MethodGet, "/_dev/nope", nil, 404},
		{http.MethodGet, "/_dev/subscribe", nil, 404},
		{http.MethodPost, "/_dev/subscribe", "{", 400},
		{http.MethodPost, "/_dev/subscribe", map[string]any{"appid": "wx404", "openid": alice}, 404},
		{http.MethodPost, "/_dev/subscribe", map[string]any{"appid": appID}, 400},
		{http.MethodPost, "/_dev/unsubscribe", map[string]any{"appid": appID, "openid": alice, "template_id": "TPL_404"}, 400},
		{http.MethodGet, "/_dev/subscriptions?appid=" + appID, nil, 400},
	}
	for _, tt := range tests {
		var out map[string]string
		if st := f.dev(tt.method, tt.path, tt.body, &out); st != tt.status || out["error"] == "" {
			t.Errorf("%s %s: %d %v, want %d with an error", tt.method, tt.path, st, out, tt.status)
		}
	}
}

func TestDevAppIDDefaultsToTheOnlyApp(t *testing.T) {
	emu := wechattest.New(wechattest.Options{})
	defer emu.Close()
	emu.AddApp(appID, secret)
	emu.AddTemplate(appID, wechattest.Template{ID: tplOnce, Kind: wechattest.OneTime, Keywords: map[string]string{"thing1": "thing"}})
	f := &fixture{t: t, emu: emu}
	f.srv = newServer(t, emu)
	var res map[string]string
	f.dev(http.MethodPost, "/_dev/subscribe", map[string]any{"openid": alice, "results": map[string]string{tplOnce: "accept"}}, &res)
	if res[tplOnce] != "accept" || emu.Credits(appID, alice, tplOnce) != 1 {
		t.Fatalf("subscribe without appid: %v", res)
	}
	// Mounted under a prefix, as serve --emulator does.
	mux := http.NewServeMux()
	mux.Handle("/emulator/", http.StripPrefix("/emulator", emu))
	g := &fixture{t: t, emu: emu, srv: newServer(t, mux)}
	var sends []wechattest.Sent
	if st := g.dev(http.MethodGet, "/emulator/_dev/sends", nil, &sends); st != 200 {
		t.Fatalf("under /emulator: %d", st)
	}
	if a := g.do(http.MethodPost, "/emulator"+wechattest.PathStableToken, url.Values{}, map[string]string{"grant_type": "client_credential", "appid": appID, "secret": secret}); a.str("access_token") == "" {
		t.Fatalf("token under /emulator: %s", a.body)
	}
}
