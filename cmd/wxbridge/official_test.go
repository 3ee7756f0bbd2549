package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// The official account's side of the product, end to end: a rule that
// falls back from the Mini Program to the service account's template
// message, people found by unionid, the delivery receipt, the skip with
// every channel's reason.

const (
	oaMainID  = "wx00000000000000e2"
	oaID      = "wx0000000000000a0a"
	oaTplMP   = "TPL_statement_issued"
	oaTplOA   = "TPL_OA_statement"
	oaAESKey  = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	oaPushTok = "oa-push-token"
)

const officialRules = `
apps:
  main:
    appid: ` + oaMainID + `
    secret: e2e-secret
    push_token: main-push-token
    aes_key: ` + oaAESKey + `
  oa:
    kind: official_account
    appid: ` + oaID + `
    secret: oa-secret
    push_token: ` + oaPushTok + `
    aes_key: ` + oaAESKey + `
templates:
  statement_issued:
    app: main
    id: ` + oaTplMP + `
    kind: one_time
    keywords: {thing1: thing, thing2: thing, character_string3: character_string, time4: time}
  statement_issued_oa:
    app: oa
    kind: template_message
    id: ` + oaTplOA + `
    opens: main
    keywords:
      thing2: {label: 对账单位}
      character_string3: {label: 账期}
      const4: {label: 状态, enum: [已出账, 已结清]}
      time5: {label: 出账时间}
  arrival_mp:
    app: main
    id: TPL_arrival_mp
    keywords: {thing1: thing}
  arrival_oa:
    app: oa
    kind: one_time
    id: TPL_arrival_oa
    keywords: {thing1: thing}
rules:
  - name: arrival
    on: goods.arrived
    via: [arrival_mp, arrival_oa]
    url: https://example.com/a/{{ .data.ref }}
    to:
      - user: "{{ .data.user_id }}"
    data:
      thing1: "{{ .data.text }}"
  - name: statement-to-applicant
    on: statement.issued
    via: [statement_issued, statement_issued_oa]
    page: pages/statement/detail?id={{ .data.statement_id }}
    url: https://example.com/s/{{ .data.statement_id }}
    to:
      - user: "{{ .data.applicant_id }}"
    data:
      thing1: "{{ .data.buyer_name }}"
      thing2: "{{ .data.seller_name }}"
      character_string3: "{{ .data.month }}"
      time4: "{{ .data.created_at }}"
      const4: 已出账
      time5: "{{ .data.created_at }}"
  - name: notice-by-account
    on: notice.posted
    template: statement_issued_oa
    to:
      - user: "{{ .data.applicant_id }}"
    data:
      thing2: "{{ .data.seller_name }}"
      character_string3: "{{ .data.month }}"
      const4: 已结清
      time5: "{{ .data.created_at }}"
`

func statement(id, user string) map[string]any {
	return map[string]any{"statement_id": id, "applicant_id": user, "buyer_name": "Acme", "seller_name": "Supplier Ltd",
		"month": "2026-10", "created_at": "2026-11-01 09:00"}
}

// resultsByEvent reads results until every id has a final one that is
// not a delivery receipt (and, with receipts, one of those too).
func (h *harness) resultsByEvent(n int) map[string][]bridge.Result {
	h.t.Helper()
	out := map[string][]bridge.Result{}
	for _, r := range h.results(n) {
		out[r.EventID] = append(out[r.EventID], r)
	}
	return out
}

