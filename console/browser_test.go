package console_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/wxbridge/wxbridge/console"
	"github.com/wxbridge/wxbridge/internal/browsertest"
	"github.com/wxbridge/wxbridge/rules"
)

// The scenario, in a real browser: a page without the cookie sends
// to the login form, a wrong token is refused, the right one lets in; the
// person is found with one sent and one skipped/not_subscribed result and
// its reason; the event shows each recipient's outcome; a dry run shows
// the card with the fitted keyword values; the live tail shows a new
// result as it happens; logging out locks the console again.
func TestConsoleInBrowser(t *testing.T) {
	w := newWorld(t)
	w.story()
	b := browsertest.Start(t)
	cookie := func() *network.Cookie { return b.Cookie(w.url+"/console/", console.CookieName) }
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// Without a session, a page sends to the login form.
	b.Do("open the overview without a session", chromedp.Navigate(w.url+"/console/"), chromedp.WaitVisible(css("#token")))
	if loc := b.Location(); !strings.Contains(loc, "/console/login?next=") {
		t.Fatalf("without a session the overview went to %s", loc)
	}
	b.Shot("01-login")

	// A wrong token is refused, with a clear message and no cookie.
	b.Do("log in with a wrong token", chromedp.SendKeys(css("#token"), "not-the-token"), chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#login-error")))
	if msg, loc := b.Text("#login-error"), b.Location(); msg != "Wrong token." || !strings.Contains(loc, "/console/login") {
		t.Errorf("wrong token: message %q at %s", msg, loc)
	}
	if c := cookie(); c != nil {
		t.Errorf("a wrong token set a cookie: %+v", c)
	}
	b.Shot("02-login-refused")

	// The right token lets in, back to the overview.
	b.Do("log in", chromedp.SetValue(css("#token"), adminToken), chromedp.Click(css("#login")), chromedp.WaitVisible(css("#outcomes")))
	if loc := b.Location(); !strings.HasSuffix(loc, "/console/") {
		t.Errorf("after login: %s", loc)
	}
	c := cookie()
	if c == nil || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/console" || strings.Contains(c.Value, adminToken) {
		t.Errorf("session cookie %+v", c)
	}

	// Find the person by openid from the search box.
	b.Do("find the person", chromedp.SendKeys(css("#nav-q"), "o-alice\n"), chromedp.WaitVisible(css("#results")))
	if who := b.Text("#person-user"); !strings.Contains(who, "u-17") {
		t.Errorf("searching o-alice found %q", who)
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
	if n := b.Text(`.binding[data-app="main"] tr[data-template="` + tplID + `"] td.credits`); n != "0" {
		t.Errorf("the ledger shows %q credits left, want 0", n)
	}
	b.Shot("03-person")

	// Open the skipped event: every (rule, recipient) outcome.
	b.Do("open the event", chromedp.Click(css(`#results tr.result[data-status="skipped"] a.event-link`)), chromedp.WaitVisible(css("#sends")))
	if loc := b.Location(); !strings.Contains(loc, "id=evt-2") {
		t.Errorf("the event link went to %s", loc)
	}
	if n := b.Count(`#sends tr.send[data-status="skipped"]`); n != 2 {
		t.Errorf("%d skipped recipients of evt-2, want 2 (u-17 not_subscribed, u-18 not_bound)", n)
	}
	outcomes := b.Text("#sends tbody")
	for _, want := range []string{"not_subscribed", "not_bound", "u-17", "u-18"} {
		if !strings.Contains(outcomes, want) {
			t.Errorf("the event page does not show %q:\n%s", want, outcomes)
		}
	}
	b.Shot("04-event")

	// A dry run of a pasted event: the card with each fitted value.
	const buyer = "Shanghai Acme International Trading Company"
	evJSON := `{"statement_id":"S-9","applicant_id":"u-17","buyer_id":"42","buyer_name":"` + buyer +
		`","seller_name":"Supplier Ltd","month":"2026-10","created_at":"2026-11-01T09:00:00+08:00"}`
	b.Do("dry run", chromedp.Navigate(w.url+"/console/rules"), chromedp.WaitVisible(css("#dryrun-event")),
		chromedp.SetValue(css("#dryrun-type"), "statement.issued"), chromedp.SetValue(css("#dryrun-event"), evJSON),
		chromedp.Click(css("#dryrun")), chromedp.WaitVisible(css("#dryrun-result")))
	want := expectedCard(t, w.rules.State().Set, evJSON)
	card := `article.rulerun[data-rule="statement-to-applicant"] .wxcard`
	for key, v := range want {
		if got := b.Text(card + ` .kw[data-key="` + key + `"] .value`); got != v {
			t.Errorf("the card shows %s = %q, want %q", key, got, v)
		}
	}
	if v := want["thing1"]; utf8.RuneCountInString(v) > 20 || v == buyer {
		t.Errorf("thing1 %q was not fitted to 20 characters", v)
	}
	if v := want["time4"]; v != "2026-11-01 09:00" {
		t.Errorf("time4 fitted to %q", v)
	}
	if page := b.Text(card + ` code.page`); page != "pages/statement/detail?id=S-9" {
		t.Errorf("the card opens %q", page)
	}
	if title := b.Text(card + ` .wxcard-title`); title != "Statement issued" {
		t.Errorf("the card's title %q", title)
	}
	for user, verdict := range map[string]string{"u-17": "skip not_subscribed", "u-18": "skip not_bound"} {
		if got := strings.Join(strings.Fields(b.Text(`tr.recipient[data-user="`+user+`"] td:nth-child(4)`)), " "); got != verdict {
			t.Errorf("dry run: %s would %q, want %q", user, got, verdict)
		}
	}
	b.Shot("05-rules-dry-run")

	// The live tail shows a result as it happens.
	b.Do("open the live tail", chromedp.Navigate(w.url+"/console/live"), chromedp.WaitVisible(css(`#live-state[data-state="open"]`)))
	w.publish("evt-4", statement("u-17", "S-4"))
	b.Do("see evt-4 arrive", chromedp.WaitVisible(css(`#live-rows tr.live-item[data-key*="|evt-4|"][data-status="skipped"]`)))
	// Added by the page's script from the stream: the template, and the road it goes by.
	if got := strings.Join(strings.Fields(b.Text(`#live-rows tr.live-item[data-key*="|evt-4|"] td.template`)), " "); got != "statement_issued (subscribe_message of main)" {
		t.Errorf("the live row's template cell says %q", got)
	}
	b.Shot("06-live")

	// Picking the latest event of a type fills the dry run form.
	b.Do("pick the latest event", chromedp.Navigate(w.url+"/console/rules?pick=statement.issued"), chromedp.WaitVisible(css("#dryrun-event")))
	if ev := b.Value("#dryrun-event"); !strings.Contains(ev, `"S-4"`) {
		t.Errorf("the picked event is %q, want the latest (S-4)", ev)
	}

	health := `section.template-health[data-template="` + tplID + `"]`
	b.Do("open subscriptions", chromedp.Navigate(w.url+"/console/subscriptions"), chromedp.WaitVisible(css(health)))
	if n := b.Text(health + ` td.not-subscribed`); n != "2" {
		t.Errorf("skipped for lack of a credit: %q, want 2 (evt-2, evt-4)", n)
	}
	b.Shot("07-subscriptions")

	b.Do("open the overview", chromedp.Navigate(w.url+"/console/"), chromedp.WaitVisible(css("#faults")))
	if n := b.Count(`#faults tr.fault[data-errcode="41030"]`); n != 1 {
		t.Errorf("%d rows for the 41030 configuration error", n)
	}
	if n := b.Count(`#dead tbody tr`); n != 1 {
		t.Errorf("%d dead letters shown, want 1", n)
	}
	b.Shot("08-overview")

	// Logging out locks the console again.
	b.Do("log out", chromedp.Click(css("#logout")), chromedp.WaitVisible(css("#token")))
	b.Do("open a page after logout", chromedp.Navigate(w.url+"/console/subscriptions"), chromedp.WaitVisible(css("#token")))
	if loc := b.Location(); !strings.Contains(loc, "/console/login") {
		t.Errorf("after logout a page went to %s", loc)
	}
}

// expectedCard is what `wxbridge rules render` would put on the card: the
// rules package's own preview of the event.
func expectedCard(t *testing.T, set *rules.Set, evJSON string) map[string]string {
	t.Helper()
	ev := &rules.Event{ID: "expected", Type: "statement.issued", Time: time.Now()}
	if err := json.Unmarshal([]byte(evJSON), &ev.Data); err != nil {
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

// A dry run of a rule with via, in a browser: one card per channel, those
// someone would get marked, and each recipient's row links the card it
// would get.
func TestDryRunViaInBrowser(t *testing.T) {
	f := newHandlerFor(t, adminToken, false, parseRules(t, viaRules))
	viaPeople(f.store)
	b := browsertest.Start(t)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	b.Do("log in", chromedp.Navigate(f.srv.URL+"/console/rules"), chromedp.WaitVisible(css("#token")),
		chromedp.SetValue(css("#token"), adminToken), chromedp.Click(css("#login")), chromedp.WaitVisible(css("#dryrun-event")))
	b.Do("dry run", chromedp.SetValue(css("#dryrun-type"), "statement.issued"), chromedp.SetValue(css("#dryrun-event"), viaEvent(t)),
		chromedp.Click(css("#dryrun")), chromedp.WaitVisible(css("#dryrun-result")))
	via := `article.rulerun[data-rule="statement-via"] `
	if n := b.Count(via + `.wxcard`); n != 2 {
		t.Errorf("%d cards for a rule with two channels", n)
	}
	if n := b.Count(via + `.wxcard.chosen`); n != 2 {
		t.Errorf("%d cards marked as sent, want both (u-mp by the first, u-follow and u-oa by the second)", n)
	}
	row := via + `tr.recipient[data-user="u-follow"]`
	if got := strings.Join(strings.Fields(b.Text(row+` td:nth-child(4)`)), " "); got != "send" {
		t.Errorf("u-follow would %q, want send", got)
	}
	if got := strings.Join(strings.Fields(b.Text(row+` td.by`)), " "); got != "2. statement_issued_oa (template_message of service)" {
		t.Errorf("u-follow would go by %q", got)
	}
	b.Do("follow the link to the card", chromedp.Click(css(row+` td.by a`)))
	if loc := b.Location(); !strings.HasSuffix(loc, "#card-statement-via-2") {
		t.Errorf("the row links to %s", loc)
	}
	if got := strings.Join(strings.Fields(b.Text(via+`tr.recipient[data-user="u-gone"] td:nth-child(4)`)), " "); got != "skip not_subscribed" {
		t.Errorf("u-gone would %q, want skip not_subscribed", got)
	}
	b.Shot("09-rules-dry-run-via")
}
