package wechat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat"
)

// officialCall is one request to an official account path, as the fake
// received it.
type officialCall struct {
	Path, Method, Token string
	Query               map[string]string
	Body                map[string]any
}

// officialFake scripts the official account paths of an apiFake: answer
// gets each call and returns what to answer (nil: a default success).
type officialFake struct {
	mu     sync.Mutex
	calls  []officialCall
	answer func(officialCall) any
}

func newOfficialEnv(t *testing.T, answer func(officialCall) any) (*testEnv, *officialFake) {
	t.Helper()
	e := newTestEnv(t)
	of := &officialFake{answer: answer}
	e.fake.setOther(func(r *http.Request) any {
		c := officialCall{Path: r.URL.Path, Method: r.Method, Token: r.URL.Query().Get("access_token"), Query: map[string]string{}}
		for k := range r.URL.Query() {
			c.Query[k] = r.URL.Query().Get(k)
		}
		d := json.NewDecoder(r.Body)
		d.UseNumber()
		_ = d.Decode(&c.Body)
		of.mu.Lock()
		of.calls = append(of.calls, c)
		of.mu.Unlock()
		if a := of.answer(c); a != nil {
			return a
		}
		return json.RawMessage(`{"errcode":0,"errmsg":"ok","msgid":3487542469355618313}`)
	})
	return e, of
}

func (of *officialFake) recorded() []officialCall {
	of.mu.Lock()
	defer of.mu.Unlock()
	return append([]officialCall(nil), of.calls...)
}

var testTemplateMessage = wechat.TemplateMessage{ToUser: "oa-user-1", TemplateID: "TM-1",
	URL: "https://example.com/s/7", MiniProgram: wechat.MiniProgram{AppID: "wx00000000000000b2", PagePath: "pages/s?id=7"},
	ClientMsgID: "evt-1|rule|u-17", Data: map[string]string{"thing2": "Acme", "amount3": "￥12.50"}}

// The body is the documented one (sendTemplateMessage), and the msgid comes
// back exact whether WeChat writes it as a number or a string.
func TestSendTemplate(t *testing.T) {
	for _, answer := range []string{
		`{"errcode":0,"errmsg":"ok","msgid":3487542469355618313}`,
		`{"errcode":0,"errmsg":"ok","msgid":"3487542469355618313"}`,
	} {
		e, of := newOfficialEnv(t, func(officialCall) any { return json.RawMessage(answer) })
		msgid, err := e.client.SendTemplate(context.Background(), "main", testTemplateMessage)
		if err != nil || msgid != "3487542469355618313" {
			t.Fatalf("SendTemplate = %q, %v", msgid, err)
		}
		calls := of.recorded()
		if len(calls) != 1 || calls[0].Path != "/cgi-bin/message/template/send" || calls[0].Method != http.MethodPost ||
			!strings.HasPrefix(calls[0].Token, "TOKEN-") {
			t.Fatalf("calls = %+v", calls)
		}
		want := map[string]any{
			"touser": "oa-user-1", "template_id": "TM-1", "url": "https://example.com/s/7",
			"miniprogram":   map[string]any{"appid": "wx00000000000000b2", "pagepath": "pages/s?id=7"},
			"client_msg_id": "evt-1|rule|u-17",
			"data":          map[string]any{"thing2": map[string]any{"value": "Acme"}, "amount3": map[string]any{"value": "￥12.50"}},
		}
		if !reflect.DeepEqual(calls[0].Body, want) {
			t.Errorf("body = %v\nwant %v", calls[0].Body, want)
		}
	}
}

