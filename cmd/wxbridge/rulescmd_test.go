package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// runRules runs `wxbridge rules ARGS...` and returns its exit code and
// output.
func runRules(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"rules"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRulesCheck(t *testing.T) {
	code, out, errOut := runRules(t, "check", "../../rules.yaml")
	if code != 0 || !strings.Contains(out, "../../rules.yaml: ok (2 apps, 7 templates, 8 rules)") {
		t.Fatalf("check sample: exit %d\n%s%s", code, out, errOut)
	}

	bad := writeFile(t, "bad.yaml", `apps:
  main: {appid: wx0123456789abcdef, secret: s}
templates:
  t: {app: main, id: T, keywords: {thing1: thing, phrase2: phrase}}
rules:
  - name: r
    on: order.created
    template: t
    to: [user: u]
    data:
      thing1: "{{ upcase .data.x }}"
      phrase2: Shipped
`)
	code, out, errOut = runRules(t, "check", bad)
	want := []string{
		bad + ":11:19: rules[0].data.thing1: unknown function \"upcase\"",
		bad + ":12:16: rules[0].data.phrase2: \"Shipped\" has 'S': phrase takes Chinese characters only",
		"wxbridge rules: " + bad + ": 2 problems",
	}
	if code != 2 || out != "" {
		t.Fatalf("check bad file: exit %d, stdout %q", code, out)
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}

	if code, _, _ := runRules(t, "check", filepath.Join(t.TempDir(), "none.yaml")); code != 2 {
		t.Errorf("missing file: exit %d", code)
	}
	if code, _, _ := runRules(t, "lint"); code != 2 {
		t.Errorf("unknown subcommand: exit %d", code)
	}
	if code, _, _ := runRules(t); code != 2 {
		t.Errorf("no subcommand: exit %d", code)
	}
}

func TestRulesRender(t *testing.T) {
	code, out, errOut := runRules(t, "render", "--event", "../../rules/testdata/events/order.created.json", "../../rules.yaml")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, w := range []string{
		"event order.created (id evt-order-1001, time 2026-11-21T14:05:00Z)",
		"rule order-created-to-buyer: template order_created",
		"  to:     user u-17",
		"  page:   pages/order/detail?id=1001",
		`"Apple iPhone 17 Pro 256GB 深空黑色 双卡双待等2件" → "Apple iPhone 17 Pro…"`,
		`"￥9,147.50" → "￥9147.50"`,
		`dedupe: once per "order:1001" and recipient within 10m`,
		"rule order-created-to-seller",
		"  to:     role order_handler in seller:42",
		"quiet:  22:00-08:00 Asia/Shanghai, defer: the event time is inside, sent at 2026-11-22 08:00 CST",
		"    ┌─ 新订单通知",
		"    │ 商品名称: Apple iPhone 17 Pro…",
		"    └─ 进入小程序查看 › pages/order/detail?id=1001",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}

	// A plain payload needs --type; a value that cannot fit fails the
	// command after everything is shown.
	payload := writeFile(t, "payload.json", `{"ticket_id": "1", "ticket_no": "RT 1", "reporter_id": "u-1",
		"status": "done", "summary": "投影仪", "updated_at": "2026-11-20T01:12:00Z"}`)
	code, out, _ = runRules(t, "render", "--event", payload, "--type", "repair.ticket.done", "../../rules.yaml")
	if code != 1 || !strings.Contains(out, `character_string1  character_string  "RT 1" → error: "RT 1" has ' '`) ||
		!strings.Contains(out, "→ would fail: invalid_data") || !strings.Contains(out, `"待分配"`) ||
		!strings.Contains(out, "cap:    at most 5 messages per user per 1h\n") {
		t.Errorf("render with a bad value: exit %d\n%s", code, out)
	}
	code, out, _ = runRules(t, "render", "--event", payload, "--type", "nothing.here", "../../rules.yaml")
	if code != 0 || !strings.Contains(out, "no rule matches nothing.here") {
		t.Errorf("no match: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"render", "../../rules.yaml"},
		{"render", "--event", payload, "../../rules.yaml"},
		{"render", "--event", writeFile(t, "x.json", "not json"), "--type", "x", "../../rules.yaml"},
	} {
		if code, _, _ := runRules(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

func TestRulesCheckRemote(t *testing.T) {
	const appid, secret = "wx00000000000000c1", "check-secret"
	emu := wechattest.New(wechattest.Options{})
	emu.AddApp(appid, secret)
	emu.AddTemplate(appid, wechattest.Template{ID: "TPL_OK", Title: "订单通知", Kind: wechattest.OneTime,
		Keywords: map[string]string{"thing1": "thing", "time2": "time"}})
	emu.AddTemplate(appid, wechattest.Template{ID: "TPL_DIFF", Title: "报修通知", Kind: wechattest.LongTerm,
		Keywords: map[string]string{"thing1": "thing", "phrase2": "phrase", "enum_string3": "enum"},
		Labels:   map[string]string{"phrase2": "进度"},
		Enums:    map[string][]string{"enum_string3": {"缺水", "缺电"}}})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	defer emu.Close()

	file := writeFile(t, "rules.yaml", `apps:
  main: {appid: `+appid+`, secret: `+secret+`}
templates:
  ok: {app: main, id: TPL_OK, keywords: {thing1: thing, time2: time}}
  diff:
    app: main
    id: TPL_DIFF
    keywords: {thing1: thing, thing4: thing, enum_string3: {enum: [缺水, 缺气]}}
  gone: {app: main, id: TPL_GONE, keywords: {thing1: thing}}
rules: []
`)
	code, out, errOut := runRules(t, "check", "--remote", "--wechat-api", srv.URL, file)
	if code != 2 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, w := range []string{
		file + ":5:3: templates.diff.kind: WeChat says TPL_DIFF (报修通知) is long_term, the file says one_time",
		file + ":8:15: templates.diff.keywords: WeChat's template 报修通知 also has phrase2 (进度)",
		file + ":8:31: templates.diff.keywords.thing4: WeChat's template 报修通知 has no keyword thing4",
		file + ":8:67: templates.diff.keywords.enum_string3.enum: \"缺气\" is not one of WeChat's values",
		file + ":9:25: templates.gone.id: template TPL_GONE is not in app main's template list on WeChat",
		"5 problems against WeChat's template lists",
	} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	if strings.Contains(errOut, "templates.ok") {
		t.Errorf("a matching template is reported:\n%s", errOut)
	}
}
