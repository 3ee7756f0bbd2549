package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/console"
	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
)

// memStore is a console.Store in memory, for handler tests.
type memStore struct {
	bindings  []storage.Binding
	followers []storage.Follower
	roles     []storage.RoleGrant
	subs      []storage.Subscription
	sends     map[string][]storage.SendRecord
	done      map[string]storage.EventRecord
}

func (s *memStore) Bindings(_ context.Context, userID string) ([]storage.Binding, error) {
	var out []storage.Binding
	for _, b := range s.bindings {
		if b.UserID == userID {
			out = append(out, b)
		}
	}
	return out, nil
}

func (s *memStore) Binding(_ context.Context, app, userID string) (storage.Binding, bool, error) {
	for _, b := range s.bindings {
		if b.App == app && b.UserID == userID {
			return b, true, nil
		}
	}
	return storage.Binding{}, false, nil
}

func (s *memStore) UserByOpenID(_ context.Context, app, openid string) (string, bool, error) {
	for _, b := range s.bindings {
		if b.App == app && b.OpenID == openid {
			return b.UserID, true, nil
		}
	}
	return "", false, nil
}

func (s *memStore) BindingsByUnionID(_ context.Context, unionid string) ([]storage.Binding, error) {
	var out []storage.Binding
	for _, b := range s.bindings {
		if b.UnionID == unionid {
			out = append(out, b)
		}
	}
	return out, nil
}

func (s *memStore) UserRoles(_ context.Context, userID string) ([]storage.RoleGrant, error) {
	var out []storage.RoleGrant
	for _, g := range s.roles {
		if g.UserID == userID {
			out = append(out, g)
		}
	}
	return out, nil
}

func (s *memStore) RoleMembers(_ context.Context, role, scope string) ([]storage.RoleGrant, error) {
	var out []storage.RoleGrant
	for _, g := range s.roles {
		if g.Role.Role == role && g.Scope == scope {
			out = append(out, g)
		}
	}
	return out, nil
}

func (s *memStore) Subscriptions(_ context.Context, app, openid string) ([]storage.Subscription, error) {
	var out []storage.Subscription
	for _, x := range s.subs {
		if x.App == app && x.OpenID == openid {
			out = append(out, x)
		}
	}
	return out, nil
}

func (s *memStore) EventSends(_ context.Context, id string) ([]storage.SendRecord, error) {
	return s.sends[id], nil
}

func (s *memStore) EventDone(_ context.Context, id string) (storage.EventRecord, bool, error) {
	r, ok := s.done[id]
	return r, ok, nil
}

func (s *memStore) Follower(_ context.Context, app, openid string) (storage.Follower, bool, error) {
	for _, f := range s.followers {
		if f.App == app && f.OpenID == openid {
			return f, true, nil
		}
	}
	return storage.Follower{}, false, nil
}

func (s *memStore) FollowerByUnionID(_ context.Context, app, unionid string) (storage.Follower, bool, error) {
	for _, f := range s.followers {
		if f.App == app && f.UnionID == unionid {
			return f, true, nil
		}
	}
	return storage.Follower{}, false, nil
}