// Optional fields are left out, not sent empty: an empty miniprogram would
// name no app, an empty client_msg_id would dedupe every message as one.
func TestSendTemplateOmitsWhatIsNotGiven(t *testing.T) {
	e, of := newOfficialEnv(t, func(officialCall) any { return nil })
	m := wechat.TemplateMessage{ToUser: "oa-user-1", TemplateID: "TM-1", Data: map[string]string{"thing2": "Acme"}}
	if _, err := e.client.SendTemplate(context.Background(), "main", m); err != nil {
		t.Fatal(err)
	}
	body := of.recorded()[0].Body
	for _, k := range []string{"url", "miniprogram", "client_msg_id"} {
		if _, ok := body[k]; ok {
			t.Errorf("body has %s: %v", k, body)
		}
	}
}

// A repeat WeChat refuses comes back as the earlier msgid and
// ErrAlreadySent, and nothing else: the bridge records it as sent.
func TestSendTemplateAlreadySent(t *testing.T) {
	tests := []struct {
		answer, msgid string
	}{
		{`{"errcode":45065,"errmsg":"clientmsgid exist rid: 6933e8f6-48ac74fd-2c498819","msgid":3487542469355618313}`, "3487542469355618313"},
		{`{"errcode":45065,"errmsg":"clientmsgid exist","msgid":"3487542469355618313"}`, "3487542469355618313"},
		{`{"errcode":45065,"errmsg":"clientmsgid exist"}`, ""},
	}
	for _, tt := range tests {
		e, _ := newOfficialEnv(t, func(officialCall) any { return json.RawMessage(tt.answer) })
		msgid, err := e.client.SendTemplate(context.Background(), "main", testTemplateMessage)
		if msgid != tt.msgid {
			t.Errorf("%s: msgid %q, want %q", tt.answer, msgid, tt.msgid)
		}
		assertClasses(t, err, wechat.ErrAlreadySent)
	}
}

// Every errcode the official account APIs document (or answer in the wild)
// has its class, on both send paths; the error says what was being done.
func TestOfficialErrcodeClasses(t *testing.T) {
	tests := []struct {
		code  int
		msg   string
		want  []error
		field string
	}{
		{43004, "require subscribe", []error{wechat.ErrRecipient, wechat.ErrNotFollowing}, ""},
		{40003, "invalid openid", []error{wechat.ErrRecipient, wechat.ErrInvalidOpenID}, ""},
		{43101, "user refuse to accept the msg", []error{wechat.ErrRecipient, wechat.ErrNotSubscribed}, ""},
		{43019, "require remove blacklist", []error{wechat.ErrRecipient}, ""},
		{40037, "invalid template_id", []error{wechat.ErrConfig}, ""},
		{40036, "invalid template_id size", []error{wechat.ErrConfig}, ""},
		{47003, "argument invalid! data.thing2.value invalid", []error{wechat.ErrConfig}, "thing2"},
		{47003, "argument invalid! data.phrase1.value is empty", []error{wechat.ErrConfig}, "phrase1"},
		{47001, "data format error", []error{wechat.ErrConfig}, ""},
		{48001, "api unauthorized", []error{wechat.ErrConfig}, ""},
		{45067, "clientmsgid size out of limit", []error{wechat.ErrConfig}, ""},
		{40013, "invalid appid", []error{wechat.ErrConfig}, ""},
		{45009, "reach max api daily quota limit", []error{wechat.ErrTransient}, ""},
		{45066, "clientmsgid retry too fast", []error{wechat.ErrTransient}, ""},
		{-1, "system error", []error{wechat.ErrTransient}, ""},
		{45065, "clientmsgid exist", []error{wechat.ErrAlreadySent}, ""},
	}
	sends := []struct {
		path, what string
		send       func(*wechat.Client) (string, error)
	}{
		{"/cgi-bin/message/template/send", "send template message TM-1 to oa-user-1", func(c *wechat.Client) (string, error) {
			return c.SendTemplate(context.Background(), "main", testTemplateMessage)
		}},
		{"/cgi-bin/message/subscribe/bizsend", "send subscription notification TS-1 to oa-user-1", func(c *wechat.Client) (string, error) {
			return c.SendBizSubscribe(context.Background(), "main", wechat.BizMessage{ToUser: "oa-user-1", TemplateID: "TS-1", Data: map[string]string{"thing1": "x"}})
		}},
	}
	for _, s := range sends {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/%d/%s", s.path, tt.code, tt.msg), func(t *testing.T) {
				e, _ := newOfficialEnv(t, func(officialCall) any { return errAnswer(tt.code, tt.msg) })
				_, err := s.send(e.client)
				assertClasses(t, err, tt.want...)
				var api *wechat.APIError
				if !errors.As(err, &api) || api.Code != tt.code || api.Path != s.path || api.Field() != tt.field {
					t.Fatalf("APIError = %+v (field %q), want code %d on %s, field %q", api, api.Field(), tt.code, s.path, tt.field)
				}
				for _, part := range []string{"app main", s.what, fmt.Sprint(tt.code)} {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("error %q lacks %q", err, part)
					}
				}
				assertNoSecrets(t, "error", err.Error())
			})
		}
	}
}

