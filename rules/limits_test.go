package rules_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/rules"
)

// hostile is event data built the way a hostile publisher would: a number
// to range over, a megabyte of text, long lists.
func hostile() map[string]any {
	long := make([]any, 20_000)
	for i := range long {
		long[i] = fmt.Sprint("u-", i)
	}
	twenty := make([]any, 20)
	for i := range twenty {
		twenty[i] = i
	}
	return map[string]any{
		"n":     1_000_000_000, // as a Go integer: Event.Data may hold one
		"big":   strings.Repeat("a", rules.MaxValueBytes),
		"half":  strings.Repeat("a", rules.MaxValueBytes/2),
		"long":  long,
		"l":     twenty,
		"l200":  long[:200],
		"empty": "",
	}
}

// Every way a template can run away stops at a limit, as a DataError that
// names the keyword and says which limit. None of these may take long; the
// test does not time them (the machine is shared), it checks that the
// budget, not something else, stopped them.
func TestTemplatesStopAtTheLimits(t *testing.T) {
	tests := []struct {
		name, tmpl string
		want       error
	}{
		// Iterations. A literal count is refused by check (see
		// TestCheckErrors); through a variable it is caught when it runs.
		{"range over a hundred million", `{{ $n := 100000000 }}{{ range $n }}{{ end }}`, rules.ErrIterations},
		{"nested ranges", `{{ $k := 1000 }}{{ range $k }}{{ range $k }}{{ range $k }}{{ end }}{{ end }}{{ end }}`, rules.ErrIterations},
		{"range over a number in the event", `{{ range .data.n }}x{{ end }}`, rules.ErrIterations},
		{"range over a long list", `{{ range .data.long }}{{ end }}`, rules.ErrIterations},
		{"range over a length", `{{ range $i := len .data.big }}{{ end }}`, rules.ErrIterations},
		{"range in a range over the event", `{{ range .data.l200 }}{{ range $.data.l200 }}{{ end }}{{ end }}`, rules.ErrIterations},
		{"range inside with", `{{ with .data }}{{ range .long }}{{ end }}{{ end }}`, rules.ErrIterations},
		{"range over a range", `{{ range $i, $e := .data.long }}{{ end }}`, rules.ErrIterations},

		// Output.
		{"a megabyte twice (fast path)", `{{ .data.big }}{{ .data.big }}`, rules.ErrValueSize},
		{"a megabyte twice", `{{ .data.big | default "" }}{{ .data.big | default "" }}`, rules.ErrValueSize},
		{"a megabyte in a loop", `{{ range .data.l }}{{ $.data.big }}{{ end }}`, rules.ErrValueSize},
		{"printf width in a loop", `{{ range .data.l }}{{ printf "%100000d" 1 }}{{ end }}`, rules.ErrValueSize},

		// Work that prints nothing, and values that grow.
		{"upper in a loop", `{{ range .data.l }}{{ $x := upper $.data.big }}{{ end }}x`, rules.ErrWork},
		{"len in a loop", `{{ range .data.l }}{{ $x := len $.data.big }}{{ end }}x`, rules.ErrWork},
		{"printf doubling", `{{ $s := "ab" }}{{ range 40 }}{{ $s = printf "%s%s" $s $s }}{{ end }}x`, rules.ErrWork},
		{"lists of lists printed", `{{ $l := list 1 2 }}{{ range 40 }}{{ $l = list $l $l }}{{ end }}{{ $l }}`, rules.ErrWork},
		{"lists of lists joined", `{{ $l := list }}{{ range 40 }}{{ $l = list $l $l }}{{ end }}{{ join "" $l }}x`, rules.ErrWork},
		{"lists of lists in printf", `{{ $l := list 1 }}{{ range 40 }}{{ $l = list $l $l }}{{ end }}{{ printf "%v" $l }}`, rules.ErrWork},
		{"lists of lists in urlquery", `{{ $l := list 1 }}{{ range 40 }}{{ $l = list $l $l }}{{ end }}{{ urlquery $l }}`, rules.ErrWork},
		{"lists of lists as money", `{{ $l := list 1 }}{{ range 40 }}{{ $l = list $l $l }}{{ end }}{{ money $l }}`, rules.ErrWork},
	}
	// The clock is the last resort: on a loaded machine it could come
	// first, and this test is about the counts.
	defer rules.SetEvalTimeLimit(time.Hour)()
	ev := &rules.Event{ID: "e", Type: "x", Data: hostile()}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := oneThing(t, tt.tmpl)
			_, err := r.Render(ev)
			var de *rules.DataError
			if !errors.As(err, &de) || de.Rule != "r" || de.Keyword != "thing1" {
				t.Fatalf("Render: %v; want a DataError for thing1", err)
			}
			if !errors.Is(err, tt.want) || !strings.Contains(de.Reason, "see Limits in docs/rules.md") {
				t.Errorf("stopped by %v (%q), want %v", de.Err, de.Reason, tt.want)
			}
		})
	}
}

