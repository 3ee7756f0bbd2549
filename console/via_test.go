package console_test

import (
	"encoding/json"
	"html"
	"net/http"
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/storage"
)

// viaRules has a Mini Program and a service account: one rule tries the
// Mini Program's subscribe message, then the account's template message;
// another sends the account's subscription notification only.
const viaRules = `
apps:
  main:
    appid: wx00000000000000c1
    secret: ${SECRET}
  service:
    kind: official_account
    appid: wx00000000000000d2
    secret: ${SECRET}
templates:
  statement_issued:
    app: main
    id: TPL_statement_issued
    title: Statement issued
    keywords:
      thing1: {label: Buyer}
      thing2: {label: Seller}
      character_string3: {label: Period}
      time4: {label: Issued at}
  statement_issued_oa:
    app: service
    kind: template_message
    id: TPL_oa_statement
    title: Statement (account)
    opens: main
    keywords:
      thing2: {label: Seller}
      character_string3: {label: Period}
      time5: {label: Issued at}
  statement_notice:
    app: service
    id: TPL_oa_notice
    kind: one_time
    keywords:
      thing1: {label: Buyer}
rules:
  - name: statement-via
    on: statement.issued
    via: [statement_issued, statement_issued_oa]
    page: pages/statement/detail?id={{ .data.statement_id }}
    url: https://example.com/s/{{ .data.statement_id }}
    to:
      - users: "{{ .data.users }}"
      - openid: "{{ .data.openid }}"
    data:
      thing1: "{{ .data.buyer_name }}"
      thing2: "{{ .data.seller_name }}"
      character_string3: "{{ .data.month }}"
      time4: "{{ .data.created_at }}"
      time5: "{{ .data.oa_time }}"
  - name: statement-notice
    on: statement.issued
    template: statement_notice
    url: https://example.com/s/{{ .data.statement_id }}
    to:
      - users: "{{ .data.users }}"
    data:
      thing1: "{{ .data.buyer_name }}"
`

const (
	tplMP     = "TPL_statement_issued"
	tplNotice = "TPL_oa_notice"
)

// viaPeople are bound, followed and credited so that each meets another
// road of bridge/channels.go reach.
func viaPeople(s *memStore) {
	s.bindings = []storage.Binding{
		{App: "main", UserID: "u-mp", OpenID: "o-mp", UnionID: "un-mp"},                // a credit in main
		{App: "main", UserID: "u-follow", OpenID: "o-follow", UnionID: "un-follow"},    // no credit; follows service
		{App: "main", UserID: "u-gone", OpenID: "o-gone", UnionID: "un-gone"},          // no credit; unfollowed service
		{App: "main", UserID: "u-nouid", OpenID: "o-nouid"},                            // no credit; no unionid
		{App: "main", UserID: "u-unknown", OpenID: "o-unknown", UnionID: "un-unknown"}, // no credit; not seen by service
		{App: "service", UserID: "u-oa", OpenID: "oa-direct"},                          // bound in the account itself
		{App: "service", UserID: "u-oagone", OpenID: "oa-left"},                        // bound there; unfollowed
	}
	s.followers = []storage.Follower{
		{App: "service", OpenID: "oa-follow", UnionID: "un-follow", Following: true, Source: storage.SourceFollowPush, UpdatedAt: t0},
		{App: "service", OpenID: "oa-gone", UnionID: "un-gone", Following: false, Source: storage.SourceFollowPush, UpdatedAt: t0},
		{App: "service", OpenID: "oa-direct", Following: true, Source: storage.SourceFollowPush, UpdatedAt: t0},
		{App: "service", OpenID: "oa-left", Following: false, Source: storage.SourceFollowPush, UpdatedAt: t0},
	}
	accept := func(app, openid, tpl string, credits int) storage.Subscription {
		return storage.Subscription{App: app, OpenID: openid, TemplateID: tpl, Status: storage.StatusAccept, Kind: storage.KindOneTime,
			Credits: credits, Source: storage.SourceClient, UpdatedAt: t0}
	}
	s.subs = []storage.Subscription{
		accept("main", "o-mp", tplMP, 1),
		accept("main", "o-follow", tplMP, 0), // spent
		accept("service", "oa-follow", tplNotice, 2),
		accept("service", "oa-gone", tplNotice, 1), // a subscription notification needs a credit, not a follow
	}
}