// A user with one credit gets the Mini Program message; their next
// statement reaches them as the service account's template message (with a
// client_msg_id, and a delivery receipt); once they unfollow, the next is
// skipped with both channels' reasons.
func TestOfficialAccountFallback(t *testing.T) {
	backends(t, func(t *testing.T, opt func(*serveConfig)) {
		h := startHarness(t, t.TempDir(), officialRules, opt)
		emu := h.svc.emu
		ctx := context.Background()
		emu.AddPerson(wechattest.Person{UnionID: "un-alice", OpenIDs: map[string]string{oaMainID: "o-alice", oaID: "oa-alice"}})
		// The mini program's backend binds with a login code: wxbridge
		// learns the unionid from code2session.
		code := emu.IssueCode(oaMainID, "o-alice", "")
		var bind bridge.BindReply
		h.request("wxbridge.cmd.bind", map[string]string{"app": "main", "user_id": "u-17", "code": code}, &bind)
		if bind.Error != "" || bind.OpenID != "o-alice" {
			t.Fatalf("bind reply %+v", bind)
		}
		emu.Accept(oaMainID, "o-alice", oaTplMP)
		var subs bridge.SubscriptionsReply
		h.request("wxbridge.cmd.subscriptions", map[string]any{"app": "main", "user_id": "u-17", "results": map[string]string{oaTplMP: "accept"}}, &subs)
		if subs.Error != "" {
			t.Fatalf("subscriptions reply %+v", subs)
		}
		// Alice follows the service account: WeChat pushes subscribe to
		// the account's own callback.
		emu.Follow(oaID, "oa-alice")
		waitUntil(t, "the follow push", func() bool {
			f, ok, _ := h.svc.store.Follower(ctx, "oa", "oa-alice")
			return ok && f.Following
		})

		h.publish("statement.issued", "evt-1", statement("S-1", "u-17"))
		got := h.resultsByEvent(1)
		h.publish("statement.issued", "evt-2", statement("S-2", "u-17"))
		first := finalOf(got["evt-1"])
		if first.Status != "sent" || first.App != "main" || first.TemplateID != oaTplMP || first.Channel != "subscribe_message" ||
			first.Template != "statement_issued" || first.OpenID != "o-alice" {
			t.Errorf("evt-1: %+v", first)
		}
		waitUntil(t, "evt-2's delivery receipt", func() bool {
			got = h.resultsByEvent(3)
			return receiptOf(got["evt-2"]) != nil
		})
		second := finalOf(got["evt-2"])
		if second.Status != "sent" || second.App != "oa" || second.TemplateID != oaTplOA || second.Channel != "template_message" ||
			second.OpenID != "oa-alice" || second.UserID != "u-17" || second.MsgID == "" {
			t.Errorf("evt-2: %+v", second)
		}
		if r := receiptOf(got["evt-2"]); r.Status != "delivered" || r.MsgID != second.MsgID {
			t.Errorf("evt-2's receipt: %+v", r)
		}
		var tm []wechattest.Sent
		for _, s := range emu.Sends() {
			if s.Path == wechattest.PathTemplateSend {
				tm = append(tm, s)
			}
		}
		if len(tm) != 1 || len(emu.Sends()) != 2 {
			t.Fatalf("sends %+v; want one subscribe message and one template message", emu.Sends())
		}
		s := tm[0]
		if s.ToUser != "oa-alice" || s.MsgID != second.MsgID || !strings.HasPrefix(s.ClientMsgID, "wxb-") || len(s.ClientMsgID) > 64 ||
			s.URL != "https://example.com/s/S-2" || s.MiniProgram == nil || s.MiniProgram.AppID != oaMainID ||
			s.MiniProgram.PagePath != "pages/statement/detail?id=S-2" || s.Data["const4"] != "已出账" || s.Data["thing2"] != "Supplier Ltd" {
			t.Errorf("template message %+v", s)
		}

		// Alice unfollows: nothing reaches her any more.
		emu.Unfollow(oaID, "oa-alice")
		waitUntil(t, "the unfollow push", func() bool {
			f, ok, _ := h.svc.store.Follower(ctx, "oa", "oa-alice")
			return ok && !f.Following
		})
		h.publish("statement.issued", "evt-3", statement("S-3", "u-17"))
		var third bridge.Result
		waitUntil(t, "evt-3's result", func() bool {
			third = finalOf(h.resultsByEvent(4)["evt-3"])
			return third.Status != ""
		})
		if third.Status != "skipped" || third.Reason != "not_subscribed" ||
			third.ErrMsg != "statement_issued: not_subscribed; statement_issued_oa: not_following" {
			t.Errorf("evt-3: %+v", third)
		}
		if n := len(emu.Sends()); n != 2 {
			t.Errorf("%d sends after the unfollow, want 2", n)
		}
		if e := emu.Errors(); e[43004] != 0 || e[43101] != 0 {
			t.Errorf("WeChat refused sends %v: wxbridge should have known", e)
		}
	})
}

