package rules_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/rules"
)

// oneThing is a rule with a single thing keyword rendered from tmpl.
func oneThing(t *testing.T, tmpl string) *rules.Rule {
	t.Helper()
	set, err := rules.Parse("rules.yaml", []byte(fmt.Sprintf(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: r, on: x, template: t, to: [user: u], data: {thing1: %q}}
`, tmpl)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return set.Rules[0]
}

// How templates print event data, and what a missing value does.
func TestTemplating(t *testing.T) {
	tests := []struct {
		tmpl, data string
		want       string // raw output; "error: ..." for a DataError reason
	}{
		{`{{ .data.id }}`, `{"id": 1234567890123456789}`, "1234567890123456789"},
		{`{{ .data.f }}`, `{"f": 0.1}`, "0.1"},
		{`{{ .data.b }}`, `{"b": true}`, "true"},
		{`{{ .data.l }}`, `{"l": ["a", 1, null]}`, "a, 1, "},
		{`{{ .data.m }}`, `{"m": {"k": 1}}`, `{"k":1}`},
		{`{{ .data.a.b.c }}x`, `{"a": {"b": {"c": "deep"}}}`, "deepx"},
		{`{{ .data.a.b.c }}x`, `{"a": "not a map"}`, "x"},
		{`{{ .data.a.b.c }}x`, `null`, "x"},
		{`{{ .data.missing | default "无" }}`, `{}`, "无"},
		{`{{ .data.blank | default "无" }}`, `{"blank": "  "}`, "无"},
		{`{{ .data.zero | default "无" }}`, `{"zero": 0}`, "0"},
		{`{{ with .data.buyer }}{{ .name }}{{ end }}`, `{"buyer": {"name": "Ann"}}`, "Ann"},
		{`{{ range .data.items }}{{ .sku }};{{ end }}`, `{"items": [{"sku": "A"}, {"sku": "B"}]}`, "A;B;"},
		{`{{ $b := .data.buyer }}{{ $b.name }}`, `{"buyer": {"name": "Ann"}}`, "Ann"},
		{`{{ index .data.items 1 }}`, `{"items": ["a", "b"]}`, "b"},
		{`{{ index .data.items 5 }}-`, `{"items": ["a"]}`, "-"},
		{`{{ index .data.m "k" }}`, `{"m": {"k": "v"}}`, "v"},
		{`{{ len .data.s }}/{{ len .data.none }}`, `{"s": "上海"}`, "2/0"},
		{`{{ .type }} {{ .id }}`, `{}`, "x evt-1"},
		{`{{ .time.Year }}`, `{}`, "2026"},
		{`{{ .time }}`, `{}`, "2026-11-21T14:05:00Z"},
		{`{{ printf "%s-%s" .data.a .data.b }}`, `{"a": "x", "b": "y"}`, "x-y"},
		{`{{ .data.s | upper }} {{ .data.s | lower }} [{{ .data.p | trim }}]`, `{"s": "Ab", "p": " q "}`, "AB ab [q]"},
		{`{{ .data.n | money }}`, `{"n": "-1234567.005"}`, "-￥1,234,567.01"},
		{`{{ .data.n | money }}`, `{"n": 0}`, "￥0.00"},
		{`{{ .data.n | money }}x`, `{}`, "x"},
		{`{{ .data.n | cents }}`, `{"n": 5}`, "0.05"},
		{`{{ .data.n | cents }}`, `{"n": "120000"}`, "1200"},
		{`{{ .data.s | trunc 3 }}`, `{"s": "abcdef"}`, "ab…"},
		{`{{ .data.s | trunc 3 }}`, `{"s": "abc"}`, "abc"},
		{`{{ .data.l | join "/" }}`, `{"l": ["a", "", "b"]}`, "a/b"},
		{`{{ list .data.a .data.b | join "+" }}`, `{"a": 1, "b": 2}`, "1+2"},
		{`{{ .data.t | date "2006-01-02 15:04" }}`, `{"t": "2026-11-21T14:05:00Z"}`, "2026-11-21 22:05"},
		{`{{ .data.t | date "15:04" }}`, `{"t": 1795269900000}`, "22:05"},
		{`{{ .data.t | date "15:04" }}`, `{"t": "2026-11-21 08:00"}`, "08:00"},
		{`{{ .data.t | tz "UTC" | date "15:04 MST" }}`, `{"t": "2026-11-21T22:05:00+08:00"}`, "14:05 UTC"},
		{`{{ .data.t | date "15:04" | default "-" }}`, `{}`, "-"},
		{`{{ choose .data.s "a" "甲" "b" "乙" }}`, `{"s": "b"}`, "乙"},
		{`{{ choose .data.s "a" "甲" "其他" }}`, `{"s": "z"}`, "其他"},
		{`{{ choose .data.n 1 "一" 2 "二" }}`, `{"n": 2}`, "二"},

		{`{{ .data.t | date "15:04" }}`, `{"t": "soon"}`, `error: date: cannot read "soon" as a time`},
		{`{{ .data.n | money }}`, `{"n": "abc"}`, `error: money: "abc" is not a number`},
		{`{{ .data.n | money }}`, `{"n": "1e999999"}`, `error: money: "1e999999" is not a number`},
		{`{{ .data.n | tz "Nowhere" }}`, `{"n": 1}`, `error: tz: unknown time zone "Nowhere"`},
		{`{{ .data.missing }}`, `{}`, `error: empty: {{ .data.missing }} rendered nothing for this event`},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			p := oneThing(t, tt.tmpl).Preview(event("x", tt.data))
			k := p.Keywords[0]
			if reason, ok := strings.CutPrefix(tt.want, "error: "); ok {
				var de *rules.DataError
				if !errors.As(k.Err, &de) || de.Keyword != "thing1" || de.Rule != "r" || !strings.HasPrefix(de.Reason, reason) {
					t.Fatalf("got %q, %v; want a DataError for thing1 starting %q", k.Raw, k.Err, reason)
				}
				return
			}
			if k.Raw != tt.want {
				t.Fatalf("got %q (%v), want %q", k.Raw, k.Err, tt.want)
			}
		})
	}
}

func TestRenderPageAndData(t *testing.T) {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s, state: trial, lang: en_US}}
templates: {t: {app: main, id: TPL, keywords: {thing1: thing, phrase2: phrase}}}
rules:
  - name: scalar
    on: x
    template: t
    page: pages/a?id={{ .data.id }}
    to: [user: u]
    data: {thing1: "{{ .data.note }}", phrase2: 已完成}
  - name: query
    on: x
    template: t
    page: {path: "pages/{{ .data.kind }}/detail", query: {id: "{{ .data.id }}", from: notice}}
    to: [user: u]
    data: {thing1: "{{ .data.note }}", phrase2: 已完成}
`)
	ev := event("x", `{"id": "a b&c", "kind": "order", "note": "line one\nline two\u0000"}`)
	msg, err := set.Rules[0].Render(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := rules.Rendered{App: "main", TemplateID: "TPL", Page: "pages/a?id=a%20b&c", State: "trial", Lang: "en_US"}
	if msg.App != want.App || msg.TemplateID != want.TemplateID || msg.Page != want.Page || msg.State != want.State || msg.Lang != want.Lang {
		t.Errorf("Render = %+v", msg)
	}
	if msg.Data["thing1"] != "line one line two" || msg.Data["phrase2"] != "已完成" || len(msg.Data) != 2 {
		t.Errorf("data %q", msg.Data)
	}
	msg, err = set.Rules[1].Render(ev)
	if err != nil || msg.Page != "pages/order/detail?id=a+b%26c&from=notice" {
		t.Errorf("page %q, %v", msg.Page, err)
	}
	_, err = set.Rules[1].Render(event("x", `{"kind": "order", "note": "n"}`))
	var de *rules.DataError
	if !errors.As(err, &de) || de.Keyword != "page" || !strings.Contains(de.Reason, "query id: empty") {
		t.Errorf("page with an empty query value: %v", err)
	}
}

func TestRecipients(t *testing.T) {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - name: r
    on: x
    template: t
    data: {thing1: x}
    to:
      - user: "{{ .data.a }}"
      - users: "{{ list .data.b .data.c }}"
      - role: "{{ .data.role | default \"manager\" }}"
        scope: "{{ .data.scopes }}"
      - role: admin
      - openid: "{{ .data.openids }}"
      - user: u-fixed
`)
	r := set.Rules[0]
	tests := []struct{ data, want string }{
		{`{"a": "u-1", "b": ["u-2", "u-1"], "c": 7, "scopes": ["s1", "s2"], "openids": ["o-1", " "]}`,
			"[user u-1 user u-2 user 7 role manager in s1 role manager in s2 role admin openid o-1 user u-fixed]"},
		{`{"scopes": "s"}`, "[nobody (to[0].user rendered no one) nobody (to[1].user rendered no one) role manager in s role admin nobody (to[4].openid rendered no one) user u-fixed]"},
		{`{"a": "u\n-1", "scopes": "s", "role": "buyer"}`, "[user u -1 nobody (to[1].user rendered no one) role buyer in s role admin nobody (to[4].openid rendered no one) user u-fixed]"},
		{`{"a": 12345678901234567890, "scopes": "s", "b": "u-fixed", "openids": "o-1"}`, "[user 12345678901234567890 user u-fixed role manager in s role admin openid o-1]"},
		{`{}`, "error: to[2].scope: empty"},
	}
	for _, tt := range tests {
		got, err := r.Recipients(event("x", tt.data))
		if want, ok := strings.CutPrefix(tt.want, "error: "); ok {
			var de *rules.DataError
			if !errors.As(err, &de) || !strings.HasPrefix(de.Keyword+": "+de.Reason, want) {
				t.Errorf("data %s: %v, %v; want error %q", tt.data, got, err, want)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != tt.want {
			t.Errorf("data %s: %v, %v; want %s", tt.data, got, err, tt.want)
		}
	}
}