const (
	adminToken = "console-admin-token-0123456789"
	appSecret  = "appsecret-0123456789abcdef0123"
	pushToken  = "pushtoken-9876543210"
	aesKey     = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

// testRules has one app with every secret set, and a rule whose card has
// a keyword that needs fitting.
const testRules = `
apps:
  main:
    appid: wx00000000000000c1
    secret: ${SECRET}
    push_token: ${PUSH_TOKEN}
    aes_key: ${AES_KEY}
    state: formal
    lang: zh_CN
templates:
  statement_issued:
    app: main
    id: TPL_statement_issued
    kind: one_time
    title: Statement issued
    keywords:
      thing1: {label: Buyer}
      thing2: {label: Seller}
      character_string3: {label: Period}
      time4: {label: Issued at}
rules:
  - name: statement-to-applicant
    description: the applicant hears that their statement is ready
    on: statement.issued
    template: statement_issued
    page: pages/statement/detail?id={{ .data.statement_id }}
    to:
      - user: "{{ .data.applicant_id }}"
      - role: reconciler
        scope: "buyer:{{ .data.buyer_id }}"
    data:
      thing1: "{{ .data.buyer_name }}"
      thing2: "{{ .data.seller_name }}"
      character_string3: "{{ .data.month }}"
      time4: "{{ .data.created_at }}"
`

func loadRules(t *testing.T) *rules.Set {
	t.Helper()
	return parseRules(t, testRules)
}

func parseRules(t *testing.T, src string) *rules.Set {
	t.Helper()
	env := map[string]string{"SECRET": appSecret, "PUSH_TOKEN": pushToken, "AES_KEY": aesKey}
	set, err := rules.Parse("rules.yaml", []byte(src), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// handlerFixture is a console over a memStore and an empty model, with a
// settable clock.
type handlerFixture struct {
	srv   *httptest.Server
	store *memStore
	model *console.Model
	clk   *clock
	mu    sync.Mutex
}

func newHandler(t *testing.T, token string, tlsServer bool) *handlerFixture {
	t.Helper()
	return newHandlerFor(t, token, tlsServer, loadRules(t))
}

// newHandlerFor is newHandler with the rules set in force.
func newHandlerFor(t *testing.T, token string, tlsServer bool, set *rules.Set) *handlerFixture {
	t.Helper()
	f := &handlerFixture{clk: &clock{t: t0}, store: &memStore{sends: map[string][]storage.SendRecord{}, done: map[string]storage.EventRecord{}}}
	now := func() time.Time {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.clk.t
	}
	f.model = console.NewModel(console.ModelConfig{Now: now, MaxLiveClients: 2})
	var rs console.Rules
	rs.Loaded(set, t0)
	c, err := console.New(console.Config{Token: token, Store: f.store, Rules: &rs, Model: f.model, Now: now, SessionTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if tlsServer {
		f.srv = httptest.NewTLSServer(c)
	} else {
		f.srv = httptest.NewServer(c)
	}
	t.Cleanup(f.srv.Close)
	return f
}

func (f *handlerFixture) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clk.t = f.clk.t.Add(d)
}

// client does not follow redirects: the tests look at them.
func (f *handlerFixture) client() *http.Client {
	c := f.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func (f *handlerFixture) login(t *testing.T, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/console/login", strings.NewReader(url.Values{"token": {token}, "next": {"/console/person?q=u-1"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", f.srv.URL)
	resp, err := f.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			return c
		}
	}
	return nil
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (f *handlerFixture) get(t *testing.T, path string, c *http.Cookie) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
	if c != nil {
		req.AddCookie(c)
	}
	resp, err := f.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestConsoleOffWithoutToken(t *testing.T) {
	f := newHandler(t, "", false)
	for _, p := range []string{"/console/", "/console/login", "/console/static/console.css", "/console/live/events"} {
		resp := f.get(t, p, nil)
		b := body(t, resp)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "WXBRIDGE_ADMIN_TOKEN") {
			t.Errorf("%s without a token configured: %d %q", p, resp.StatusCode, b)
		}
	}
	resp := f.login(t, "")
	if resp.StatusCode != http.StatusForbidden || sessionCookie(resp) != nil {
		t.Errorf("login with no token configured: %d, cookie %v", resp.StatusCode, sessionCookie(resp))
	}
}

func TestPagesWithoutSessionGoToLogin(t *testing.T) {
	f := newHandler(t, adminToken, false)
	for _, p := range []string{"/console/", "/console/person?q=u-1", "/console/event?id=e1", "/console/rules", "/console/live",
		"/console/live/events", "/console/subscriptions", "/console/nothing-here"} {
		resp := f.get(t, p, nil)
		body(t, resp)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login?next=") {
			t.Errorf("%s without a cookie: %d to %q", p, resp.StatusCode, loc)
			continue
		}
		if next, _ := url.Parse(loc); next.Query().Get("next") != p {
			t.Errorf("%s: login would bring back to %q", p, next.Query().Get("next"))
		}
	}
	resp := f.get(t, "/console/login", nil)
	if b := body(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(b, `name="token"`) {
		t.Errorf("login page: %d", resp.StatusCode)
	}
}

func TestLoginSetsSafeCookie(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tls    bool
		secure bool
	}{{"http", false, false}, {"https", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandler(t, adminToken, tc.tls)
			resp := f.login(t, adminToken)
			body(t, resp)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/person?q=u-1" {
				t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			c := sessionCookie(resp)
			if c == nil {
				t.Fatal("no session cookie")
			}
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/console" || c.Secure != tc.secure {
				t.Errorf("cookie flags: HttpOnly %v SameSite %v Path %q Secure %v", c.HttpOnly, c.SameSite, c.Path, c.Secure)
			}
			if c.MaxAge < 3500 || c.MaxAge > 3600 {
				t.Errorf("cookie max-age %d, want the session TTL (3600)", c.MaxAge)
			}
			if strings.Contains(c.Value, adminToken) || c.Value == "" {
				t.Errorf("cookie value %q carries the token", c.Value)
			}
			resp = f.get(t, "/console/person?q=u-1", c)
			if b := body(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(b, "u-1") {
				t.Errorf("page with the cookie: %d", resp.StatusCode)
			}
			// Two logins are two sessions.
			resp2 := f.login(t, adminToken)
			body(t, resp2)
			if c2 := sessionCookie(resp2); c2 == nil || c2.Value == c.Value {
				t.Errorf("a second login got the same session")
			}
		})
	}
}

