package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/wxbridge/wxbridge/console"
	"github.com/wxbridge/wxbridge/rules"
)

// chromiumPath is Debian's chromium; WXBRIDGE_CHROMIUM names another.
func chromiumPath() string {
	if p := os.Getenv("WXBRIDGE_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// browser starts a headless Chromium with a fresh profile. A browser that
// cannot start fails the test: the console is only tested if it runs.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit, before its profile is removed
	})
	// The first run starts the browser; it lives as long as ctx, so this
	// call has no timeout of its own (the allocator bounds the start).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium %s: %v (Debian: apt-get install -y chromium)", chromiumPath(), err)
	}
	return ctx
}

// screenshotDir is where the pictures of each page go: $WXBRIDGE_SCREENSHOTS,
// else console/screenshots (git-ignored).
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("WXBRIDGE_SCREENSHOTS")
	if dir == "" {
		dir = "screenshots"
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots of each page in %s", dir)
	return dir
}

// The scenario, in a real browser: a page without the cookie sends
// to the login form, a wrong token is refused, the right one lets in; the
// person is found with one sent and one skipped/not_subscribed result and
// its reason; the event shows each recipient's outcome; a dry run shows
// the card with the fitted keyword values; the live tail shows a new
// result as it happens; logging out locks the console again.
func TestConsoleInBrowser(t *testing.T) {
	w := newWorld(t)
	w.story()
	shots := screenshotDir(t)
	ctx := browser(t)

	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, waitLimit) }
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := step()
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(selector string) string {
		t.Helper()
		sctx, cancel := step()
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(selector)))
		if err != nil {
			t.Fatalf("read %s: %v", selector, err)
		}
		return s
	}
	value := func(selector string) string {
		t.Helper()
		sctx, cancel := step()
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Value(chromedp.CSS(selector)))
		if err != nil {
			t.Fatalf("read the value of %s: %v", selector, err)
		}
		return s
	}
	location := func() string {
		t.Helper()
		sctx, cancel := step()
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Location())
		if err != nil {
			t.Fatalf("location: %v", err)
		}
		return s
	}
	count := func(selector string) int {
		t.Helper()
		sctx, cancel := step()
		defer cancel()
		n, err := chromedp.Run(sctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, selector)))
		if err != nil {
			t.Fatalf("count %s: %v", selector, err)
		}
		return n
	}
	shot := func(name string) {
		t.Helper()
		sctx, cancel := step()
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cookie := func() *network.Cookie {
		t.Helper()
		sctx, cancel := step()
		defer cancel()
		c, err := chromedp.Run(sctx, func(ctx context.Context, tg *chromedp.Target) (*network.Cookie, error) {
			res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{w.url + "/console/"}})
			for _, c := range res.Cookies {
				if c.Name == console.CookieName {
					return c, err
				}
			}
			return nil, err
		})
		if err != nil {
			t.Fatalf("read cookies: %v", err)
		}
		return c
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// Without a session, a page sends to the login form.
	do("open the overview without a session", chromedp.Navigate(w.url+"/console/"), chromedp.WaitVisible(css("#token")))
	if loc := location(); !strings.Contains(loc, "/console/login?next=") {
		t.Fatalf("without a session the overview went to %s", loc)
	}
	shot("01-login")

	// A wrong token is refused, with a clear message and no cookie.
	do("log in with a wrong token", chromedp.SendKeys(css("#token"), "not-the-token"), chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#login-error")))
	if msg, loc := text("#login-error"), location(); msg != "Wrong token." || !strings.Contains(loc, "/console/login") {
		t.Errorf("wrong token: message %q at %s", msg, loc)
	}
	if c := cookie(); c != nil {
		t.Errorf("a wrong token set a cookie: %+v", c)
	}
	shot("02-login-refused")

	// The right token lets in, back to the overview.
	do("log in", chromedp.SetValue(css("#token"), adminToken), chromedp.Click(css("#login")), chromedp.WaitVisible(css("#outcomes")))
	if loc := location(); !strings.HasSuffix(loc, "/console/") {
		t.Errorf("after login: %s", loc)
	}
	c := cookie()
	if c == nil || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/console" || strings.Contains(c.Value, adminToken) {
		t.Errorf("session cookie %+v", c)
	}

	// Find the person by openid from the search box.
	do("find the person", chromedp.SendKeys(css("#nav-q"), "o-alice\n"), chromedp.WaitVisible(css("#results")))
	if who := text("#person-user"); !strings.Contains(who, "u-17") {
		t.Errorf("searching o-alice found %q", who)
	}
	if n := count(`#results tr.result[data-status="sent"]`); n != 1 {
		t.Errorf("%d sent results on the person's page, want 1", n)
	}
	if n := count(`#results tr.result[data-status="skipped"][data-reason="not_subscribed"]`); n != 1 {
		t.Errorf("%d skipped/not_subscribed results on the person's page, want 1", n)
	}
	if r := text(`#results tr.result[data-status="skipped"] td.reason`); r != "not_subscribed" {
		t.Errorf("the skipped result's reason reads %q", r)
	}
	if n := text(`.binding[data-app="main"] tr[data-template="` + tplID + `"] td.credits`); n != "0" {
		t.Errorf("the ledger shows %q credits left, want 0", n)
	}
	shot("03-person")

	// Open the skipped event: every (rule, recipient) outcome.
	do("open the event", chromedp.Click(css(`#results tr.result[data-status="skipped"] a.event-link`)), chromedp.WaitVisible(css("#sends")))
	if loc := location(); !strings.Contains(loc, "id=evt-2") {
		t.Errorf("the event link went to %s", loc)
	}
	if n := count(`#sends tr.send[data-status="skipped"]`); n != 2 {
		t.Errorf("%d skipped recipients of evt-2, want 2 (u-17 not_subscribed, u-18 not_bound)", n)
	}
	outcomes := text("#sends tbody")
	for _, want := range []string{"not_subscribed", "not_bound", "u-17", "u-18"} {
		if !strings.Contains(outcomes, want) {
			t.Errorf("the event page does not show %q:\n%s", want, outcomes)
		}
	}
	shot("04-event")

	// A dry run of a pasted event: the card with each fitted value.
	const buyer = "Shanghai Acme International Trading Company"
	evJSON := `{"statement_id":"S-9","applicant_id":"u-17","buyer_id":"42","buyer_name":"` + buyer +
		`","seller_name":"Supplier Ltd","month":"2026-10","created_at":"2026-11-01T09:00:00+08:00"}`
	do("dry run", chromedp.Navigate(w.url+"/console/rules"), chromedp.WaitVisible(css("#dryrun-event")),
		chromedp.SetValue(css("#dryrun-type"), "statement.issued"), chromedp.SetValue(css("#dryrun-event"), evJSON),
		chromedp.Click(css("#dryrun")), chromedp.WaitVisible(css("#dryrun-result")))
	want := expectedCard(t, w.rules.State().Set, evJSON)
	card := `article.rulerun[data-rule="statement-to-applicant"] .wxcard`
	for key, v := range want {
		if got := text(card + ` .kw[data-key="` + key + `"] .value`); got != v {
			t.Errorf("the card shows %s = %q, want %q", key, got, v)
		}
	}
	if v := want["thing1"]; utf8.RuneCountInString(v) > 20 || v == buyer {
		t.Errorf("thing1 %q was not fitted to 20 characters", v)
	}
	if v := want["time4"]; v != "2026-11-01 09:00" {
		t.Errorf("time4 fitted to %q", v)
	}
	if page := text(card + ` code.page`); page != "pages/statement/detail?id=S-9" {
		t.Errorf("the card opens %q", page)
	}
	if title := text(card + ` .wxcard-title`); title != "Statement issued" {
		t.Errorf("the card's title %q", title)
	}
	for user, verdict := range map[string]string{"u-17": "skip not_subscribed", "u-18": "skip not_bound"} {
		if got := strings.Join(strings.Fields(text(`tr.recipient[data-user="`+user+`"] td:nth-child(4)`)), " "); got != verdict {
			t.Errorf("dry run: %s would %q, want %q", user, got, verdict)
		}
	}
	shot("05-rules-dry-run")

	// The live tail shows a result as it happens.
	do("open the live tail", chromedp.Navigate(w.url+"/console/live"), chromedp.WaitVisible(css(`#live-state[data-state="open"]`)))
	w.publish("evt-4", statement("u-17", "S-4"))
	do("see evt-4 arrive", chromedp.WaitVisible(css(`#live-rows tr.live-item[data-key*="|evt-4|"][data-status="skipped"]`)))
	shot("06-live")

	// Picking the latest event of a type fills the dry run form.
	do("pick the latest event", chromedp.Navigate(w.url+"/console/rules?pick=statement.issued"), chromedp.WaitVisible(css("#dryrun-event")))
	if ev := value("#dryrun-event"); !strings.Contains(ev, `"S-4"`) {
		t.Errorf("the picked event is %q, want the latest (S-4)", ev)
	}

	health := `section.template-health[data-template="` + tplID + `"]`
	do("open subscriptions", chromedp.Navigate(w.url+"/console/subscriptions"), chromedp.WaitVisible(css(health)))
	if n := text(health + ` td.not-subscribed`); n != "2" {
		t.Errorf("skipped for lack of a credit: %q, want 2 (evt-2, evt-4)", n)
	}
	shot("07-subscriptions")

	do("open the overview", chromedp.Navigate(w.url+"/console/"), chromedp.WaitVisible(css("#faults")))
	if n := count(`#faults tr.fault[data-errcode="41030"]`); n != 1 {
		t.Errorf("%d rows for the 41030 configuration error", n)
	}
	if n := count(`#dead tbody tr`); n != 1 {
		t.Errorf("%d dead letters shown, want 1", n)
	}
	shot("08-overview")

	// Logging out locks the console again.
	do("log out", chromedp.Click(css("#logout")), chromedp.WaitVisible(css("#token")))
	do("open a page after logout", chromedp.Navigate(w.url+"/console/subscriptions"), chromedp.WaitVisible(css("#token")))
	if loc := location(); !strings.Contains(loc, "/console/login") {
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
