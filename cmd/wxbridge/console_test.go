package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/console"
	"github.com/wxbridge/wxbridge/internal/browsertest"
	"github.com/wxbridge/wxbridge/rules"
)

const consoleToken = "console-e2e-admin-token"

// consoleRules are the e2e rules with a title on the card, and the push
// settings WeChat's delivery receipts need.
var consoleRules = strings.NewReplacer(
	"    id: TPL_statement_issued\n", "    id: TPL_statement_issued\n    title: Statement issued\n",
	"    secret: e2e-secret\n", "    secret: e2e-secret\n    push_token: console-push-token\n    aes_key: abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n",
).Replace(testRules)

func withAdminToken(c *serveConfig) { c.AdminToken = consoleToken }

// statementEvent is a statement.issued payload for applicant.
func statementEvent(applicant, id, buyer string) map[string]any {
	return map[string]any{"statement_id": id, "applicant_id": applicant, "buyer_name": buyer,
		"seller_name": "Supplier Ltd", "month": "2026-10", "created_at": "2026-11-01 09:00"}
}

// The story against the real product, in Chromium: wxbridge runs
// as `serve --emulator` does, with an admin token; u-17 is bound and
// granted one credit, and two statements are published, so the first is
// sent and the second skipped for lack of a credit. In the browser: every
// page without the cookie sends to the login form, a wrong token is
// refused, the right one lets in; the person shows one sent and one
// skipped/not_subscribed result; the skipped event shows its outcome and
// the sent one its delivery receipt; a dry run shows the card with the
// fitted keyword values; a refused reload of the rules file shows on the
// rules page. On both state backends: the console reads through the
// store interfaces.
func TestConsoleServedEndToEndInBrowser(t *testing.T) {
	backends(t, func(t *testing.T, backend func(*serveConfig)) {
		h := startHarness(t, t.TempDir(), consoleRules, backend, withAdminToken)
		emu := h.svc.emu
		const appid, tpl = "wx00000000000000e2", "TPL_statement_issued"
		store := h.svc.cfg.Store

		var bind bridge.BindReply
		h.request("wxbridge.cmd.bind", map[string]string{"app": "main", "user_id": "u-17", "openid": "o-alice"}, &bind)
		if bind.Error != "" {
			t.Fatalf("bind: %s", bind.Error)
		}
		emu.Accept(appid, "o-alice", tpl)
		var subs bridge.SubscriptionsReply
		h.request("wxbridge.cmd.subscriptions", map[string]any{"app": "main", "user_id": "u-17", "results": map[string]string{tpl: "accept"}}, &subs)
		if subs.Error != "" || len(subs.Subscriptions) != 1 || subs.Subscriptions[0].Credits != 1 {
			t.Fatalf("grant a credit: %+v", subs)
		}
		h.publish("statement.issued", "evt-1", statementEvent("u-17", "S-1", "Acme"))
		if r := h.results(1); r[0].Status != "sent" {
			t.Fatalf("evt-1: %+v, want sent", r[0])
		}
		h.publish("statement.issued", "evt-2", statementEvent("u-17", "S-2", "Acme"))
		if r := h.results(2); r[1].EventID != "evt-2" || r[1].Status != "skipped" || r[1].Reason != "not_subscribed" {
			t.Fatalf("evt-2: %+v, want skipped/not_subscribed", r[1])
		}
		// WeChat's receipt of the send, and the console's read of both
		// results.
		emu.FlushPushes()
		waitUntil(t, "the delivery receipt of evt-1", func() bool {
			recs, err := h.svc.store.EventSends(context.Background(), "evt-1")
			return err == nil && len(recs) == 1 && recs[0].Delivery != ""
		})
		waitUntil(t, "the console to read both results", func() bool {
			var sent, skipped bool
			for _, r := range h.svc.console.model.PersonResults("u-17") {
				sent = sent || r.EventID == "evt-1" && r.Status == "sent"
				skipped = skipped || r.EventID == "evt-2" && r.Status == "skipped"
			}
			return sent && skipped
		})

		base := "http://" + h.svc.http.Addr().String()
		b := browsertest.Start(t)
		css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
		shot := func(n int, page string) { t.Helper(); b.Shot(fmt.Sprintf("serve-%s-%02d-%s", store, n, page)) }

		// Without the cookie every page sends to the login form, which
		// brings back to it.
		for _, p := range []string{"/console/", "/console/person?q=u-17", "/console/event?id=evt-1", "/console/rules", "/console/live", "/console/subscriptions"} {
			b.Do("open "+p+" without a session", chromedp.Navigate(base+p), chromedp.WaitVisible(css("#token")))
			if loc, want := b.Location(), "/console/login?next="+url.QueryEscape(p); !strings.HasSuffix(loc, want) {
				t.Errorf("without a session %s went to %s, want …%s", p, loc, want)
			}
		}
		shot(1, "login")

		b.Do("log in with a wrong token", chromedp.SendKeys(css("#token"), "not-the-token"), chromedp.Click(css("#login")),
			chromedp.WaitVisible(css("#login-error")))
		if msg, loc := b.Text("#login-error"), b.Location(); msg != "Wrong token." || !strings.Contains(loc, "/console/login") {
			t.Errorf("wrong token: %q at %s", msg, loc)
		}
		if c := b.Cookie(base+"/console/", console.CookieName); c != nil {
			t.Errorf("a wrong token set a cookie: %+v", c)
		}
		shot(2, "login-refused")

		b.Do("log in", chromedp.SetValue(css("#token"), consoleToken), chromedp.Click(css("#login")), chromedp.WaitVisible(css("#logout")))
		if loc := b.Location(); !strings.HasSuffix(loc, "/console/subscriptions") {
			t.Errorf("after login: %s, want back on the last page asked for", loc)
		}
		c := b.Cookie(base+"/console/", console.CookieName)
		if c == nil || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || strings.Contains(c.Value, consoleToken) {
			t.Errorf("session cookie %+v", c)
		}

		b.Do("open the overview", chromedp.Navigate(base+"/console/"), chromedp.WaitVisible(css("#outcomes")))
		for _, row := range []string{`#outcomes tr[data-status="sent"]`, `#outcomes tr[data-status="skipped"][data-reason="not_subscribed"]`} {
			if n := b.Count(row); n != 1 {
				t.Errorf("%d overview rows %s, want 1", n, row)
			}
		}
		if n := b.Text("#backlog"); n != "0" {
			t.Errorf("the overview shows %q events waiting, want 0", n)
		}
		shot(3, "overview")

		b.Do("find the person", chromedp.SendKeys(css("#nav-q"), "u-17\n"), chromedp.WaitVisible(css("#results")))
		if who := b.Text("#person-user"); !strings.Contains(who, "u-17") {
			t.Errorf("searching u-17 found %q", who)
		}
		if n := b.Count(`#results tr.result[data-status="sent"]`); n != 1 {
			t.Errorf("%d sent results on the person's page, want 1", n)
		}
		if n := b.Count(`#results tr.result[data-status="skipped"][data-reason="not_subscribed"]`); n != 1 {
			t.Errorf("%d skipped/not_subscribed results on the person's page, want 1", n)
		}
		if r := b.Text(`#results tr.result[data-status="skipped"] td.reason`); r != "not_subscribed" {
			t.Errorf("the skipped result's reason reads %q", r)
		}
		ledger := `.binding[data-app="main"] tr[data-template="` + tpl + `"]`
		if n, name := b.Text(ledger+` td.credits`), b.Text(ledger+` td:first-child`); n != "0" || name != "statement_issued" {
			t.Errorf("the ledger shows template %q with %q credits left, want statement_issued with 0", name, n)
		}
		shot(4, "person")

		b.Do("open the skipped event", chromedp.Click(css(`#results tr.result[data-status="skipped"] a.event-link`)), chromedp.WaitVisible(css("#sends")))
		if loc := b.Location(); !strings.Contains(loc, "id=evt-2") {
			t.Errorf("the event link went to %s", loc)
		}
		if n, all := b.Count(`#sends tr.send[data-status="skipped"]`), b.Count(`#sends tr.send`); n != 1 || all != 1 {
			t.Errorf("evt-2 has %d rows, %d skipped; want its one recipient, skipped", all, n)
		}
		if r := b.Text(`#sends tr.send td.reason`); r != "not_subscribed" {
			t.Errorf("evt-2's reason reads %q", r)
		}
		shot(5, "event-skipped")

		b.Do("open the sent event", chromedp.Navigate(base+"/console/event?id=evt-1"), chromedp.WaitVisible(css("#sends")))
		if n := b.Count(`#sends tr.send[data-status="sent"]`); n != 1 {
			t.Errorf("evt-1 has %d sent rows, want 1", n)
		}
		if r := b.Text(`#sends tr.send td.receipt`); !strings.Contains(r, "delivered") {
			t.Errorf("evt-1's delivery receipt reads %q", r)
		}
		shot(6, "event-sent")

		// A dry run: the card WeChat would show, each value fitted.
		const buyer = "Shanghai Acme International Trading Company"
		evJSON, _ := json.Marshal(statementEvent("u-17", "S-9", buyer))
		b.Do("dry run", chromedp.Navigate(base+"/console/rules"), chromedp.WaitVisible(css("#dryrun-event")),
			chromedp.SetValue(css("#dryrun-type"), "statement.issued"), chromedp.SetValue(css("#dryrun-event"), string(evJSON)),
			chromedp.Click(css("#dryrun")), chromedp.WaitVisible(css("#dryrun-result")))
		want := previewCard(t, h.svc.bridge.Rules(), evJSON)
		card := `article.rulerun[data-rule="statement-to-applicant"] .wxcard`
		for key, v := range want {
			if got := b.Text(card + ` .kw[data-key="` + key + `"] .value`); got != v {
				t.Errorf("the card shows %s = %q, want %q", key, got, v)
			}
		}
		if v := want["thing1"]; utf8.RuneCountInString(v) > 20 || v == buyer {
			t.Errorf("thing1 %q was not fitted to 20 characters", v)
		}
		if page := b.Text(card + ` code.page`); page != "pages/statement/detail?id=S-9" {
			t.Errorf("the card opens %q", page)
		}
		if title := b.Text(card + ` .wxcard-title`); title != "Statement issued" {
			t.Errorf("the card's title %q", title)
		}
		if got := strings.Join(strings.Fields(b.Text(`tr.recipient[data-user="u-17"] td:nth-child(4)`)), " "); got != "skip not_subscribed" {
			t.Errorf("dry run: u-17 would %q, want skip not_subscribed (the credit is spent)", got)
		}
		shot(7, "rules-dry-run")

		b.Do("open the live tail", chromedp.Navigate(base+"/console/live"), chromedp.WaitVisible(css(`#live-state[data-state="open"]`)))
		h.publish("statement.issued", "evt-3", statementEvent("u-17", "S-3", "Acme"))
		b.Do("see evt-3 arrive", chromedp.WaitVisible(css(`#live-rows tr.live-item[data-key*="|evt-3|"][data-status="skipped"]`)))
		shot(8, "live")
		b.Do("open subscriptions", chromedp.Navigate(base+"/console/subscriptions"), chromedp.WaitVisible(css(`section.template-health[data-template="`+tpl+`"]`)))
		shot(9, "subscriptions")

		// A rules file that fails its checks is refused, and the rules page
		// says so; the rules in force keep running.
		broken := strings.Replace(consoleRules, "template: statement_issued", "template: no_such_template", 1)
		if err := os.WriteFile(h.svc.cfg.RulesPath, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the reload to be refused", func() bool { return h.svc.console.rules.State().Refused != nil })
		b.Do("see the refused reload", chromedp.Navigate(base+"/console/rules"), chromedp.WaitVisible(css("#refused")))
		if msg := b.Text("#refused"); !strings.Contains(msg, "no_such_template") {
			t.Errorf("the refused reload reads %q, want the unknown template named", msg)
		}
		shot(10, "rules-refused")

		// The access tokens in use are among what the console scrubs.
		tok, _, err := h.svc.store.LoadToken(context.Background(), appid+"/stable")
		if err != nil || tok == "" || !slices.Contains(h.svc.console.tokens.secrets(), tok) {
			t.Errorf("the access token in the store (%d bytes, %v) is not among the console's secrets", len(tok), err)
		}
	})
}

// previewCard is what `wxbridge rules render` would put on the card: the
// rules package's own preview of the event.
func previewCard(t *testing.T, set *rules.Set, evJSON []byte) map[string]string {
	t.Helper()
	ev := &rules.Event{ID: "expected", Type: "statement.issued", Time: time.Now()}
	if err := json.Unmarshal(evJSON, &ev.Data); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range set.Match(ev) {
		for _, k := range m.Rule.Preview(ev).Keywords {
			if k.Err != nil {
				t.Fatalf("%s: %v", k.Key, k.Err)
			}
			out[k.Key] = k.Value
		}
	}
	if len(out) != 4 {
		t.Fatalf("expected card %v", out)
	}
	return out
}

// waitUntil polls ok for up to waitLimit.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", waitLimit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// No admin token, no console: every page is refused, as /v1/ is.
func TestConsoleOffWithoutAdminToken(t *testing.T) {
	h := startHarness(t, t.TempDir(), testRules)
	base := "http://" + h.svc.http.Addr().String()
	for _, p := range []string{"/console/", "/console/login", "/console/static/console.css"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "WXBRIDGE_ADMIN_TOKEN") {
			t.Errorf("GET %s without an admin token: %d %s", p, resp.StatusCode, body)
		}
	}
	if h.svc.console.model != nil {
		t.Error("a console without a token reads the output stream")
	}
}

// A live tail open when serve stops ends cleanly (its last chunk sent)
// rather than being cut off after Shutdown gives up waiting for it.
func TestConsoleLiveTailEndsAtShutdown(t *testing.T) {
	h := startHarness(t, t.TempDir(), testRules, withAdminToken)
	base := "http://" + h.svc.http.Addr().String()
	client := &http.Client{Timeout: 2 * waitLimit, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.PostForm(base+"/console/login", url.Values{"token": {consoleToken}, "next": {"/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			session = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil {
		t.Fatalf("log in: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/console/live/events", nil)
	req.AddCookie(session)
	tail, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer tail.Body.Close()
	first := make([]byte, len("retry:"))
	if _, err := io.ReadFull(tail.Body, first); err != nil || string(first) != "retry:" {
		t.Fatalf("the tail began %q, %v", first, err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		h.stop()
	}()
	if _, err := io.Copy(io.Discard, tail.Body); err != nil {
		t.Errorf("the tail was cut off at shutdown (%v), not ended", err)
	}
	<-stopped
}
