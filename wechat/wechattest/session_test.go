package wechattest_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

func (f *fixture) code2session(appid, sec, code string) answer {
	f.t.Helper()
	q := url.Values{"appid": {appid}, "secret": {sec}, "js_code": {code}, "grant_type": {"authorization_code"}}
	return f.do(http.MethodGet, wechattest.PathCode2Session, q, nil)
}

func TestCode2SessionCodesWorkOnce(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	code := f.emu.IssueCode(appID, "o-carol", "u-carol")
	a := f.code2session(appID, secret, code)
	if a.errcode != 0 || a.str("openid") != "o-carol" || a.str("unionid") != "u-carol" || a.str("session_key") == "" {
		t.Fatalf("code2session: %s", a.body)
	}
	wantErr(t, f.code2session(appID, secret, code), 40029, "invalid code")

	// Without a unionid the answer has none, as for an app not bound to an
	// Open Platform account.
	b := f.code2session(appID, secret, f.emu.IssueCode(appID, "o-dave", ""))
	if _, ok := b.fields["unionid"]; ok || b.str("openid") != "o-dave" {
		t.Fatalf("code2session without unionid: %s", b.body)
	}
	// wx.login made carol a user of the app: she can be sent to.
	f.emu.Accept(appID, "o-carol", tplOnce)
	if s := f.send(f.token(), msg("o-carol", tplOnce, goodOnce)); s.errcode != 0 {
		t.Fatalf("send to a user who logged in: %s", s.body)
	}
}

func TestCode2SessionCodesExpireAfterFiveMinutes(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	fresh := f.emu.IssueCode(appID, alice, "")
	old := f.emu.IssueCode(appID, alice, "")
	f.clock.Add(5*time.Minute - time.Second)
	if a := f.code2session(appID, secret, fresh); a.errcode != 0 {
		t.Fatalf("code at 4:59: %s", a.body)
	}
	f.clock.Add(time.Second)
	wantErr(t, f.code2session(appID, secret, old), 40029, "invalid code")
}

func TestCode2SessionErrors(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	f.emu.Block(appID, bob)
	blocked := f.emu.IssueCode(appID, bob, "")
	otherApps := f.emu.IssueCode(otherID, alice, "")
	tests := []struct {
		name  string
		query url.Values
		code  int
		msg   string
	}{
		{"unknown code", url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"0nope"}, "grant_type": {"authorization_code"}}, 40029, "invalid code"},
		{"another app's code", url.Values{"appid": {appID}, "secret": {secret}, "js_code": {otherApps}, "grant_type": {"authorization_code"}}, 40029, "invalid code"},
		{"blocked user", url.Values{"appid": {appID}, "secret": {secret}, "js_code": {blocked}, "grant_type": {"authorization_code"}}, 40226, "code blocked"},
		{"bad secret", url.Values{"appid": {appID}, "secret": {"x"}, "js_code": {"c"}, "grant_type": {"authorization_code"}}, 40125, "invalid appsecret"},
		{"unknown appid", url.Values{"appid": {"wx404"}, "secret": {"x"}, "js_code": {"c"}, "grant_type": {"authorization_code"}}, 40013, "invalid appid"},
		{"bad grant_type", url.Values{"appid": {appID}, "secret": {secret}, "js_code": {"c"}, "grant_type": {"client_credential"}}, 40002, "invalid grant_type"},
		{"no code", url.Values{"appid": {appID}, "secret": {secret}, "grant_type": {"authorization_code"}}, 41008, "missing code"},
		{"no appid", url.Values{"secret": {secret}, "js_code": {"c"}, "grant_type": {"authorization_code"}}, 41002, "appid missing"},
		{"no secret", url.Values{"appid": {appID}, "js_code": {"c"}, "grant_type": {"authorization_code"}}, 41004, "appsecret missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, f.do(http.MethodGet, wechattest.PathCode2Session, tt.query, nil), tt.code, tt.msg)
		})
	}
	t.Run("POST", func(t *testing.T) {
		wantErr(t, f.do(http.MethodPost, wechattest.PathCode2Session, tests[0].query, nil), 43001, "require GET method")
	})
	// The other app's code still works with its own app.
	if a := f.code2session(otherID, "other-secret", otherApps); a.errcode != 0 || a.str("openid") != alice {
		t.Fatalf("code with its own app: %s", a.body)
	}
}

