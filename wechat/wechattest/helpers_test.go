package wechattest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

const (
	appID   = "wx1234567890abcdef"
	secret  = "s3cret"
	otherID = "wxfedcba0987654321"

	tplOnce  = "TPL_once"  // one-time: thing1, time2
	tplLong  = "TPL_long"  // long-term: phrase1
	tplOnce2 = "TPL_once2" // one-time, titled like tplOnce
	tplEnum  = "TPL_enum"  // one-time: enum_string1 with values

	alice = "o-alice"
	bob   = "o-bob"
)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is an emulator behind a real HTTP server, with one app, its
// templates and two users.
type fixture struct {
	t     *testing.T
	emu   *wechattest.Emulator
	srv   *httptest.Server
	clock *clock
}

func newFixture(t *testing.T, opts wechattest.Options) *fixture {
	t.Helper()
	// 10:00 in China: the force-refresh day does not roll over by accident.
	clk := &clock{t: time.Date(2026, 11, 21, 2, 0, 0, 0, time.UTC)}
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	emu := wechattest.New(opts)
	emu.AddApp(appID, secret)
	emu.AddApp(otherID, "other-secret")
	emu.AddTemplate(appID, wechattest.Template{ID: tplOnce, Title: "发货通知", Kind: wechattest.OneTime,
		Keywords: map[string]string{"thing1": "thing", "time2": "time"}, Labels: map[string]string{"thing1": "商品", "time2": "时间"}})
	emu.AddTemplate(appID, wechattest.Template{ID: tplLong, Title: "状态提醒", Kind: wechattest.LongTerm,
		Keywords: map[string]string{"phrase1": "phrase"}})
	emu.AddTemplate(appID, wechattest.Template{ID: tplOnce2, Title: "发货通知", Kind: wechattest.OneTime,
		Keywords: map[string]string{"thing1": "thing"}})
	emu.AddTemplate(appID, wechattest.Template{ID: tplEnum, Title: "故障提醒", Kind: wechattest.OneTime,
		Keywords: map[string]string{"enum_string1": "enum"}, Enums: map[string][]string{"enum_string1": {"缺水", "漏水"}}})
	emu.AddUser(appID, alice)
	emu.AddUser(appID, bob)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		_ = emu.Close()
	})
	return &fixture{t: t, emu: emu, srv: srv, clock: clk}
}

// answer is a decoded WeChat answer.
type answer struct {
	status  int
	body    []byte
	fields  map[string]json.RawMessage
	errcode int
	errmsg  string
}

func (a answer) str(key string) string {
	var s string
	_ = json.Unmarshal(a.fields[key], &s)
	return s
}

func (a answer) num(key string) json.Number {
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(a.fields[key]))
	d.UseNumber()
	_ = d.Decode(&n)
	return n
}

var ridSuffix = regexp.MustCompile(` rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$`)

// do calls the emulator and decodes its answer; it fails the test on a
// transport error.
func (f *fixture) do(method, path string, q url.Values, body any) answer {
	f.t.Helper()
	a, err := f.try(context.Background(), method, path, q, body)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	return a
}

func (f *fixture) try(ctx context.Context, method, path string, q url.Values, body any) (answer, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	u := f.srv.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, body: data, fields: map[string]json.RawMessage{}}
	if json.Unmarshal(data, &a.fields) == nil {
		_ = json.Unmarshal(a.fields["errcode"], &a.errcode)
		a.errmsg = a.str("errmsg")
	}
	return a, nil
}

// wantErr checks a WeChat error answer: HTTP 200, the errcode, and an
// errmsg that starts with msg and ends with a request id.
func wantErr(t *testing.T, a answer, code int, msg string) {
	t.Helper()
	if a.status != http.StatusOK || a.errcode != code {
		t.Fatalf("want HTTP 200 errcode %d, got HTTP %d: %s", code, a.status, a.body)
	}
	if !strings.HasPrefix(a.errmsg, msg) || !ridSuffix.MatchString(a.errmsg) {
		t.Fatalf("errmsg %q: want %q followed by a rid", a.errmsg, msg)
	}
}

func (f *fixture) stable(force bool) answer {
	f.t.Helper()
	return f.do(http.MethodPost, wechattest.PathStableToken, nil,
		map[string]any{"grant_type": "client_credential", "appid": appID, "secret": secret, "force_refresh": force})
}

func (f *fixture) legacy() answer {
	f.t.Helper()
	return f.do(http.MethodGet, wechattest.PathToken, url.Values{"grant_type": {"client_credential"}, "appid": {appID}, "secret": {secret}}, nil)
}

// token returns a working stable token.
func (f *fixture) token() string {
	f.t.Helper()
	a := f.stable(false)
	tok := a.str("access_token")
	if tok == "" {
		f.t.Fatalf("no token: %s", a.body)
	}
	return tok
}

func (f *fixture) send(tok string, msg map[string]any) answer {
	f.t.Helper()
	return f.do(http.MethodPost, wechattest.PathSend, url.Values{"access_token": {tok}}, msg)
}

// msg is a send body with data {key: {"value": v}}.
func msg(to, tpl string, data map[string]string) map[string]any {
	d := map[string]any{}
	for k, v := range data {
		d[k] = map[string]string{"value": v}
	}
	return map[string]any{"touser": to, "template_id": tpl, "data": d}
}

var goodOnce = map[string]string{"thing1": "Acme 订单", "time2": "2026-11-01 09:00"}

// templatesOK checks a token by listing templates with it.
func (f *fixture) templatesCode(tok string) int {
	f.t.Helper()
	return f.do(http.MethodGet, wechattest.PathTemplates, url.Values{"access_token": {tok}}, nil).errcode
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}