// The other templated values (recipients, the page and its query, the
// dedupe key) have the same limits, and say which field they are.
func TestEveryValueHasTheLimits(t *testing.T) {
	runaway := `{{ range .data.n }}{{ end }}`
	set := mustParse(fmt.Sprintf(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: users, on: x, template: t, data: {thing1: x}, to: [users: %[1]q]}
  - {name: scope, on: x, template: t, data: {thing1: x}, to: [{role: r, scope: %[1]q}]}
  - {name: page, on: x, template: t, data: {thing1: x}, to: [user: u], page: %[1]q}
  - {name: query, on: x, template: t, data: {thing1: x}, to: [user: u], page: {path: p, query: {id: %[1]q}}}
  - {name: dedupe, on: x, template: t, data: {thing1: x}, to: [user: u], dedupe: {key: %[1]q, window: 1m}}
`, runaway))
	ev := &rules.Event{ID: "e", Type: "x", Data: hostile()}
	errs := map[string]error{}
	for _, r := range set.Rules {
		p := r.Preview(ev)
		errs[r.Name] = p.Err()
	}
	for name, keyword := range map[string]string{"users": "to[0].user", "scope": "to[0].scope", "page": "page", "query": "page", "dedupe": "dedupe.key"} {
		var de *rules.DataError
		if err := errs[name]; !errors.As(err, &de) || de.Keyword != keyword || !errors.Is(err, rules.ErrIterations) {
			t.Errorf("rule %s: %v; want a DataError for %s over the iteration limit", name, err, keyword)
		}
	}
}

// The limits are where the documentation says: a value may make exactly
// MaxIterations iterations and print exactly MaxValueBytes.
func TestLimitsAreExact(t *testing.T) {
	ev := &rules.Event{ID: "e", Type: "x", Data: hostile()}
	tests := []struct {
		tmpl string
		want error
	}{
		{fmt.Sprintf(`{{ range %d }}{{ end }}x`, rules.MaxIterations), nil},
		{fmt.Sprintf(`{{ $n := %d }}{{ range $n }}{{ end }}x`, rules.MaxIterations+1), rules.ErrIterations},
		{fmt.Sprintf(`{{ range 100 }}{{ range %d }}{{ end }}{{ end }}x`, rules.MaxIterations/100-1), nil},
		{`{{ .data.big }}`, nil},
		{`{{ .data.big }}x`, rules.ErrValueSize},
		{`{{ .data.big | default "" }}`, nil},
		{`{{ .data.big | default "" }}x`, rules.ErrValueSize},
	}
	for _, tt := range tests {
		raw, _, err := rawOf(oneThing(t, tt.tmpl), ev)
		if tt.want == nil && err != nil {
			t.Errorf("%s: %v", tt.tmpl, err)
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: %q, %v; want %v", tt.tmpl, raw[:min(len(raw), 20)], err, tt.want)
		}
	}
}

func rawOf(r *rules.Rule, ev *rules.Event) (string, string, error) {
	k := r.Preview(ev).Keywords[0]
	return k.Raw, k.Value, k.Err
}

// Behind the counts, the clock: a rendering or a condition that runs past
// MaxEvalTime stops. The limit is shortened to nothing here, so that the
// first reading of the clock (after 64 ticks) is over it.
func TestTimeLimit(t *testing.T) {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: loop, on: x, template: t, to: [user: u], data: {thing1: "{{ range .data.l200 }}{{ end }}x"}}
  - {name: calls, on: x, template: t, to: [user: u], data: {thing1: "{{ range .data.l }}{{ range $.data.l }}{{ end }}{{ end }}x"}}
  - {name: when, on: x, when: "all(data.l200, {# != ''})", template: t, to: [user: u], data: {thing1: x}}
`)
	ev := &rules.Event{ID: "e", Type: "x", Data: hostile()}
	check := func(want error) {
		t.Helper()
		m := set.Match(ev)
		if len(m) != 3 {
			t.Fatalf("%d rules match", len(m))
		}
		if want == nil && m[2].Err != nil || want != nil && !errors.Is(m[2].Err, want) {
			t.Errorf("when: %v, want %v", m[2].Err, want)
		}
		for _, r := range set.Rules[:2] {
			if _, err := r.Render(ev); want == nil && err != nil || want != nil && !errors.Is(err, want) {
				t.Errorf("%s: %v, want %v", r.Name, err, want)
			}
		}
	}
	check(nil)
	restore := rules.SetEvalTimeLimit(0)
	defer restore()
	check(rules.ErrTime)
}