func TestCode2SessionMinuteQuotaPerUser(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	// Start of a minute, so the window does not roll over mid-test.
	f.clock.Add(time.Duration(60-f.clock.Now().Second()) * time.Second)
	for i := 0; i < 100; i++ {
		if a := f.code2session(appID, secret, f.emu.IssueCode(appID, alice, "")); a.errcode != 0 {
			t.Fatalf("call %d: %s", i+1, a.body)
		}
	}
	code := f.emu.IssueCode(appID, alice, "")
	wantErr(t, f.code2session(appID, secret, code), 45011, "api minute-quota reach limit")
	// Another user has a quota of their own.
	if a := f.code2session(appID, secret, f.emu.IssueCode(appID, bob, "")); a.errcode != 0 {
		t.Fatalf("bob: %s", a.body)
	}
	// The refused call did not spend the code: it works next minute.
	f.clock.Add(time.Minute)
	if a := f.code2session(appID, secret, code); a.errcode != 0 {
		t.Fatalf("next minute: %s", a.body)
	}
}

func TestGetTemplate(t *testing.T) {
	f := newFixture(t, wechattest.Options{})
	a := f.do(http.MethodGet, wechattest.PathTemplates, url.Values{"access_token": {f.token()}}, nil)
	var out struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
		Data    []struct {
			PriTmplID string `json:"priTmplId"`
			Title     string `json:"title"`
			Content   string `json:"content"`
			Example   string `json:"example"`
			Type      int    `json:"type"`
			Enums     []struct {
				KeywordCode   string   `json:"keywordCode"`
				EnumValueList []string `json:"enumValueList"`
			} `json:"keywordEnumValueList"`
		} `json:"data"`
	}
	if err := json.Unmarshal(a.body, &out); err != nil || out.ErrCode != 0 || out.ErrMsg != "ok" || len(out.Data) != 4 {
		t.Fatalf("gettemplate: %v %s", err, a.body)
	}
	once, long, enum := out.Data[0], out.Data[1], out.Data[3]
	if once.PriTmplID != tplOnce || once.Title != "发货通知" || once.Type != 2 ||
		once.Content != "商品:{{thing1.DATA}}\n时间:{{time2.DATA}}\n" || !strings.HasPrefix(once.Example, "商品:") {
		t.Errorf("one-time template: %+v", once)
	}
	if long.PriTmplID != tplLong || long.Type != 3 || long.Content != "phrase1:{{phrase1.DATA}}\n" {
		t.Errorf("long-term template: %+v", long)
	}
	if len(enum.Enums) != 1 || enum.Enums[0].KeywordCode != "enum_string1.DATA" || strings.Join(enum.Enums[0].EnumValueList, ",") != "缺水,漏水" {
		t.Errorf("enum template: %+v", enum)
	}
	// Every example value is one WeChat would take.
	for _, d := range out.Data {
		for _, line := range strings.Split(strings.TrimSpace(d.Example), "\n") {
			if _, v, ok := strings.Cut(line, ":"); !ok || v == "" {
				t.Errorf("template %s example line %q", d.PriTmplID, line)
			}
		}
	}
	wantErr(t, f.do(http.MethodGet, wechattest.PathTemplates, nil, nil), 41001, "access_token missing")
}

func TestTemplateExamplesAreValid(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	types := []string{"thing", "number", "letter", "symbol", "character_string", "time", "date", "amount",
		"phone_number", "car_number", "name", "phrase"}
	kw := map[string]string{}
	for i, typ := range types {
		kw[typ+strconv.Itoa(i+1)] = typ
	}
	f.emu.AddTemplate(appID, wechattest.Template{ID: "TPL_all", Keywords: kw})
	a := f.do(http.MethodGet, wechattest.PathTemplates, url.Values{"access_token": {f.token()}}, nil)
	var out struct {
		Data []struct {
			PriTmplID, Example string
		} `json:"data"`
	}
	_ = json.Unmarshal(a.body, &out)
	for _, d := range out.Data {
		if d.PriTmplID != "TPL_all" {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(d.Example), "\n") {
			key, v, _ := strings.Cut(line, ":")
			if !wechattest.ValidKeyword(kw[key], v, nil) {
				t.Errorf("example %s = %q is not a valid %s", key, v, kw[key])
			}
		}
		return
	}
	t.Fatal("TPL_all not listed")
}
