package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/console"
)

// session logs in to the world's console and returns a client that keeps
// the cookie and does not follow redirects.
func (w *world) session() (*http.Client, *http.Cookie) {
	w.t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(w.url+"/console/login", url.Values{"token": {adminToken}})
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	ck := sessionCookie(resp)
	if ck == nil {
		w.t.Fatalf("login: %d", resp.StatusCode)
	}
	return c, ck
}

func (w *world) fetch(c *http.Client, ck *http.Cookie, method, path string, form url.Values) (int, string) {
	w.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, w.url+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", w.url)
	}
	req.AddCookie(ck)
	resp, err := c.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// No secret appears in any page or in the live stream: the apps'
// appsecret, push token and AES key, the admin token, and the access
// tokens the WeChat client fetched. Nothing even reaches the last-resort
// scrubber: the pages never hold one.
func TestNoSecretInPagesOrStream(t *testing.T) {
	w := newWorld(t)
	w.story()
	secrets := append([]string{adminToken, appSecret, pushToken, aesKey}, w.tokens.tokens()...)
	if len(secrets) < 5 {
		t.Fatal("the WeChat client fetched no access token: nothing to look for")
	}
	c, ck := w.session()
	if strings.Contains(ck.Value, adminToken) {
		t.Error("the session cookie carries the token")
	}
	// Start the live stream before the last event, so it carries items
	// read live as well as the recent ones.
	streamed := make(chan string, 1)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/console/live/events", nil)
	req.AddCookie(ck)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	go func() {
		defer resp.Body.Close()
		var all strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), `"event_id":"evt-4"`) {
				break
			}
		}
		streamed <- all.String()
	}()
	w.publish("evt-4", statement("u-17", "S-4"))

	pages := []struct{ method, path string }{
		{"GET", "/console/"}, {"GET", "/console/login"}, {"GET", "/console/person?q=u-17"}, {"GET", "/console/person?q=o-alice"},
		{"GET", "/console/person?q=un-alice"}, {"GET", "/console/person?q=u-18"}, {"GET", "/console/person?q=u-19"},
		{"GET", "/console/event?id=evt-1"}, {"GET", "/console/event?id=evt-2"}, {"GET", "/console/event?id=evt-3"},
		{"GET", "/console/event?id=nope"}, {"GET", "/console/rules"}, {"GET", "/console/rules?pick=statement.issued"},
		{"GET", "/console/live"}, {"GET", "/console/subscriptions"}, {"GET", "/console/static/console.js"},
		{"GET", "/console/static/console.css"}, {"GET", "/console/missing"},
	}
	seen := map[string]string{}
	for _, p := range pages {
		code, b := w.fetch(c, ck, p.method, p.path, nil)
		if code >= 500 {
			t.Errorf("%s: %d", p.path, code)
		}
		seen[p.path] = b
	}
	_, seen["dry run"] = w.fetch(c, ck, "POST", "/console/rules", url.Values{"type": {"statement.issued"},
		"event": {`{"applicant_id":"u-17","buyer_id":"42","buyer_name":"A","seller_name":"B","month":"2026-10","created_at":"2026-11-01 09:00","statement_id":"S"}`}})
	select {
	case s := <-streamed:
		seen["live stream"] = s
		if !strings.Contains(s, "event: result") || !strings.Contains(s, "event: ledger") {
			t.Errorf("the live stream carried no results or ledger changes:\n%s", s)
		}
	case <-ctx.Done():
		t.Fatal("the live stream never carried evt-4")
	}
	if !strings.Contains(seen["/console/rules"], appID) || !strings.Contains(seen["/console/person?q=u-17"], "o-alice") {
		t.Fatal("the pages do not show what they should: the test would prove nothing")
	}
	for where, b := range seen {
		for _, s := range secrets {
			if strings.Contains(b, s) {
				t.Errorf("%s shows a secret (%.6s…)", where, s)
			}
		}
		if strings.Contains(b, console.Redacted) {
			t.Errorf("%s held a secret that the scrubber had to remove", where)
		}
	}
}

