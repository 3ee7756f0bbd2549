package wechat_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/wxbridge/wxbridge/wechat"
)

func TestSendRequest(t *testing.T) {
	tests := []struct {
		name string
		msg  wechat.Message
		want string
	}{
		{"all fields", wechat.Message{ToUser: "o-1", TemplateID: "TPL", Page: "pages/order?id=7",
			Data: map[string]string{"thing1": "沙发", "time2": "2026-11-21 10:00"}, State: "trial", Lang: "en_US"},
			`{"data":{"thing1":{"value":"沙发"},"time2":{"value":"2026-11-21 10:00"}},"lang":"en_US","miniprogram_state":"trial","page":"pages/order?id=7","template_id":"TPL","touser":"o-1"}`},
		{"optional fields left out", wechat.Message{ToUser: "o-1", TemplateID: "TPL", Data: map[string]string{"thing1": "x"}},
			`{"data":{"thing1":{"value":"x"}},"template_id":"TPL","touser":"o-1"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			if _, err := e.client.Send(context.Background(), "main", tt.msg); err != nil {
				t.Fatal(err)
			}
			sends := e.fake.sendCalls()
			got, _ := json.Marshal(sends[0].Body) // map keys sorted
			if string(got) != tt.want {
				t.Errorf("body\n got %s\nwant %s", got, tt.want)
			}
			if sends[0].Token != "TOKEN-"+testAppID+"-1" {
				t.Errorf("access_token = %q", sends[0].Token)
			}
		})
	}
}

func TestSendReturnsExactMsgID(t *testing.T) {
	tests := []struct {
		name, answer, want string
	}{
		{"number above 2^53", `{"errcode":0,"errmsg":"ok","msgid":1864323726461255681}`, "1864323726461255681"},
		{"largest uint64", `{"errcode":0,"errmsg":"ok","msgid":18446744073709551615}`, "18446744073709551615"},
		{"string", `{"errcode":0,"errmsg":"ok","msgid":"1864323726461255683"}`, "1864323726461255683"},
		{"absent, as in the official example", `{"errcode":0,"errmsg":"ok"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.fake.setSend(func(sendCall) any { return json.RawMessage(tt.answer) })
			got, err := e.send(t)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("msgid = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTemplates(t *testing.T) {
	e := newTestEnv(t)
	var gotToken string
	e.fake.setOther(func(r *http.Request) any {
		if r.URL.Path != "/wxaapi/newtmpl/gettemplate" || r.Method != http.MethodGet {
			return http.StatusNotFound
		}
		gotToken = r.URL.Query().Get("access_token")
		return json.RawMessage(`{"errcode":0,"errmsg":"ok","data":[
			{"priTmplId":"9Aw5ZV1j9xdWTFEkqCpZ7mIBbSC34khK55OtzUPl0rU","title":"报名结果通知",
			 "content":"会议时间:{{date2.DATA}}\n会议地点:{{thing1.DATA}}\n","example":"会议时间:2016年8月8日\n会议地点:TIT会议室\n","type":2},
			{"priTmplId":"cy_DfOZL7lypxHh3ja3DyAUbn1GYQRGwezuy5LBTFME","title":"洗衣机故障提醒",
			 "content":"完成时间:{{time1.DATA}}\n状态:{{enum_string2.DATA}}\n单号:{{character_string13.DATA}}\n","example":"","type":3,
			 "keywordEnumValueList":[{"keywordCode":"enum_string2.DATA","enumValueList":["待支付","已完成"]}]}]}`)
	})
	got, err := e.client.Templates(context.Background(), "main")
	if err != nil {
		t.Fatal(err)
	}
	want := []wechat.Template{
		{ID: "9Aw5ZV1j9xdWTFEkqCpZ7mIBbSC34khK55OtzUPl0rU", Title: "报名结果通知",
			Content: "会议时间:{{date2.DATA}}\n会议地点:{{thing1.DATA}}\n", Example: "会议时间:2016年8月8日\n会议地点:TIT会议室\n", Type: 2,
			Keywords: []wechat.Keyword{{Key: "date2", Type: "date", Label: "会议时间"}, {Key: "thing1", Type: "thing", Label: "会议地点"}}},
		{ID: "cy_DfOZL7lypxHh3ja3DyAUbn1GYQRGwezuy5LBTFME", Title: "洗衣机故障提醒",
			Content: "完成时间:{{time1.DATA}}\n状态:{{enum_string2.DATA}}\n单号:{{character_string13.DATA}}\n", Type: 3,
			Keywords: []wechat.Keyword{{Key: "time1", Type: "time", Label: "完成时间"},
				{Key: "enum_string2", Type: "enum_string", Label: "状态", Enum: []string{"待支付", "已完成"}},
				{Key: "character_string13", Type: "character_string", Label: "单号"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("templates\n got %+v\nwant %+v", got, want)
	}
	if gotToken != "TOKEN-"+testAppID+"-1" {
		t.Errorf("access_token = %q", gotToken)
	}

	e.fake.setOther(func(*http.Request) any { return errAnswer(200100, "not a mini program") })
	_, err = e.client.Templates(context.Background(), "main")
	assertClasses(t, err, wechat.ErrConfig)
	if !strings.Contains(err.Error(), "app main: list templates") {
		t.Errorf("error %q does not say what was being done", err)
	}
}

func TestCode2Session(t *testing.T) {
	e := newTestEnv(t)
	var query map[string][]string
	e.fake.setOther(func(r *http.Request) any {
		query = r.URL.Query()
		return map[string]any{"openid": "o-abc", "unionid": "u-xyz", "session_key": "SESSIONKEY-never-kept"}
	})
	got, err := e.client.Code2Session(context.Background(), "main", testCode)
	if err != nil {
		t.Fatal(err)
	}
	if got != (wechat.Session{OpenID: "o-abc", UnionID: "u-xyz"}) {
		t.Errorf("session = %+v", got)
	}
	want := map[string][]string{"appid": {testAppID}, "secret": {testSecret}, "js_code": {testCode}, "grant_type": {"authorization_code"}}
	if !reflect.DeepEqual(query, want) {
		t.Errorf("query = %v, want %v", query, want)
	}
	if len(e.fake.tokenCalls()) != 0 {
		t.Errorf("code2session fetched an access token; it needs none")
	}
	assertNoSecrets(t, "log", e.logs.String(), "SESSIONKEY")

	e.fake.setOther(func(*http.Request) any { return map[string]any{"errcode": 0} })
	if _, err := e.client.Code2Session(context.Background(), "main", testCode); err == nil || !strings.Contains(err.Error(), "no openid") {
		t.Errorf("answer without openid: err = %v", err)
	}
}

func TestSecretsNeverInErrorsOrLogs(t *testing.T) {
	drop := func(t *testing.T) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) { hijack(t, w, "") }
	}
	echo := func(w http.ResponseWriter, r *http.Request) {
		// An errmsg that repeats the request, secrets included.
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(errAnswer(-1, "bad request "+r.URL.RawQuery+" "+testSecret))
	}
	tests := []struct {
		name     string
		path     string // the path that fails
		fail     func(t *testing.T) func(http.ResponseWriter, *http.Request)
		mode     wechat.TokenMode
		call     func(c *wechat.Client) error
		redacted bool // the error carries a URL, redacted
	}{
		{"stable token errmsg", "/cgi-bin/stable_token", func(*testing.T) func(http.ResponseWriter, *http.Request) { return echo },
			wechat.TokenStable, sendCall0, false},
		{"legacy token connection dropped", "/cgi-bin/token", drop, wechat.TokenLegacy, sendCall0, true},
		{"legacy token errmsg", "/cgi-bin/token", func(*testing.T) func(http.ResponseWriter, *http.Request) { return echo },
			wechat.TokenLegacy, sendCall0, false},
		{"send connection dropped", "/cgi-bin/message/subscribe/send", drop, wechat.TokenStable, sendCall0, true},
		{"send errmsg", "/cgi-bin/message/subscribe/send", func(*testing.T) func(http.ResponseWriter, *http.Request) { return echo },
			wechat.TokenStable, sendCall0, false},
		{"code2session connection dropped", "/sns/jscode2session", drop, wechat.TokenStable, code2SessionCall, true},
		{"code2session errmsg", "/sns/jscode2session", func(*testing.T) func(http.ResponseWriter, *http.Request) { return echo },
			wechat.TokenStable, code2SessionCall, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newAPIFake(t)
			fail := tt.fail(t)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == tt.path {
					fail(w, r)
					return
				}
				fake.serve(w, r)
			}))
			defer srv.Close()
			logs := &apiLogs{}
			c, err := wechat.New(wechat.Config{BaseURL: srv.URL, Logger: newLogger(logs)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetApp("main", wechat.App{AppID: testAppID, Secret: testSecret, TokenMode: tt.mode})
			err = tt.call(c)
			if err == nil {
				t.Fatal("call succeeded")
			}
			assertNoSecrets(t, "error", err.Error())
			assertNoSecrets(t, "log", logs.String())
			if tt.redacted && !strings.Contains(err.Error(), "REDACTED") {
				t.Errorf("error carries no redacted URL: %v", err)
			}
		})
	}
}

func sendCall0(c *wechat.Client) error {
	_, err := c.Send(context.Background(), "main", testMessage)
	return err
}

func code2SessionCall(c *wechat.Client) error {
	_, err := c.Code2Session(context.Background(), "main", testCode)
	return err
}

func TestSeveralApps(t *testing.T) {
	e := newTestEnv(t)
	e.client.SetApp("other", wechat.App{AppID: "wx00000000000000b2", Secret: "SECRET-other-0000000000000000000"})
	if got := e.client.Apps(); !reflect.DeepEqual(got, []string{"main", "other"}) {
		t.Errorf("Apps() = %v", got)
	}
	var wg sync.WaitGroup
	for _, app := range []string{"main", "other", "main", "other"} {
		wg.Go(func() {
			if _, err := e.client.Send(context.Background(), app, testMessage); err != nil {
				t.Errorf("send via %s: %v", app, err)
			}
		})
	}
	wg.Wait()
	perApp := map[string]int{}
	for _, c := range e.fake.tokenCalls() {
		perApp[c.AppID]++
	}
	if !reflect.DeepEqual(perApp, map[string]int{testAppID: 1, "wx00000000000000b2": 1}) {
		t.Errorf("token fetches per appid = %v, want one each", perApp)
	}
	perToken := map[string]int{}
	for _, s := range e.fake.sendCalls() {
		appid, _, _ := strings.Cut(strings.TrimPrefix(s.Token, "TOKEN-"), "-")
		perToken[appid]++
	}
	if !reflect.DeepEqual(perToken, map[string]int{testAppID: 2, "wx00000000000000b2": 2}) {
		t.Errorf("sends per token's appid = %v, want two with each app's own token", perToken)
	}

	_, err := e.client.Send(context.Background(), "nope", testMessage)
	if !errors.Is(err, wechat.ErrUnknownApp) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown app: err = %v", err)
	}

	// Re-registering an app unchanged keeps its token.
	e.client.SetApp("main", wechat.App{AppID: testAppID, Secret: testSecret})
	e.mustSend(t)
	if n := len(e.fake.tokenCalls()); n != 2 {
		t.Errorf("%d token fetches after re-registering an unchanged app, want 2", n)
	}
}