func TestSendBizSubscribe(t *testing.T) {
	e, of := newOfficialEnv(t, func(officialCall) any {
		return json.RawMessage(`{"errcode":0,"errmsg":"ok","msgid":1700827132819554304}`)
	})
	m := wechat.BizMessage{ToUser: "oa-user-1", TemplateID: "TS-1", Page: "https://example.com/s/7",
		MiniProgram: wechat.MiniProgram{AppID: "wx00000000000000b2", PagePath: "pages/s?id=7"}, Data: map[string]string{"thing1": "Acme"}}
	msgid, err := e.client.SendBizSubscribe(context.Background(), "main", m)
	if err != nil || msgid != "1700827132819554304" {
		t.Fatalf("SendBizSubscribe = %q, %v", msgid, err)
	}
	c := of.recorded()[0]
	want := map[string]any{"touser": "oa-user-1", "template_id": "TS-1", "page": "https://example.com/s/7",
		"miniprogram": map[string]any{"appid": "wx00000000000000b2", "pagepath": "pages/s?id=7"},
		"data":        map[string]any{"thing1": map[string]any{"value": "Acme"}}}
	if c.Path != "/cgi-bin/message/subscribe/bizsend" || !reflect.DeepEqual(c.Body, want) {
		t.Errorf("call %s %v\nwant body %v", c.Path, c.Body, want)
	}
	// An answer without a msgid is a send all the same.
	e, _ = newOfficialEnv(t, func(officialCall) any { return json.RawMessage(`{"errcode":0,"errmsg":"ok"}`) })
	if msgid, err := e.client.SendBizSubscribe(context.Background(), "main", m); err != nil || msgid != "" {
		t.Errorf("without msgid: %q, %v", msgid, err)
	}
}

func TestUserInfo(t *testing.T) {
	answers := map[string]string{
		// The documented answer, with a unionid (the account is bound to an
		// open platform account).
		"o-follower": `{"subscribe":1,"openid":"o-follower","language":"zh_CN","subscribe_time":1382694957,"unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL","remark":"","groupid":0,"tagid_list":[128,2],"subscribe_scene":"ADD_SCENE_QR_CODE","qr_scene":98765,"qr_scene_str":""}`,
		"o-gone":     `{"subscribe":0,"openid":"o-gone"}`,
		"o-nobody":   `{"errcode":40003,"errmsg":"invalid openid rid: 6933e8f6-48ac74fd-2c498819"}`,
	}
	e, of := newOfficialEnv(t, func(c officialCall) any { return json.RawMessage(answers[c.Query["openid"]]) })
	ctx := context.Background()
	got, err := e.client.UserInfo(ctx, "main", "o-follower")
	want := wechat.UserInfo{OpenID: "o-follower", Subscribed: true, UnionID: "o6_bmasdasdsad6_2sgVt7hMZOPfL",
		SubscribedAt: time.Unix(1382694957, 0), SubscribeScene: "ADD_SCENE_QR_CODE"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("follower: %+v, %v\nwant %+v", got, err, want)
	}
	c := of.recorded()[0]
	if c.Method != http.MethodGet || c.Path != "/cgi-bin/user/info" || c.Query["openid"] != "o-follower" || c.Query["lang"] != "zh_CN" {
		t.Errorf("call %+v", c)
	}
	if got, err := e.client.UserInfo(ctx, "main", "o-gone"); err != nil || got != (wechat.UserInfo{OpenID: "o-gone"}) {
		t.Errorf("no longer following: %+v, %v", got, err)
	}
	_, err = e.client.UserInfo(ctx, "main", "o-nobody")
	assertClasses(t, err, wechat.ErrRecipient, wechat.ErrInvalidOpenID)
	if !strings.Contains(err.Error(), "user info of o-nobody") {
		t.Errorf("error %q does not name the openid", err)
	}
}