// finalOf is the send's outcome among an event's results (not its delivery
// receipt).
func finalOf(rs []bridge.Result) bridge.Result {
	for _, r := range rs {
		if r.Status != "delivered" && r.Status != "undelivered" {
			return r
		}
	}
	return bridge.Result{}
}

func receiptOf(rs []bridge.Result) *bridge.Result {
	for _, r := range rs {
		if r.Status == "delivered" || r.Status == "undelivered" {
			return &r
		}
	}
	return nil
}

// A follower from before wxbridge listened (no follow push) is found
// through the account's follower list and user info; a person without a
// unionid is skipped with a reason that says so.
func TestOfficialAccountFollowerFromBefore(t *testing.T) {
	backends(t, func(t *testing.T, opt func(*serveConfig)) {
		h := startHarness(t, t.TempDir(), officialRules, opt)
		emu := h.svc.emu
		// Followers from before, one of them bob; bob binds with his unionid
		// (the backend did code2session itself).
		for i := range 30 {
			emu.AddFollower(oaID, fmt.Sprintf("oa-%02d", i), fmt.Sprintf("un-%02d", i))
		}
		emu.AddFollower(oaID, "oa-bob", "un-bob")
		var bind bridge.BindReply
		h.request("wxbridge.cmd.bind", map[string]string{"app": "main", "user_id": "u-bob", "openid": "o-bob", "unionid": "un-bob"}, &bind)
		h.request("wxbridge.cmd.bind", map[string]string{"app": "main", "user_id": "u-carol", "openid": "o-carol"}, &bind)
		if bind.Error != "" {
			t.Fatalf("bind: %+v", bind)
		}
		h.publish("statement.issued", "evt-b", statement("S-b", "u-bob"))
		h.publish("notice.posted", "evt-c", statement("S-c", "u-carol"))
		h.publish("notice.posted", "evt-n", statement("S-n", "u-nobody"))
		var bob, carol, nobody bridge.Result
		waitUntil(t, "three results", func() bool {
			got := h.resultsByEvent(3)
			bob, carol, nobody = finalOf(got["evt-b"]), finalOf(got["evt-c"]), finalOf(got["evt-n"])
			return bob.Status != "" && carol.Status != "" && nobody.Status != ""
		})
		if bob.Status != "sent" || bob.App != "oa" || bob.OpenID != "oa-bob" {
			t.Errorf("bob, a follower from before: %+v", bob)
		}
		if carol.Status != "skipped" || carol.Reason != "no_unionid" {
			t.Errorf("carol, bound without a unionid: %+v", carol)
		}
		if nobody.Status != "skipped" || nobody.Reason != "not_bound" {
			t.Errorf("a user bound nowhere: %+v", nobody)
		}
		calls := emu.Calls()
		if calls[wechattest.PathUserList] != 1 || calls[wechattest.PathUserInfoBatch] != 1 {
			t.Errorf("follower listing calls %v: want one page and one batch", calls)
		}
		f, ok, err := h.svc.store.FollowerByUnionID(context.Background(), "oa", "un-17")
		if err != nil || !ok || f.OpenID != "oa-17" || !f.Following {
			t.Errorf("a listed follower: %+v %v %v", f, ok, err)
		}
	})
}