func TestWrongTokenRefusedWithoutHint(t *testing.T) {
	f := newHandler(t, adminToken, false)
	for _, guess := range []string{"", "wrong", adminToken[:len(adminToken)-1], adminToken + "x", strings.ToUpper(adminToken)} {
		resp := f.login(t, guess)
		b := body(t, resp)
		if resp.StatusCode != http.StatusUnauthorized || sessionCookie(resp) != nil {
			t.Errorf("guess %q: %d, cookie %v", guess, resp.StatusCode, sessionCookie(resp))
		}
		if !strings.Contains(b, "Wrong token.") {
			t.Errorf("guess %q: no clear message", guess)
		}
		for _, hint := range []string{"length", "characters", "close", "prefix"} {
			if strings.Contains(strings.ToLower(b), hint) {
				t.Errorf("guess %q: the refusal hints (%q)", guess, hint)
			}
		}
	}
}

// Wrong tokens cannot be tried at network speed: past the allowance every
// attempt is refused, the right token too (else the answer would tell).
func TestLoginAttemptsLimited(t *testing.T) {
	f := newHandler(t, adminToken, false)
	limited := false
	for i := 0; i < 40 && !limited; i++ {
		resp := f.login(t, "guess")
		body(t, resp)
		limited = resp.StatusCode == http.StatusTooManyRequests
	}
	if !limited {
		t.Fatal("40 wrong tokens in a row were all compared")
	}
	resp := f.login(t, adminToken)
	body(t, resp)
	if resp.StatusCode != http.StatusTooManyRequests || sessionCookie(resp) != nil {
		t.Errorf("the right token while limited: %d", resp.StatusCode)
	}
}