func viaEvent(t *testing.T, drop ...string) string {
	t.Helper()
	ev := map[string]any{"statement_id": "S-1", "buyer_name": "Acme", "seller_name": "Supplier", "month": "2026-10",
		"created_at": "2026-11-01 09:00", "oa_time": "2026-11-01 09:00", "openid": "o-lone",
		"users": []string{"u-mp", "u-follow", "u-gone", "u-nouid", "u-unknown", "u-oa", "u-oagone", "u-none"}}
	for _, k := range drop {
		delete(ev, k)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section is the part of page from the first open that is followed by
// marker, to the next close; "" if there is none.
func section(page, open, marker, close string) string {
	for i := 0; ; {
		j := strings.Index(page[i:], open)
		if j < 0 {
			return ""
		}
		start := i + j
		end := strings.Index(page[start:], close)
		if end < 0 {
			return ""
		}
		s := page[start : start+end+len(close)]
		if strings.Contains(s, marker) {
			return s
		}
		i = start + len(open)
	}
}

func ruleArticle(page, rule string) string {
	return section(page, `<article class="rulerun"`, `data-rule="`+rule+`"`, "</article>")
}

// recipientRow is the dry run's row that holds marker (data-user="u-1"),
// unescaped.
func recipientRow(article, marker string) string {
	return html.UnescapeString(section(article, `<tr class="recipient"`, marker, "</tr>"))
}

// A rule with via: each recipient goes by the first channel that reaches
// them, as the bridge would try them; one none reaches is skipped with the
// first channel's reason, and every channel's in the detail.
func TestDryRunVia(t *testing.T) {
	f := newHandlerFor(t, adminToken, false, parseRules(t, viaRules))
	resp := f.login(t, adminToken)
	body(t, resp)
	c := sessionCookie(resp)
	viaPeople(f.store)

	code, page := f.dryRun(t, c, "statement.issued", viaEvent(t))
	if code != http.StatusOK {
		t.Fatalf("dry run: %d\n%s", code, page)
	}
	via := ruleArticle(page, "statement-via")
	if via == "" {
		t.Fatalf("no dry run of statement-via:\n%s", page)
	}
	for _, tc := range []struct {
		name, row string
		want      []string
		not       []string
	}{
		{"a credit in the Mini Program", `data-user="u-mp"`, []string{
			`data-verdict="send"`, `data-template="statement_issued" data-channel="subscribe_message" data-app="main"`,
			"<code>o-mp</code>", "spends 1 of 1 credits"}, nil},
		{"no credit, follows the account: its template message", `data-user="u-follow"`, []string{
			`data-verdict="send"`, `data-template="statement_issued_oa" data-channel="template_message" data-app="service"`,
			"<code>oa-follow</code>", "unionid un-follow (bound in main): oa-follow follows service",
			`data-template="statement_issued" data-verdict="skip" data-reason="not_subscribed"`}, nil},
		{"no credit, unfollowed: skipped with both reasons", `data-user="u-gone"`, []string{
			`data-verdict="skip"`, `data-reason="not_subscribed">`,
			`<span class="detail">statement_issued: not_subscribed; statement_issued_oa: not_following</span>`,
			`data-template="statement_issued_oa" data-verdict="skip" data-reason="not_following"`, "oa-gone unfollowed service"},
			[]string{`data-channel=`}},
		{"no unionid", `data-user="u-nouid"`, []string{
			`data-verdict="skip"`, `data-reason="not_subscribed">`,
			"statement_issued: not_subscribed; statement_issued_oa: no_unionid",
			`data-template="statement_issued_oa" data-verdict="skip" data-reason="no_unionid"`}, nil},
		{"a unionid the account has not seen", `data-user="u-unknown"`, []string{
			`data-verdict="skip"`, `data-reason="not_subscribed">`,
			"statement_issued: not_subscribed; statement_issued_oa: not_following",
			"unionid un-unknown (bound in main) is not known as a follower; the bridge would list the account's followers first"}, nil},
		{"bound in the account itself", `data-user="u-oa"`, []string{
			`data-verdict="send"`, `data-template="statement_issued_oa" data-channel="template_message" data-app="service"`,
			"<code>oa-direct</code>", "bound in service, follows it",
			`data-template="statement_issued" data-verdict="skip" data-reason="not_bound"`}, nil},
		{"bound in the account, unfollowed", `data-user="u-oagone"`, []string{
			`data-verdict="skip"`, `data-reason="not_bound">`, "statement_issued: not_bound; statement_issued_oa: not_following"}, nil},
		{"bound nowhere", `data-user="u-none"`, []string{
			`data-verdict="skip"`, `data-reason="not_bound">`, "statement_issued: not_bound; statement_issued_oa: not_bound"}, nil},
		{"named by openid: the first channel only", "<code>o-lone</code>", []string{
			`data-verdict="skip"`, `data-reason="not_subscribed">`, "no accept of statement_issued in the ledger"},
			[]string{"statement_issued_oa"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			row := recipientRow(via, tc.row)
			if row == "" {
				t.Fatalf("no recipient row with %s", tc.row)
			}
			for _, w := range tc.want {
				if !strings.Contains(row, w) {
					t.Errorf("no %q in the row:\n%s", w, row)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(row, n) {
					t.Errorf("%q in the row:\n%s", n, row)
				}
			}
		})
	}

	// One card per channel, numbered; the account's names who gets it.
	oaCard := section(via, `<div class="wxcard`, `data-template="statement_issued_oa"`, `<p class="card-gets`)
	for _, w := range []string{`class="wxcard chosen" id="card-statement-via-2" data-index="2"`, "2. statement_issued_oa",
		"template_message of service", `<span class="label">Seller</span><span class="value">Supplier</span>`,
		`进入小程序查看 › main <code class="page">pages/statement/detail?id=S-1</code>`,
		`详情 › <code class="url">https://example.com/s/S-1</code>`} {
		if !strings.Contains(oaCard, w) {
			t.Errorf("the account's card has no %q:\n%s", w, oaCard)
		}
	}
	if !strings.Contains(via, "Would go to <code>u-follow</code>, <code>u-oa</code>.") {
		t.Errorf("the account's card does not say who gets it")
	}
	if !strings.Contains(via, `id="card-statement-via-1"`) || !strings.Contains(via, "1. statement_issued") {
		t.Errorf("no first card")
	}

	// A subscription notification: the person found by unionid, a credit
	// in the account's ledger decides, following or not.
	notice := ruleArticle(page, "statement-notice")
	for user, want := range map[string][]string{
		"u-follow": {`data-verdict="send"`, `data-channel="subscription_notification" data-app="service"`, "<code>oa-follow</code>", "spends 1 of 2 credits"},
		"u-gone":   {`data-verdict="send"`, "<code>oa-gone</code>", "not following it; spends 1 of 1 credits"},
		"u-mp":     {`data-verdict="skip"`, `data-reason="not_following">`, "not known as a follower"},
		"u-nouid":  {`data-verdict="skip"`, `data-reason="no_unionid">`},
		"u-oa":     {`data-verdict="skip"`, `data-reason="not_subscribed">`, "<code>oa-direct</code>", "no accept of statement_notice"},
	} {
		row := recipientRow(notice, `data-user="`+user+`"`)
		for _, w := range want {
			if !strings.Contains(row, w) {
				t.Errorf("statement-notice, %s: no %q in the row:\n%s", user, w, row)
			}
		}
	}
}

// A channel the event cannot be rendered for fails only the recipients it
// reaches: the bridge reaches first, then renders.
func TestDryRunViaChannelProblem(t *testing.T) {
	f := newHandlerFor(t, adminToken, false, parseRules(t, viaRules))
	resp := f.login(t, adminToken)
	body(t, resp)
	c := sessionCookie(resp)
	viaPeople(f.store)

	code, page := f.dryRun(t, c, "statement.issued", viaEvent(t, "oa_time"))
	if code != http.StatusOK {
		t.Fatalf("dry run: %d\n%s", code, page)
	}
	via := ruleArticle(page, "statement-via")
	if strings.Contains(via, "Would fail for every recipient") {
		t.Errorf("a problem of the second channel is said to fail every recipient")
	}
	if !strings.Contains(via, `<p class="card-problem bad">Fails for every recipient this channel reaches: invalid_data`) {
		t.Errorf("the account's card does not say it cannot be rendered")
	}
	for user, want := range map[string]string{
		"u-mp":     `data-verdict="send"`,                                                                                     // the first channel renders
		"u-follow": `data-verdict="fail" data-user="u-follow" data-reason="invalid_data" data-template="statement_issued_oa"`, // reached, not renderable
		"u-gone":   `data-verdict="skip" data-user="u-gone" data-reason="not_subscribed">`,                                    // not reached: never rendered
	} {
		if row := recipientRow(via, `data-user="`+user+`"`); !strings.Contains(row, want) {
			t.Errorf("%s: no %q in the row:\n%s", user, want, row)
		}
	}
}

// The person page shows how a person is known in each official account,
// and which template and channel each result went by; the event page the
// channel of each outcome.
func TestPersonAndEventChannels(t *testing.T) {
	f := newHandlerFor(t, adminToken, false, parseRules(t, viaRules))
	resp := f.login(t, adminToken)
	body(t, resp)
	c := sessionCookie(resp)
	viaPeople(f.store)

	res := bridge.Result{EventID: "e-oa", EventType: "statement.issued", Rule: "statement-via", App: "service", TemplateID: "TPL_oa_statement",
		Template: "statement_issued_oa", Channel: "template_message", UserID: "u-follow", OpenID: "oa-follow", Status: "sent", At: t0}
	data, _ := json.Marshal(res)
	if err := f.model.Apply("wxbridge.results.statement.issued", nil, data, t0, false); err != nil {
		t.Fatal(err)
	}
	f.store.sends["e-oa"] = []storage.SendRecord{{Key: "k", EventID: "e-oa", EventType: "statement.issued", Rule: "statement-via",
		App: "service", TemplateID: "TPL_oa_statement", UserID: "u-follow", OpenID: "oa-follow", State: "sent", Attempts: 1, UpdatedAt: t0}}

	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/console/person?q=u-follow", []string{
			`<tr class="account" data-app="service" data-by="unionid" data-state="following">`, `<code class="openid">oa-follow</code>`,
			`data-app="service" data-channel="template_message"`, `statement_issued_oa <small>(template_message of service)</small>`,
			// the account's ledger of the openid found by unionid
			`<tr data-template="TPL_oa_notice">`}},
		{"/console/person?q=u-gone", []string{`data-by="unionid" data-state="unfollowed"`}},
		{"/console/person?q=u-nouid", []string{`data-app="service" data-by="" data-state="no_unionid"`}},
		{"/console/person?q=u-unknown", []string{`data-by="unionid" data-state="unknown"`, "not known as a follower"}},
		{"/console/person?q=u-oa", []string{`data-app="service" data-by="binding" data-state="following"`, "oa-direct"}},
		{"/console/person?q=oa-follow", []string{"User <code>u-follow</code>"}}, // an account's openid, by its unionid
		{"/console/event?id=e-oa", []string{`data-app="service" data-channel="template_message"`, `statement_issued_oa <small>(template_message of service)</small>`}},
	} {
		resp := f.get(t, tc.path, c)
		b := body(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", tc.path, resp.StatusCode)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(b, w) {
				t.Errorf("%s: no %q", tc.path, w)
			}
		}
	}
}