// A crash after WeChat took a template message, and the redelivery that
// follows: the send stays on the channel it may have gone out by, even
// though the Mini Program could reach the user now, and the repeat carries
// the same client_msg_id, so WeChat itself refuses it (45065) and the
// first message stands.
func TestCrashOfficialAccountNotTwoChannels(t *testing.T) {
	for _, store := range []string{"bbolt", "nats"} {
		t.Run(store, func(t *testing.T) {
			r := newCrashRig(t)
			r.store = store
			// The Mini Program lets WeChat decide (subscriptions: wechat): the
			// first attempt is refused with 43101, then the account sends.
			rulesSrc := strings.Replace(officialRules, "    push_token: main-push-token\n", "    subscriptions: wechat\n", 1)
			if err := os.WriteFile(filepath.Join(r.dir, "rules.yaml"), []byte(rulesSrc), 0o600); err != nil {
				t.Fatal(err)
			}
			emu := r.emu
			emu.AddApp(oaMainID, "e2e-secret")
			emu.AddOfficialAccount(oaID, "oa-secret")
			emu.AddTemplate(oaMainID, wechattest.Template{ID: oaTplMP, Kind: wechattest.OneTime,
				Keywords: map[string]string{"thing1": "thing", "thing2": "thing", "character_string3": "character_string", "time4": "time"}})
			emu.AddTemplate(oaID, wechattest.Template{ID: oaTplOA, Kind: wechattest.TemplateMessage,
				Keywords: map[string]string{"thing2": "thing", "character_string3": "character_string", "const4": "const", "time5": "time"},
				Enums:    map[string][]string{"const4": {"已出账", "已结清"}}})
			emu.AddPerson(wechattest.Person{UnionID: "un-dan", OpenIDs: map[string]string{oaMainID: "o-dan", oaID: "oa-dan"}})
			emu.AddFollower(oaID, "oa-dan", "")

			r.start("")
			r.request("wxbridge.cmd.bind", bridge.BindRequest{App: "main", UserID: "u-dan", OpenID: "o-dan", UnionID: "un-dan"})
			r.stop()
			// Killed right after the second WeChat call: the template message.
			r.start("after-send=kill@2")
			r.publish("statement.issued", "evt-d", statement("S-d", "u-dan"))
			r.waitKilled()
			if n := len(emu.Sends()); n != 1 || emu.Sends()[0].Path != wechattest.PathTemplateSend {
				t.Fatalf("before the restart: sends %+v", emu.Sends())
			}
			first := emu.Sends()[0]
			// Meanwhile Dan accepts the Mini Program's template: that channel
			// would reach him now.
			emu.Accept(oaMainID, "o-dan", oaTplMP)

			r.start("")
			res := r.outcomes([]string{"evt-d"})["evt-d"]
			if res.Status != "sent" || res.App != "oa" || !res.InDoubt || res.MsgID != first.MsgID {
				t.Errorf("after the restart: %+v; want sent by oa, in doubt, msgid %s", res, first.MsgID)
			}
			if sends := emu.Sends(); len(sends) != 1 {
				t.Errorf("sends %+v: the event reached the user twice", sends)
			}
			if n := emu.Errors()[45065]; n != 1 {
				t.Errorf("%d repeats refused by client_msg_id, want 1 (errors %v)", n, emu.Errors())
			}
			r.stop()
		})
	}
}