func TestSessionExpiresAndForgeriesRefused(t *testing.T) {
	f := newHandler(t, adminToken, false)
	resp := f.login(t, adminToken)
	body(t, resp)
	good := sessionCookie(resp)
	id, rest, _ := strings.Cut(good.Value, ".")
	exp, sig, _ := strings.Cut(rest, ".")
	other := newHandler(t, "another-token-abcdefghijkl", false)
	r2 := other.login(t, "another-token-abcdefghijkl")
	body(t, r2)
	forged := []struct {
		name, value string
	}{
		{"the token itself", adminToken},
		{"empty", ""},
		{"later expiry, same signature", id + "." + "99999999999" + "." + sig},
		{"other session id, same signature", "AAAA" + id[4:] + "." + exp + "." + sig},
		{"no signature", id + "." + exp + "."},
		{"signed with another token's key", sessionCookie(r2).Value},
		{"garbage", "a.b.c.d"},
	}
	for _, fc := range forged {
		resp := f.get(t, "/console/", &http.Cookie{Name: console.CookieName, Value: fc.value})
		body(t, resp)
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("forged cookie (%s): %d", fc.name, resp.StatusCode)
		}
	}
	resp = f.get(t, "/console/", good)
	body(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the genuine cookie: %d", resp.StatusCode)
	}
	f.advance(61 * time.Minute)
	resp = f.get(t, "/console/", good)
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a cookie past its TTL: %d", resp.StatusCode)
	}
}

func TestLogoutEndsSession(t *testing.T) {
	f := newHandler(t, adminToken, false)
	resp := f.login(t, adminToken)
	body(t, resp)
	c := sessionCookie(resp)
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/console/logout", nil)
	req.Header.Set("Origin", f.srv.URL)
	req.AddCookie(c)
	resp, err := f.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther || sessionCookie(resp) == nil || sessionCookie(resp).MaxAge >= 0 {
		t.Errorf("logout: %d, cookie %+v", resp.StatusCode, sessionCookie(resp))
	}
	// The old value no longer works, even if a copy was kept.
	resp = f.get(t, "/console/", c)
	body(t, resp)
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after logout: %d", resp.StatusCode)
	}
}

// POSTs from another origin are refused, even with a valid session (a
// browser would not send a SameSite=Strict cookie with them; this is the
// second lock).
func TestCrossOriginPostsRefused(t *testing.T) {
	f := newHandler(t, adminToken, false)
	resp := f.login(t, adminToken)
	body(t, resp)
	c := sessionCookie(resp)
	post := func(path string, hdr map[string]string, form url.Values) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		req.AddCookie(c)
		resp, err := f.client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	event := url.Values{"type": {"statement.issued"}, "event": {`{"applicant_id":"u-1"}`}}
	for _, tc := range []struct {
		name string
		path string
		hdr  map[string]string
		form url.Values
		want int
	}{
		{"dry run from another site", "/console/rules", map[string]string{"Origin": "https://evil.example"}, event, http.StatusForbidden},
		{"dry run, fetch metadata cross-site", "/console/rules", map[string]string{"Sec-Fetch-Site": "cross-site"}, event, http.StatusForbidden},
		{"logout from another site", "/console/logout", map[string]string{"Origin": "https://evil.example"}, nil, http.StatusForbidden},
		{"login from another site", "/console/login", map[string]string{"Origin": "https://evil.example"}, url.Values{"token": {adminToken}}, http.StatusForbidden},
		{"dry run from the console", "/console/rules", map[string]string{"Origin": f.srv.URL, "Sec-Fetch-Site": "same-origin"}, event, http.StatusOK},
	} {
		resp := post(tc.path, tc.hdr, tc.form)
		body(t, resp)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
		if tc.want == http.StatusForbidden && sessionCookie(resp) != nil {
			t.Errorf("%s: set a cookie", tc.name)
		}
	}
}

// After login the browser goes back where it was asked to, but never off
// the console.
func TestLoginRedirectStaysInConsole(t *testing.T) {
	f := newHandler(t, adminToken, false)
	for next, want := range map[string]string{
		"/console/event?id=e1":      "/console/event?id=e1",
		"//evil.example/console/":   "/console/",
		"https://evil.example/":     "/console/",
		"/elsewhere":                "/console/",
		"/console/\\evil.example":   "/console/",
		"javascript:alert(1)":       "/console/",
		"/console/live?status=sent": "/console/live?status=sent",
	} {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/console/login", strings.NewReader(url.Values{"token": {adminToken}, "next": {next}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := f.client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body(t, resp)
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("next %q: redirected to %q, want %q", next, got, want)
		}
	}
}

