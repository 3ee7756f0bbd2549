package wechattest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/silenceper/wechat/v2"
	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/credential"
	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	mpmessage "github.com/silenceper/wechat/v2/miniprogram/message"
	"github.com/silenceper/wechat/v2/miniprogram/subscribe"
	oaconfig "github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/officialaccount/message"
	"github.com/silenceper/wechat/v2/officialaccount/user"
	"github.com/silenceper/wechat/v2/util"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// toEmulator sends the SDK's requests, written for api.weixin.qq.com, to
// the emulator.
type toEmulator struct{ base *url.URL }

func (t toEmulator) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = t.base.Scheme, t.base.Host
	r.Host = t.base.Host
	return http.DefaultTransport.RoundTrip(r)
}

// The emulator answers the most used Go WeChat SDK
// (github.com/silenceper/wechat/v2) as WeChat does, and the SDK's own
// callback server reads the emulator's pushes: it is faithful to what
// other clients send and expect, not only to package wechat.
func TestThirdPartySDK(t *testing.T) {
	emu := wechattest.New(wechattest.Options{})
	emu.AddApp(appID, secret)
	emu.AddTemplate(appID, wechattest.Template{ID: tplOnce, Title: "发货通知", Kind: wechattest.OneTime,
		Keywords: map[string]string{"thing1": "thing", "time2": "time"}})
	emu.AddOfficialAccount(oaID, oaSecret)
	emu.AddTemplate(oaID, wechattest.Template{ID: tplMsg, Title: "对账单通知", Kind: wechattest.TemplateMessage,
		Keywords: map[string]string{"thing2": "thing", "amount3": "amount", "const4": "const", "time5": "time"},
		Enums:    map[string][]string{"const4": {"已出账", "已结清"}}})
	emu.AddPerson(wechattest.Person{UnionID: carolUnion, OpenIDs: map[string]string{appID: carolMP, oaID: carolOA}})
	api := httptest.NewServer(emu)
	t.Cleanup(func() {
		api.Close()
		_ = emu.Close()
	})
	base, _ := url.Parse(api.URL)
	prev := util.DefaultHTTPClient
	util.DefaultHTTPClient = &http.Client{Transport: toEmulator{base}, Timeout: 10 * time.Second}
	t.Cleanup(func() { util.DefaultHTTPClient = prev })

	wc := sdk.NewWechat()
	mem := cache.NewMemory()

	t.Run("mini program", func(t *testing.T) {
		mp := wc.GetMiniProgram(&mpconfig.Config{AppID: appID, AppSecret: secret, Cache: mem})
		// The SDK's default token is the legacy /cgi-bin/token.
		code := emu.IssueCode(appID, carolMP, carolUnion)
		s, err := mp.GetAuth().Code2Session(code)
		if err != nil || s.OpenID != carolMP || s.UnionID != carolUnion || s.SessionKey == "" {
			t.Fatalf("Code2Session: %+v, %v", s, err)
		}
		if _, err := mp.GetAuth().Code2Session(code); err == nil || !strings.Contains(err.Error(), "40029") {
			t.Fatalf("a code used twice: %v, want 40029", err)
		}
		msg := &subscribe.Message{ToUser: carolMP, TemplateID: tplOnce, Page: "pages/order?id=1",
			Data: map[string]*subscribe.DataItem{"thing1": {Value: "耳机"}, "time2": {Value: "2026-11-21 10:00"}}}
		if err := mp.GetSubscribe().Send(msg); err == nil || !strings.Contains(err.Error(), "43101") {
			t.Fatalf("send without a credit: %v, want 43101", err)
		}
		emu.Accept(appID, carolMP, tplOnce)
		id, err := mp.GetSubscribe().SendGetMsgID(msg)
		if err != nil || id == 0 {
			t.Fatalf("send with a credit: %d, %v", id, err)
		}
		emu.Accept(appID, carolMP, tplOnce)
		bad := *msg
		bad.Data = map[string]*subscribe.DataItem{"thing1": {Value: strings.Repeat("长", 21)}, "time2": {Value: "2026-11-21 10:00"}}
		if err := mp.GetSubscribe().Send(&bad); err == nil || !strings.Contains(err.Error(), "47003") {
			t.Fatalf("a thing of 21 characters: %v, want 47003", err)
		}
		list, err := mp.GetSubscribe().ListTemplates()
		if err != nil || len(list.Data) != 1 || list.Data[0].PriTmplID != tplOnce || list.Data[0].Type != 2 {
			t.Fatalf("templates: %+v, %v", list, err)
		}
	})

	// The Mini Program's pushes (popup, sent and change events) go to the
	// SDK's push receiver, in safe mode, as JSON and as XML.
	for _, format := range []wechattest.Format{wechattest.JSON, wechattest.XML} {
		t.Run(fmt.Sprintf("mini program pushes %v", format), func(t *testing.T) {
			mp := wc.GetMiniProgram(&mpconfig.Config{AppID: appID, AppSecret: secret, Token: pushToken, EncodingAESKey: aesKey, Cache: mem})
			var mu sync.Mutex
			var got []string
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, event, data, err := mp.GetMessageReceiver().GetMsgData(r)
				if err != nil {
					t.Errorf("the SDK refused a push: %v", err)
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				switch d := data.(type) {
				case *mpmessage.PushDataSubscribePopup:
					for _, e := range d.GetSubscribeMsgPopupEvents() {
						got = append(got, fmt.Sprintf("%s %s %s", event, e.TemplateID, e.SubscribeStatusString))
					}
				case *mpmessage.PushDataSubscribeMsgSent:
					for _, e := range d.GetSubscribeMsgSentEvents() {
						got = append(got, fmt.Sprintf("%s %s %s %s", event, e.TemplateID, e.ErrorCode, e.ErrorStatus))
					}
				case *mpmessage.PushDataSubscribeMsgChange:
					for _, e := range d.GetSubscribeMsgChangeEvents() {
						got = append(got, fmt.Sprintf("%s %s %s", event, e.TemplateID, e.SubscribeStatusString))
					}
				default:
					t.Errorf("the SDK read %s as %T", event, data)
				}
				_, _ = w.Write([]byte("success"))
			}))
			defer rcv.Close()
			if err := emu.SetCallback(appID, wechattest.Callback{URL: rcv.URL, Token: pushToken, EncodingAESKey: aesKey,
				Mode: wechattest.Safe, Format: format, SentEvents: true, SentEventDelay: time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			emu.Subscribe(appID, carolMP, map[string]string{tplOnce: "accept"})
			msg := &subscribe.Message{ToUser: carolMP, TemplateID: tplOnce,
				Data: map[string]*subscribe.DataItem{"thing1": {Value: "耳机"}, "time2": {Value: "2026-11-21 10:00"}}}
			if err := mp.GetSubscribe().Send(msg); err != nil {
				t.Fatal(err)
			}
			emu.Unsubscribe(appID, carolMP, tplOnce)
			emu.FlushPushes()
			mu.Lock()
			defer mu.Unlock()
			slices.Sort(got)
			want := []string{"subscribe_msg_change_event " + tplOnce + " reject", "subscribe_msg_popup_event " + tplOnce + " accept",
				"subscribe_msg_sent_event " + tplOnce + " 0 success"}
			if !slices.Equal(got, want) {
				t.Errorf("the SDK read %q, want %q", got, want)
			}
		})
	}

	// The official account's pushes go to the SDK's callback server, in
	// safe mode: it checks msg_signature and decrypts with its appid.
	var mu sync.Mutex
	var events []string
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oa := wc.GetOfficialAccount(&oaconfig.Config{AppID: oaID, AppSecret: oaSecret, Token: pushToken, EncodingAESKey: aesKey, Cache: mem})
		srv := oa.GetServer(r, w)
		srv.SetMessageHandler(func(m *message.MixMessage) *message.Reply {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, string(m.Event)+"/"+string(m.FromUserName)+"/"+m.Status)
			return nil
		})
		if err := srv.Serve(); err != nil {
			t.Errorf("the SDK refused a push: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = srv.Send()
	}))
	t.Cleanup(cb.Close)
	if err := emu.SetCallback(oaID, wechattest.Callback{URL: cb.URL, Token: pushToken, EncodingAESKey: aesKey,
		Mode: wechattest.Safe, Format: wechattest.XML}); err != nil {
		t.Fatal(err)
	}

	t.Run("official account", func(t *testing.T) {
		oa := wc.GetOfficialAccount(&oaconfig.Config{AppID: oaID, AppSecret: oaSecret, Cache: mem})
		oa.SetAccessTokenHandle(credential.NewStableAccessToken(oaID, oaSecret, credential.CacheKeyOfficialAccountPrefix, mem))
		tm := &message.TemplateMessage{ToUser: carolOA, TemplateID: tplMsg, ClientMsgID: "wxb-sdk-1",
			Data: map[string]*message.TemplateDataItem{"thing2": {Value: "Acme 对账单"}, "amount3": {Value: "￥1280.50"},
				"const4": {Value: "已出账"}, "time5": {Value: "2026-11-01 09:00"}}}
		// The SDK always sends "miniprogram", empty when the card opens no
		// mini program.
		if _, err := oa.GetTemplate().Send(tm); err == nil || !strings.Contains(err.Error(), "43004") {
			t.Fatalf("a template message to someone who does not follow: %v, want 43004", err)
		}
		emu.Follow(oaID, carolOA)
		id, err := oa.GetTemplate().Send(tm)
		if err != nil || id == 0 {
			t.Fatalf("template message: %d, %v", id, err)
		}
		if _, err := oa.GetTemplate().Send(tm); err == nil || !strings.Contains(err.Error(), "45065") {
			t.Fatalf("the same client_msg_id again: %v, want 45065", err)
		}
		info, err := oa.GetUser().GetUserInfo(carolOA)
		if err != nil || info.Subscribe != 1 || info.OpenID != carolOA || info.UnionID != carolUnion {
			t.Fatalf("user info: %+v, %v", info, err)
		}
		batch, err := oa.GetUser().BatchGetUserInfo(user.BatchGetUserInfoParams{UserList: []user.BatchGetUserListItem{{OpenID: carolOA}}})
		if err != nil || len(batch.UserInfoList) != 1 || batch.UserInfoList[0].UnionID != carolUnion {
			t.Fatalf("batch user info: %+v, %v", batch, err)
		}
		all, err := oa.GetUser().ListAllUserOpenIDs()
		if err != nil || !slices.Equal(all, []string{carolOA}) {
			t.Fatalf("followers: %v, %v", all, err)
		}
		emu.Unfollow(oaID, carolOA)
		emu.FlushPushes()
	})

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(events)
	want := []string{"TEMPLATESENDJOBFINISH/" + carolOA + "/success", "subscribe/" + carolOA + "/", "unsubscribe/" + carolOA + "/"}
	if !slices.Equal(events, want) {
		t.Errorf("the SDK's server read %q, want %q", events, want)
	}
	for _, p := range emu.Pushes() {
		if !p.Delivered {
			t.Errorf("push %s not taken by the SDK's server: %+v", p.Event, p.Tries)
		}
	}
}