// The service account's callback is as hard to forge as the Mini
// Program's: a plaintext follow, unfollow or receipt under a real push's
// signature, and a real push of the account replayed to the Mini Program's
// callback (another token, another appid), are refused and change nothing.
func TestForgedOfficialAccountPushes(t *testing.T) {
	h := startHarness(t, t.TempDir(), officialRules)
	emu := h.svc.emu
	ctx := context.Background()
	emu.AddPerson(wechattest.Person{UnionID: "un-erin", OpenIDs: map[string]string{oaID: "oa-erin"}})
	emu.Follow(oaID, "oa-erin")
	emu.FlushPushes()
	var real wechattest.Push
	for _, p := range emu.Pushes() {
		if p.AppID == oaID && p.Event == "subscribe" && p.Delivered {
			real = p
		}
	}
	if real.Query.Get("msg_signature") == "" {
		t.Fatalf("no delivered safe-mode follow push: %+v", emu.Pushes())
	}
	post := func(app string, q url.Values, body string) int {
		t.Helper()
		resp, err := http.Post("http://"+h.svc.ln.Addr().String()+"/wechat/callback/"+app+"?"+q.Encode(), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	plain := url.Values{}
	for _, k := range []string{"signature", "timestamp", "nonce"} {
		plain.Set(k, real.Query.Get(k))
	}
	now := time.Now().Unix()
	forged := map[string]string{
		"unfollow": fmt.Sprintf(`{"ToUserName":"gh_oa","FromUserName":"oa-erin","CreateTime":%d,"MsgType":"event","Event":"unsubscribe"}`, now),
		"follow":   fmt.Sprintf(`{"ToUserName":"gh_oa","FromUserName":"oa-mallory","CreateTime":%d,"MsgType":"event","Event":"subscribe"}`, now),
		"receipt":  fmt.Sprintf(`{"ToUserName":"gh_oa","FromUserName":"oa-erin","CreateTime":%d,"MsgType":"event","Event":"TEMPLATESENDJOBFINISH","MsgID":1,"Status":"success"}`, now),
	}
	for name, body := range forged {
		if code := post("oa", plain, body); code != http.StatusUnauthorized {
			t.Errorf("forged plaintext %s under a real signature: %d, want 401", name, code)
		}
	}
	if code := post("main", real.Query, real.Body); code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Errorf("the account's push replayed to the Mini Program's callback: %d, want 401 or 403", code)
	}
	// Pushes are applied before they are answered: a forgery that got
	// through would show by now.
	if f, ok, _ := h.svc.store.Follower(ctx, "oa", "oa-erin"); !ok || !f.Following {
		t.Errorf("erin after forged pushes: %+v %v", f, ok)
	}
	if _, ok, _ := h.svc.store.Follower(ctx, "oa", "oa-mallory"); ok {
		t.Error("a forged follow made a follower")
	}
	// The real push, replayed as WeChat retries it, is taken (and changes
	// nothing more).
	if code := post("oa", real.Query, real.Body); code != http.StatusOK {
		t.Errorf("the real push again: %d", code)
	}
}

// Subscription notifications (bizsend) keep the ledger as subscribe
// messages do: the popup on the account's callback grants a credit, a
// send spends it, the next finds none. Here the backend bound the
// person's openid in the account directly (web authorization), so no
// unionid is needed.
func TestOfficialAccountSubscriptionNotification(t *testing.T) {
	backends(t, func(t *testing.T, opt func(*serveConfig)) {
		h := startHarness(t, t.TempDir(), officialRules, opt)
		emu := h.svc.emu
		var bind bridge.BindReply
		h.request("wxbridge.cmd.bind", map[string]string{"app": "main", "user_id": "u-fay", "openid": "o-fay"}, &bind)
		h.request("wxbridge.cmd.bind", map[string]string{"app": "oa", "user_id": "u-fay", "openid": "oa-fay"}, &bind)
		if bind.Error != "" {
			t.Fatalf("bind: %+v", bind)
		}
		emu.Subscribe(oaID, "oa-fay", map[string]string{"TPL_arrival_oa": "accept"})
		waitUntil(t, "the popup on the account's callback", func() bool {
			s, ok, _ := h.svc.store.Subscription(context.Background(), "oa", "oa-fay", "TPL_arrival_oa")
			return ok && s.Credits == 1 && s.UserID == "u-fay"
		})
		h.publish("goods.arrived", "a-1", map[string]any{"user_id": "u-fay", "text": "到货", "ref": "A1"})
		first := finalOf(h.resultsByEvent(1)["a-1"])
		h.publish("goods.arrived", "a-2", map[string]any{"user_id": "u-fay", "text": "又到货", "ref": "A2"})
		var second bridge.Result
		waitUntil(t, "a-2's result", func() bool {
			second = finalOf(h.resultsByEvent(2)["a-2"])
			return second.Status != ""
		})
		if first.Status != "sent" || first.App != "oa" || first.Channel != "subscription_notification" || first.OpenID != "oa-fay" {
			t.Errorf("a-1: %+v", first)
		}
		if second.Status != "skipped" || second.ErrMsg != "arrival_mp: not_subscribed; arrival_oa: not_subscribed" {
			t.Errorf("a-2: %+v", second)
		}
		sends := emu.Sends()
		if len(sends) != 1 || sends[0].Path != wechattest.PathBizSend || sends[0].Page != "https://example.com/a/A1" || sends[0].Data["thing1"] != "到货" {
			t.Errorf("sends %+v", sends)
		}
	})
}