// Every page of a logged-in operator draws, with the security headers.
func TestPagesRender(t *testing.T) {
	f := newHandler(t, adminToken, false)
	f.store.bindings = []storage.Binding{{App: "main", UserID: "u-1", OpenID: "o-1", UnionID: "un-1", BoundAt: t0}}
	f.store.subs = []storage.Subscription{{App: "main", OpenID: "o-1", TemplateID: "TPL_statement_issued", Status: "accept", Kind: "one_time", Credits: 2, Source: "client", UpdatedAt: t0}}
	f.store.sends["e1"] = []storage.SendRecord{{Key: "k", EventID: "e1", EventType: "statement.issued", Rule: "statement-to-applicant", App: "main",
		TemplateID: "TPL_statement_issued", UserID: "u-1", OpenID: "o-1", State: "sent", MsgID: "m-1", Attempts: 1, Delivery: "delivered", UpdatedAt: t0}}
	f.store.done["e1"] = storage.EventRecord{ID: "e1", Type: "statement.issued", DoneAt: t0}
	resp := f.login(t, adminToken)
	body(t, resp)
	c := sessionCookie(resp)
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/console/", []string{"Outcomes by rule", "<svg"}},
		{"/console/person?q=u-1", []string{"o-1", "un-1", "statement_issued"}},
		{"/console/person?q=o-1", []string{"User <code>u-1</code>"}},
		{"/console/person?q=un-1", []string{"User <code>u-1</code>"}},
		{"/console/event?id=e1", []string{"statement-to-applicant", "m-1", "delivered"}},
		{"/console/rules", []string{"statement-to-applicant", "wx00000000000000c1", "Dry run"}},
		{"/console/live", []string{"live-rows"}},
		{"/console/subscriptions", []string{"statement_issued"}},
	} {
		resp := f.get(t, tc.path, c)
		b := body(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d %s", tc.path, resp.StatusCode, b)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(b, w) {
				t.Errorf("%s: no %q", tc.path, w)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", tc.path, csp)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: cacheable", tc.path)
		}
	}
	resp = f.get(t, "/console/event?id=nope", c)
	if b := body(t, resp); resp.StatusCode != http.StatusNotFound || !strings.Contains(b, "No record of event") {
		t.Errorf("unknown event: %d", resp.StatusCode)
	}
}

// loggedIn is a handler fixture and a session cookie on it.
func loggedIn(t *testing.T) (*handlerFixture, *http.Cookie) {
	t.Helper()
	f := newHandler(t, adminToken, false)
	resp := f.login(t, adminToken)
	body(t, resp)
	return f, sessionCookie(resp)
}

func (f *handlerFixture) dryRun(t *testing.T, c *http.Cookie, typ, event string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/console/rules", strings.NewReader(url.Values{"type": {typ}, "event": {event}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", f.srv.URL)
	req.AddCookie(c)
	resp, err := f.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body(t, resp)
}