// Batches of at most 100, results in the order asked; a batch refused for
// one stray openid is asked one by one, and the stray one is named.
func TestUserInfoBatch(t *testing.T) {
	var openids []string
	for i := range 250 {
		openids = append(openids, fmt.Sprintf("o-%03d", i))
	}
	const stray = "o-142"
	answer := func(c officialCall) any {
		if c.Path == "/cgi-bin/user/info" {
			if c.Query["openid"] == stray {
				return errAnswer(40003, "invalid openid")
			}
			return map[string]any{"subscribe": 1, "openid": c.Query["openid"], "unionid": "u-" + c.Query["openid"]}
		}
		list, _ := c.Body["user_list"].([]any)
		var infos []any
		for i := len(list) - 1; i >= 0; i-- { // answered in reverse: the order is not documented
			id := list[i].(map[string]any)["openid"].(string)
			if id == stray {
				return errAnswer(40003, "invalid openid")
			}
			if list[i].(map[string]any)["lang"] != "zh_CN" {
				return errAnswer(47001, "data format error")
			}
			infos = append(infos, map[string]any{"subscribe": 1, "openid": id, "unionid": "u-" + id})
		}
		return map[string]any{"user_info_list": infos}
	}
	e, of := newOfficialEnv(t, answer)
	got, err := e.client.UserInfoBatch(context.Background(), "main", openids)
	if !errors.Is(err, wechat.ErrInvalidOpenID) || !strings.Contains(err.Error(), stray) {
		t.Fatalf("err = %v, want ErrInvalidOpenID naming %s", err, stray)
	}
	if len(got) != len(openids)-1 {
		t.Fatalf("%d results, want %d", len(got), len(openids)-1)
	}
	i := 0
	for _, id := range openids {
		if id == stray {
			continue
		}
		if got[i].OpenID != id || got[i].UnionID != "u-"+id || !got[i].Subscribed {
			t.Fatalf("result %d = %+v, want %s", i, got[i], id)
		}
		i++
	}
	var batches []int
	singles := 0
	for _, c := range of.recorded() {
		if c.Path == "/cgi-bin/user/info/batchget" {
			batches = append(batches, len(c.Body["user_list"].([]any)))
		} else {
			singles++
		}
	}
	if !reflect.DeepEqual(batches, []int{100, 100, 50}) || singles != 100 {
		t.Errorf("batches %v and %d single calls; want [100 100 50] and 100", batches, singles)
	}

	// Without a stray openid there is no error and no single call.
	e, of = newOfficialEnv(t, answer)
	got, err = e.client.UserInfoBatch(context.Background(), "main", openids[:100])
	if err != nil || len(got) != 100 || len(of.recorded()) != 1 {
		t.Errorf("100 good openids: %d results, %v, %d calls", len(got), err, len(of.recorded()))
	}
	// Any other failure ends the call.
	e, _ = newOfficialEnv(t, func(officialCall) any { return errAnswer(48001, "api unauthorized") })
	if _, err := e.client.UserInfoBatch(context.Background(), "main", openids); !errors.Is(err, wechat.ErrConfig) {
		t.Errorf("48001: %v", err)
	}
}
