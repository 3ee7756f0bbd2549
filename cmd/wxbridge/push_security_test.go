package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// capturedPushURL makes WeChat push one real (safe-mode) callback and
// returns its query, as anyone reading a proxy or access log would see it:
// signature, timestamp and nonce beside encrypt_type and msg_signature.
func (h *harness) capturedPushURL() url.Values {
	h.t.Helper()
	emu := h.svc.emu
	// A popup for another template, so the credits under test stay as set.
	emu.Subscribe(flowAppID, "o1", map[string]string{tplAlert: "accept"})
	h.subscription("o1", tplAlert, func(s storage.Subscription) bool { return s.Credits == 1 })
	emu.FlushPushes()
	pushes := emu.Pushes()
	if len(pushes) == 0 || !pushes[len(pushes)-1].Delivered {
		h.t.Fatalf("no delivered push to capture: %+v", pushes)
	}
	q := pushes[len(pushes)-1].Query
	if q.Get("encrypt_type") != "aes" || q.Get("signature") == "" || q.Get("msg_signature") == "" {
		h.t.Fatalf("captured push is not a safe-mode push: %v", q)
	}
	return q
}

// postForged posts body under the captured URL's three-part signature,
// stripped of what marks it encrypted (or with encrypt_type=raw), and
// returns the status.
func (h *harness) postForged(captured url.Values, encryptType, body string) int {
	h.t.Helper()
	q := url.Values{}
	for _, k := range []string{"signature", "timestamp", "nonce", "openid"} {
		if v := captured.Get(k); v != "" {
			q.Set(k, v)
		}
	}
	if encryptType != "" {
		q.Set("encrypt_type", encryptType)
	}
	u := "http://" + h.svc.ln.Addr().String() + "/wechat/callback/main?" + q.Encode()
	resp, err := http.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func subscriptionEvent(event, openid, tpl, status string) string {
	return fmt.Sprintf(`{"ToUserName":"gh_x","FromUserName":%q,"CreateTime":%d,"MsgType":"event","Event":%q,`+
		`"List":{"TemplateId":%q,"SubscribeStatusString":%q,"PopupScene":"0"}}`, openid, time.Now().Unix(), event, tpl, status)
}

// An app with an aes_key takes only encrypted pushes. The three-part
// signature of a real push URL covers token, timestamp and nonce, never the
// body: replayed within its five minutes with a forged plaintext body it
// must neither zero a user's credits (a forged reject) nor add one (a
// forged accept).
func TestForgedPlaintextPushUnderARealSignature(t *testing.T) {
	h := flow(t)
	h.bind("u1", "o1")
	h.grant("u1", "o1", tplNotice, 2)
	captured := h.capturedPushURL()

	forgeries := []struct {
		name, encryptType, body string
	}{
		{"reject (change event)", "", subscriptionEvent("subscribe_msg_change_event", "o1", tplNotice, "reject")},
		{"reject (popup), encrypt_type=raw", "raw", subscriptionEvent("subscribe_msg_popup_event", "o1", tplNotice, "reject")},
		{"accept (popup)", "", subscriptionEvent("subscribe_msg_popup_event", "o1", tplNotice, "accept")},
		{"accept for another user", "", subscriptionEvent("subscribe_msg_popup_event", "o-mallory", tplNotice, "accept")},
	}
	for _, f := range forgeries {
		if code := h.postForged(captured, f.encryptType, f.body); code != http.StatusUnauthorized {
			t.Errorf("forged plaintext %s under a real signature: answered %d, want 401", f.name, code)
		}
	}

	// A push is applied before it is answered, so a forgery that got
	// through would show in the ledger by now.
	s, _, err := h.svc.store.Subscription(context.Background(), "main", "o1", tplNotice)
	if err != nil {
		t.Fatal(err)
	}
	if s.Credits != 2 || s.Status != storage.StatusAccept {
		t.Fatalf("after forged pushes the ledger of o1 says %s with %d credits, want accept with 2", s.Status, s.Credits)
	}
	if s, found, _ := h.svc.store.Subscription(context.Background(), "main", "o-mallory", tplNotice); found {
		t.Fatalf("a forged accept created a ledger entry: %+v", s)
	}

	// The credits still pay for sends: two events, two messages.
	h.publish("notice.posted", "f-1", map[string]any{"user_id": "u1", "text": "one", "ref": "F1"})
	h.publish("notice.posted", "f-2", map[string]any{"user_id": "u1", "text": "two", "ref": "F2"})
	for id, r := range h.outcomesFor("f-1", "f-2") {
		if r.Status != "sent" {
			t.Errorf("%s: %s/%s, want sent", id, r.Status, r.Reason)
		}
	}
}

// WeChat set to plaintext mode while the rules keep the aes_key: the pushes
// are refused (and say so in the log) until the app allows plaintext for
// its migration, and then they count.
func TestPlaintextPushNeedsTheMigrationSetting(t *testing.T) {
	plaintextPushes := func(c *serveConfig) { c.PushMode = "plaintext" }
	refused := func(t *testing.T, h *harness) {
		t.Helper()
		h.bind("u1", "o1")
		h.svc.emu.Subscribe(flowAppID, "o1", map[string]string{tplNotice: "accept"})
		h.svc.emu.FlushPushes()
		pushes := h.svc.emu.Pushes()
		if len(pushes) != 1 || pushes[0].Delivered || len(pushes[0].Tries) == 0 || pushes[0].Tries[0].Status != http.StatusUnauthorized {
			t.Fatalf("plaintext push to an app with an aes_key: %+v, want refused with 401", pushes)
		}
		if s, found, _ := h.svc.store.Subscription(context.Background(), "main", "o1", tplNotice); found {
			t.Fatalf("a refused plaintext push changed the ledger: %+v", s)
		}
		// URL verification has no body to protect: it works in every mode.
		if err := h.svc.emu.VerifyCallback(context.Background(), flowAppID); err != nil {
			t.Fatalf("URL verification of an app that refuses plaintext: %v", err)
		}
	}
	t.Run("refused by default", func(t *testing.T) {
		refused(t, flow(t, plaintextPushes))
	})
	t.Run("accepted with allow_plaintext_push", func(t *testing.T) {
		migrating := strings.Replace(flowRules, "    aes_key: "+flowAESKey+"\n", "    aes_key: "+flowAESKey+"\n    allow_plaintext_push: true\n", 1)
		if migrating == flowRules {
			t.Fatal("the test did not change the rules")
		}
		h := startHarness(t, t.TempDir(), migrating, plaintextPushes)
		h.bind("u1", "o1")
		h.svc.emu.Subscribe(flowAppID, "o1", map[string]string{tplNotice: "accept"})
		h.subscription("o1", tplNotice, func(s storage.Subscription) bool { return s.Credits == 1 })
		h.svc.emu.FlushPushes()
		if p := h.svc.emu.Pushes(); len(p) != 1 || !p[0].Delivered || p[0].Query.Get("encrypt_type") != "" {
			t.Fatalf("pushes %+v, want one plaintext push", p)
		}
	})
	t.Run("compatible mode needs no setting", func(t *testing.T) {
		h := flow(t, func(c *serveConfig) { c.PushMode = wechattest.Compatible.String() })
		h.bind("u1", "o1")
		h.svc.emu.Subscribe(flowAppID, "o1", map[string]string{tplNotice: "accept"})
		h.subscription("o1", tplNotice, func(s storage.Subscription) bool { return s.Credits == 1 })
	})
}