// The dry run says who would get what, and why not, for each recipient:
// the same steps as the bridge, with reads only.
func TestDryRun(t *testing.T) {
	f, c := loggedIn(t)
	f.store.bindings = []storage.Binding{{App: "main", UserID: "u-1", OpenID: "o-1"}, {App: "main", UserID: "u-2", OpenID: "o-2"}}
	f.store.subs = []storage.Subscription{
		{App: "main", OpenID: "o-1", TemplateID: "TPL_statement_issued", Status: "accept", Kind: "one_time", Credits: 2},
		{App: "main", OpenID: "o-2", TemplateID: "TPL_statement_issued", Status: "reject", Kind: "one_time"},
	}
	f.store.roles = []storage.RoleGrant{
		{Role: storage.Role{Role: "reconciler", Scope: "buyer:42"}, UserID: "u-2"},
		{Role: storage.Role{Role: "reconciler", Scope: "buyer:42"}, UserID: "u-3"},
	}
	full := `{"statement_id":"S-1","applicant_id":"u-1","buyer_id":"42","buyer_name":"Acme","seller_name":"Supplier","month":"2026-10","created_at":"2026-11-01 09:00"}`
	for _, tc := range []struct {
		name, typ, event string
		code             int
		want             []string
	}{
		{"each recipient's verdict", "statement.issued", full, http.StatusOK, []string{
			`data-verdict="send" data-user="u-1"`, "spends 1 of 2 credits",
			`data-verdict="skip" data-user="u-2"`, "rejected",
			`data-verdict="skip" data-user="u-3"`, "not_bound",
			`data-key="thing1"><span class="label">Buyer</span><span class="value">Acme</span>`,
			"pages/statement/detail?id=S-1",
		}},
		{"a CloudEvent", "", `{"specversion":"1.0","id":"ce-7","source":"/billing","type":"statement.issued","data":` + full + `}`,
			http.StatusOK, []string{"<code>ce-7</code>", "<code>/billing</code>", `data-verdict="send" data-user="u-1"`}},
		{"a keyword the event cannot fill", "statement.issued", `{"statement_id":"S-1","applicant_id":"u-1","buyer_id":"42","seller_name":"S","month":"2026-10","created_at":"2026-11-01 09:00"}`,
			http.StatusOK, []string{"Would fail for every recipient: invalid_data", `data-verdict="fail" data-user="u-1"`, "(error)"}},
		{"no rule matches", "order.created", `{}`, http.StatusOK, []string{"No rule matches order.created"}},
		{"not JSON", "statement.issued", `{nope`, http.StatusUnprocessableEntity, []string{"the event is not JSON"}},
		{"a payload without a type", "", `{"a":1}`, http.StatusUnprocessableEntity, []string{"say its type"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := f.dryRun(t, c, tc.typ, tc.event)
			if code != tc.code {
				t.Errorf("status %d, want %d", code, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(b, w) {
					t.Errorf("no %q in the page", w)
				}
			}
		})
	}
}

// A refused reload is shown with its problems, beside the rules that keep
// running.
func TestRulesPageShowsRefusedReload(t *testing.T) {
	f := newHandler(t, adminToken, false)
	var rs console.Rules
	rs.Loaded(loadRules(t), t0)
	_, err := rules.Parse("rules.yaml", []byte("apps:\n  main:\n    appid: nope\n"), func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("a bad rules file parsed")
	}
	rs.Refused("rules.yaml", err, t0.Add(time.Minute))
	c, err := console.New(console.Config{Token: adminToken, Store: f.store, Rules: &rs, Model: f.model, Now: f.clk.now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	f.srv = srv
	resp := f.login(t, adminToken)
	body(t, resp)
	resp = f.get(t, "/console/rules", sessionCookie(resp))
	b := body(t, resp)
	if !strings.Contains(b, `id="refused"`) || !strings.Contains(b, "apps.main.appid") || !strings.Contains(b, "statement-to-applicant") {
		t.Errorf("the rules page does not show the refused reload next to the rules in force:\n%s", b)
	}
}

// A unionid several people carry lists them; one person's goes to them.
func TestPersonByUnionID(t *testing.T) {
	f, c := loggedIn(t)
	f.store.bindings = []storage.Binding{
		{App: "main", UserID: "u-1", OpenID: "o-1", UnionID: "un-shared"},
		{App: "main", UserID: "u-2", OpenID: "o-2", UnionID: "un-shared"},
		{App: "main", UserID: "u-3", OpenID: "o-3", UnionID: "un-3"},
	}
	resp := f.get(t, "/console/person?q=un-shared", c)
	b := body(t, resp)
	if !strings.Contains(b, `id="candidates"`) || !strings.Contains(b, "q=u-1") || !strings.Contains(b, "q=u-2") {
		t.Errorf("a shared unionid does not list its people:\n%s", b)
	}
	resp = f.get(t, "/console/person?q=un-3", c)
	if b := body(t, resp); !strings.Contains(b, "User <code>u-3</code>") {
		t.Errorf("unionid un-3 does not find u-3")
	}
}