// The live stream sends only what its filter selects, and no more clients
// than the bound may open one.
func TestLiveStreamFilterAndBound(t *testing.T) {
	w := newWorld(t)
	w.story()
	c, ck := w.session()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	open := func(query string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/console/live/events?"+query, nil)
		req.AddCookie(ck)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	filtered := open("status=skipped&person=u-17")
	defer filtered.Body.Close()
	var others []*http.Response
	for i := 0; i < 3; i++ { // MaxLiveClients is 4
		r := open("")
		defer r.Body.Close()
		others = append(others, r)
	}
	over := open("")
	b, _ := io.ReadAll(over.Body)
	over.Body.Close()
	if over.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a fifth live tail: %d %s", over.StatusCode, b)
	}
	w.publish("evt-5", statement("u-17", "S-5"))
	sc := bufio.NewScanner(filtered.Body)
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			data = append(data, d)
			if strings.Contains(d, `"event_id":"evt-5"`) {
				break
			}
		}
	}
	if len(data) == 0 {
		t.Fatal("the filtered tail got nothing")
	}
	for _, d := range data {
		if !strings.Contains(d, `"status":"skipped"`) || !strings.Contains(d, `"user_id":"u-17"`) {
			t.Errorf("the filtered tail got %s", d)
		}
	}
	if !strings.Contains(strings.Join(data, "\n"), `"event_id":"evt-2"`) {
		t.Error("the tail did not start with the recent items its filter selects (evt-2)")
	}
	// A tail closed makes room for another.
	others[0].Body.Close()
	waitFor(t, "a closed tail to leave", func() bool { n, _ := w.model.LiveClients(); return n < 4 })
	again := open("")
	again.Body.Close()
	if again.StatusCode != http.StatusOK {
		t.Errorf("a tail after one closed: %d", again.StatusCode)
	}
}

// A tail whose reader stops reading is dropped (the feed never waits for
// it) and its connection is let go.
func TestLiveStreamDropsSlowClient(t *testing.T) {
	w := newWorld(t)
	c, ck := w.session()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/console/live/events", nil)
	req.AddCookie(ck)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	waitFor(t, "the tail to join", func() bool { n, _ := w.model.LiveClients(); return n == 1 })
	waitFor(t, "the feeds to catch up", func() bool { s := w.model.Status(); return s.ResultsCaughtUp && s.LedgerCaughtUp })
	// Results arrive faster than a reader that reads nothing drains them:
	// they fill the socket's buffers, then the tail's queue (256).
	start := time.Now()
	for i := 0; ; i++ {
		if _, dropped := w.model.LiveClients(); dropped > 0 {
			break
		}
		if time.Since(start) > waitLimit {
			t.Fatal("a tail that reads nothing was never dropped")
		}
		r := result("r1", "sent", "", time.Now())
		r.EventID = fmt.Sprintf("flood-%d", i)
		data, _ := json.Marshal(r)
		if err := w.model.Apply("wxbridge.results.x", nil, data, time.Now(), true); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the dropped tail to leave", func() bool { n, _ := w.model.LiveClients(); return n == 0 })
}

// A tail outlives the route's deadlines, which are for ordinary pages.
func TestLiveStreamOutlivesRouteDeadline(t *testing.T) {
	limits := consoleLimits
	limits.Read, limits.Write = 300*time.Millisecond, 300*time.Millisecond
	w := newWorldWith(t, limits)
	w.bind("u-17", "o-alice", "")
	c, ck := w.session()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/console/live/events?person=u-17", nil)
	req.AddCookie(ck)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(time.Second) // past both deadlines of the route
	w.publish("evt-late", statement("u-17", "S-late"))
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"event_id":"evt-late"`) {
			return
		}
	}
	t.Fatalf("the tail ended before evt-late: %v", sc.Err())
}
