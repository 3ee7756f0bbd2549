package rules_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// fuzzRules matches every event with rules that use every keyword type and
// every template function on fields the fuzzer controls.
const fuzzRules = `
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates:
  all:
    app: main
    id: T_ALL
    keywords: {thing1: thing, number2: number, letter3: letter, symbol4: symbol, character_string5: character_string,
      time6: time, date7: date, amount8: amount, phone_number9: phone_number, car_number10: car_number,
      name11: name, phrase12: phrase, enum_string13: {enum: [缺水, 缺电]}, enum14: enum}
  funcs:
    app: main
    id: T_FUNCS
    keywords: {thing1: thing, thing2: thing, thing3: thing, thing4: thing, time5: time, amount6: amount, thing7: thing}
rules:
  - name: all-types
    on: ">"
    when: data?.skip != true
    template: all
    page: {path: "pages/{{ .data.p }}", query: {id: "{{ .data.id }}"}}
    to:
      - user: "{{ .data.user }}"
      - users: "{{ .data.users }}"
      - role: "{{ .data.role | default \"r\" }}"
        scope: "s:{{ .data.scope | default \"x\" }}"
      - openid: "{{ .data.openid }}"
    data:
      thing1: "{{ .data.thing }}"
      number2: "{{ .data.number }}"
      letter3: "{{ .data.letter }}"
      symbol4: "{{ .data.symbol }}"
      character_string5: "{{ .data.cs }}"
      time6: "{{ .data.time }}"
      date7: "{{ .data.date }}"
      amount8: "{{ .data.amount }}"
      phone_number9: "{{ .data.phone }}"
      car_number10: "{{ .data.car }}"
      name11: "{{ .data.name }}"
      phrase12: "{{ .data.phrase }}"
      enum_string13: "{{ .data.enum }}"
      enum14: "{{ .data.enum }}"
    dedupe: {key: "{{ .data.id }}", window: 1m}
    quiet_hours: "22:00-08:00"
  - name: funcs
    on: "*"
    template: funcs
    page: "p?x={{ .data.id }}"
    to: [users: "{{ list .data.a .data.b .data.users }}"]
    data:
      thing1: '{{ .data.s | trunc 5 }}{{ .data.l | join "," }}{{ len .data.l }}'
      thing2: '{{ index .data.l 0 }}{{ index .data.m "k" }}{{ .data.m.k.k }}'
      thing3: '{{ choose .data.s "a" "甲" .data.s }}{{ .data.s | upper | lower | trim }}'
      thing4: '{{ range .data.l }}{{ . }}{{ end }}{{ with .data.m }}{{ .k }}{{ end }}'
      time5: '{{ .data.t | tz "America/New_York" | date "2006-01-02 15:04" }}'
      amount6: '{{ .data.n | cents | money }}'
      thing7: '{{ .data.t | date "1月2日" }}{{ .time | date "15:04" }}'
`

// fuzzLoops are rules whose templates and condition loop over, nest and
// grow what the fuzzer sends: whatever the data, each ends within the
// limits, as a value or as a DataError.
const fuzzLoops = `
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing, thing2: thing, thing3: thing, thing4: thing}}}
rules:
  - name: loops
    on: ">"
    when: 'all(data?.l ?? [], {# != "stop"})'
    template: t
    to: [users: '{{ range .data.l }}{{ range $.data.l }}{{ . }}{{ end }}{{ end }}']
    data:
      thing1: '{{ range $i, $e := .data.l }}{{ range $.data.l }}{{ $e }}{{ . }}{{ end }}{{ end }}x'
      thing2: '{{ $x := list .data.s }}{{ range .data.l }}{{ $x = list $x $x }}{{ end }}{{ join "" $x }}x'
      thing3: '{{ $s := printf "%v" .data.s }}{{ range .data.l }}{{ $s = printf "%s%s" $s $s }}{{ end }}{{ len $s }}'
      thing4: '{{ range .data.n }}{{ $.data.s }}{{ end }}x'
`

// renderSeeds are event data for the rules above: every function and
// keyword type, and data of the wrong shapes.
var renderSeeds = []string{
	`{"thing": "长长长长长长长长长长长长长长长长长长长长长", "number": "1e3", "letter": "abc", "symbol": "*",
		  "cs": "SO-1", "time": 1795269900, "date": "2026-11-21T14:05:00Z", "amount": "￥1,234.5", "phone": "+86 138",
		  "car": "粤a·8z888", "name": "王小明", "phrase": "已发货", "enum": "缺水", "user": "u", "users": ["a", "b", ""],
		  "openid": "o", "p": "x", "id": "1", "s": "a", "l": [1, "x", null, {"k": 1}], "m": {"k": {"k": "v"}},
		  "t": "2026-03-08T07:30:00Z", "n": 99999999999}`,
	`{"time": "09:00~2026-11-21T14:05:00Z", "date": "2019年10月1日", "amount": -1, "number": 1.5e-7}`,
	`[1, 2, 3]`, `"text"`, `null`, `{"l": "not a list", "m": [1], "n": "1/3", "t": "9999999999999999999"}`,
	`{"skip": true}`, `{"thing": "\u0000\n\t\u202e"}`,
}