// A `when` condition cannot run away either: expr's own limits (nodes
// when compiling, memory when running) and a budget patched into closures,
// `let` and `+`.
func TestConditionsStopAtTheLimits(t *testing.T) {
	tests := []struct {
		when string
		want error  // nil: any DataError will do (expr's own limit)
		msg  string // in the reason
	}{
		{`all(1..1000000000, {# > 0})`, nil, "memory budget exceeded"},
		{`any(1..100000, {# < 0})`, rules.ErrIterations, ""},
		{`all(data.long, {# != ""}) && all(data.long, {# != ""})`, rules.ErrIterations, ""},
		{`any(data.l200, {any(data.l200, {# == "x"})})`, rules.ErrIterations, ""},
		{`repeat(data.big, 1000000) != ""`, rules.ErrValueSize, ""},
		{`reduce(1..30, #acc + #acc, data.big) != ""`, rules.ErrWork, ""},
		{`let a = data.big + data.big; let b = a + a; let c = b + b; let d = c + c; let e = d + d; e != ""`, rules.ErrWork, ""},
		{strings.Repeat("data.big + ", 20) + `"" != ""`, rules.ErrWork, ""},
		{`count(1..100000, {# < 0}) == 0`, rules.ErrIterations, ""},
		{`len(map(1..100000, {# * 2})) > 0`, rules.ErrIterations, ""},
	}
	defer rules.SetEvalTimeLimit(time.Hour)()
	ev := &rules.Event{ID: "e", Type: "x", Data: hostile()}
	for _, tt := range tests {
		t.Run(tt.when, func(t *testing.T) {
			set := mustParse(fmt.Sprintf(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: r, on: x, when: %q, template: t, to: [user: u], data: {thing1: x}}
`, tt.when))
			m := set.Match(ev)
			if len(m) != 1 {
				t.Fatalf("%d matches", len(m))
			}
			var de *rules.DataError
			if !errors.As(m[0].Err, &de) || de.Keyword != "when" || de.Rule != "r" {
				t.Fatalf("%v; want a DataError for when", m[0].Err)
			}
			if tt.want != nil && !errors.Is(de, tt.want) || !strings.Contains(de.Reason, tt.msg) {
				t.Errorf("stopped by %v (%q), want %v %q", de.Err, de.Reason, tt.want, tt.msg)
			}
		})
	}
}

// Conditions that loop over what an ordinary event holds, build text
// and use repeat still work with the patch in place.
func TestConditionsWithinTheLimits(t *testing.T) {
	tests := []struct {
		when string
		want bool
	}{
		{`any(data.l, {# == 3})`, true},
		{`all(data.l, {# < 20}) && len(data.l) == 20`, true},
		{`count(data.l, {# % 2 == 0}) == 10`, true},
		{`sum(map(data.l, {# * 2})) == 380`, true},
		{`reduce(data.l, #acc + #, 0) == 190`, true},
		{`let s = "a" + "b"; s + data.empty == "ab"`, true},
		{`repeat("ab", 3) == "ababab"`, true},
		{`data.n + 1 > 5`, true},
		{`filter(data.l, {# > 17}) == [18, 19]`, true},
		{`none(data.l, {# > 100})`, true},
		{`any(data.l, {# > 100})`, false},
	}
	ev := &rules.Event{ID: "e", Type: "x", Data: hostile()}
	for _, tt := range tests {
		set := mustParse(fmt.Sprintf(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: r, on: x, when: %q, template: t, to: [user: u], data: {thing1: x}}
`, tt.when))
		m := set.Match(ev)
		if got := len(m) == 1 && m[0].Err == nil; got != tt.want || len(m) == 1 && m[0].Err != nil {
			t.Errorf("%s: %v, want %v", tt.when, m, tt.want)
		}
	}
}

// No error message echoes a value of the event whole: a megabyte in
// event data gives a short quote and its length wherever it ends up in an
// error.
func TestErrorsQuoteValuesShort(t *testing.T) {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates:
  t: {app: main, id: T, keywords: {number1: number, phrase2: phrase, time3: time, amount4: amount, thing5: thing, thing6: thing,
    thing7: thing, thing8: thing, letter9: letter, character_string10: character_string}}
rules:
  - name: r
    on: x
    template: t
    to:
      - user: "x{{ .data.empty }}{{ .data.half }}"
    data:
      number1: "{{ .data.big }}"
      phrase2: "{{ .data.big }}"
      time3: "{{ .data.big }}"
      amount4: "{{ .data.big }}"
      thing5: "{{ range .data.big }}{{ end }}"
      thing6: "{{ .data.big | money }}"
      thing7: "{{ .data.big | date \"15:04\" }}"
      thing8: "{{ eq .data.big 1 }}"
      letter9: "{{ .data.big }}"
      character_string10: "{{ .data.big }}"
  - {name: w1, on: x, when: "int(data.big) > 0", template: t, to: [user: u], data: {number1: "1", phrase2: 好, time3: "15:04",
      amount4: "1", thing5: x, thing6: x, thing7: x, thing8: x, letter9: x, character_string10: x}}
  - {name: w2, on: x, when: "data.big > 0", template: t, to: [user: u], data: {number1: "1", phrase2: 好, time3: "15:04",
      amount4: "1", thing5: x, thing6: x, thing7: x, thing8: x, letter9: x, character_string10: x}}
`)
	ev := &rules.Event{ID: "e", Type: "x", Data: hostile()}
	var errs []error
	for _, m := range set.Match(ev) {
		if m.Err != nil {
			errs = append(errs, m.Err)
			continue
		}
		p := m.Rule.Preview(ev)
		errs = append(errs, p.RecipientsErr)
		for _, k := range p.Keywords {
			errs = append(errs, k.Err)
		}
	}
	if len(errs) != 13 {
		t.Fatalf("%d errors: %v", len(errs), errs)
	}
	quoted := 0
	for _, err := range errs {
		var de *rules.DataError
		if !errors.As(err, &de) {
			t.Errorf("%v is not a DataError", err)
			continue
		}
		if len(err.Error()) > 400 || strings.Contains(err.Error(), strings.Repeat("a", 200)) {
			t.Errorf("%s: %d bytes: %.300s", de.Keyword, len(err.Error()), err)
		}
		if strings.Contains(de.Reason, " bytes)") {
			quoted++
		}
	}
	// All but thing8 and w2, whose errors name types, not values.
	if quoted != 11 {
		t.Errorf("%d errors quote the value with its length, want 11: %v", quoted, errs)
	}
}