func FuzzRender(f *testing.F) {
	set, err := rules.Parse("fuzz.yaml", []byte(fuzzRules), nil)
	if err != nil {
		f.Fatal(err)
	}
	sample := loadSample(f)
	loops, err := rules.Parse("loops.yaml", []byte(fuzzLoops), nil)
	if err != nil {
		f.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/events/*.json")
	for _, file := range files {
		ev := cloudEvent(f, file)
		data, _ := json.Marshal(ev.Data)
		f.Add(ev.Type, data)
	}
	for _, seed := range renderSeeds {
		f.Add("order.created", []byte(seed))
	}
	f.Add("x", []byte(`{"l": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30],
		"s": "abcdefghijklmnopqrstuvwxyz", "n": 200}`))
	at := time.Date(2026, 11, 21, 14, 5, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		var v any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if dec.Decode(&v) != nil {
			return
		}
		ev := &rules.Event{ID: "fuzz", Type: typ, Time: at, Data: v}
		for _, s := range []*rules.Set{set, sample, loops} {
			for _, m := range s.Match(ev) {
				checkRule(t, m, ev)
			}
		}
	})
}

func checkRule(t *testing.T, m rules.Matched, ev *rules.Event) {
	t.Helper()
	r := m.Rule
	if m.Err != nil && !strings.Contains(m.Err.Error(), r.Name) {
		t.Errorf("when error does not name the rule: %v", m.Err)
	}
	// Errors quote event data shortened, whatever its size.
	defer func() {
		p := r.Preview(ev)
		errs := []error{m.Err, p.RecipientsErr, p.PageErr, p.DedupeErr}
		for _, k := range p.Keywords {
			errs = append(errs, k.Err)
		}
		for _, err := range errs {
			if err != nil && len(err.Error()) > 1024 {
				t.Errorf("a %d-byte error: %.200s", len(err.Error()), err)
			}
		}
	}()
	to, err := r.Recipients(ev)
	var de *rules.DataError
	if err != nil && !errors.As(err, &de) {
		t.Errorf("Recipients error is %T, not a DataError: %v", err, err)
	}
	for _, rc := range to {
		set := 0
		for _, s := range []string{rc.UserID, rc.Role, rc.OpenID} {
			if s != "" {
				set++
			}
			if strings.ContainsFunc(s, unicode.IsControl) || strings.TrimSpace(s) != s {
				t.Errorf("recipient %q has control characters or spaces around it", s)
			}
		}
		if set != 1 && !(set == 0 && rc.Nobody() && rc.Field != "") {
			t.Errorf("recipient %+v", rc)
		}
	}
	msg, err := r.Render(ev)
	if err != nil {
		if !errors.As(err, &de) || de.Rule != r.Name || de.Keyword == "" {
			t.Errorf("Render error %T %v", err, err)
		}
	} else {
		for _, key := range r.Template.Keys {
			v, ok := msg.Data[key]
			typ, enum := r.Template.Keywords[key], r.Template.Enums[key]
			if !ok || rules.CheckKeyword(typ, v, enum) != nil || !wechattest.ValidKeyword(typ, v, enum) {
				t.Errorf("%s %s = %q (present %v) is not valid", typ, key, v, ok)
			}
		}
		if strings.ContainsAny(msg.Page, " \n\x00") {
			t.Errorf("page %q", msg.Page)
		}
	}
	if _, err := r.DedupeKey(ev); err != nil && !errors.As(err, &de) {
		t.Errorf("DedupeKey error %T %v", err, err)
	}
	p := r.Preview(ev)
	if (p.Err() == nil) != (err == nil && p.RecipientsErr == nil && p.DedupeErr == nil) {
		t.Errorf("Preview and Render disagree: %v / %v", p.Err(), err)
	}
	_ = p.Card()
	if q := r.Policy.QuietHours; q != nil {
		if quiet, end := q.Check(ev.Time); quiet && !end.After(ev.Time) {
			t.Errorf("quiet window ends at %v, before %v", end, ev.Time)
		}
	}
}

// FuzzParse feeds arbitrary files to Parse: every outcome is a Set or an
// ErrorList with positions, never a panic.
func FuzzParse(f *testing.F) {
	// Small seeds: the fuzzer minimizes what it finds, and a 200-rule file
	// takes it minutes.
	for _, src := range []string{fuzzRules, head + rule, "apps: &m {<<: *m}\n"} {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src string) {
		set, err := rules.Parse("fuzz.yaml", []byte(src), func(k string) (string, bool) { return "v", k == "SET" })
		if err == nil {
			ev := &rules.Event{ID: "e", Type: "order.created", Data: map[string]any{"x": "1"}}
			for _, m := range set.Match(ev) {
				checkRule(t, m, ev)
			}
			return
		}
		var list rules.ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("Parse error %T %v", err, err)
		}
		for _, e := range list {
			if e.Line < 1 || e.Message == "" {
				t.Errorf("error without a position or message: %+v", e)
			}
		}
	})
}
