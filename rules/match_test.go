package rules_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestMatchPatterns(t *testing.T) {
	patterns := []string{"a.b", "a.*", "a.>", "*.b", ">", "*", "a.*.c", "*.*.>"}
	var src strings.Builder
	src.WriteString("apps: {main: {appid: wx0123456789abcdef, secret: s}}\n")
	src.WriteString("templates: {t: {app: main, id: T, keywords: {thing1: thing}}}\nrules:\n")
	for i, p := range patterns {
		fmt.Fprintf(&src, "  - {name: r%d, on: %q, template: t, to: [user: u], data: {thing1: x}}\n", i, p)
	}
	set := mustParse(src.String())
	tests := []struct{ typ, want string }{
		{"a.b", "a.b a.* a.> *.b >"},
		{"a", "> *"},
		{"x.b", "*.b >"},
		{"a.b.c", "a.> > a.*.c *.*.>"},
		{"a.x.c.d", "a.> > *.*.>"},
		{"b.c", ">"},
		{"a.", "a.* a.> >"},
	}
	for _, tt := range tests {
		var got []string
		for _, m := range set.Match(event(tt.typ, `{}`)) {
			got = append(got, m.Rule.On[0])
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("Match(%q) = %v, want %s", tt.typ, got, tt.want)
		}
	}
}

// A rule whose patterns both match is returned once, in file order among
// exact and wildcard matches, and repeated calls agree (the index is not
// changed by matching).
func TestMatchOrderAndOnce(t *testing.T) {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: wild, on: "order.*", template: t, to: [user: u], data: {thing1: x}}
  - {name: both, on: [order.created, "order.>"], template: t, to: [user: u], data: {thing1: x}}
  - {name: exact, on: order.created, template: t, to: [user: u], data: {thing1: x}}
  - {name: twice, on: [order.created, order.created], template: t, to: [user: u], data: {thing1: x}}
`)
	for range 3 {
		var got []string
		for _, m := range set.Match(event("order.created", `{}`)) {
			got = append(got, m.Rule.Name)
		}
		if strings.Join(got, " ") != "wild both exact twice" {
			t.Fatalf("Match = %v", got)
		}
	}
}

func TestWhen(t *testing.T) {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: amount, on: x, when: data.amount > 100.5, template: t, to: [user: u], data: {thing1: x}}
  - {name: optional, on: x, when: '(data.discount ?? 0) == 0', template: t, to: [user: u], data: {thing1: x}}
  - {name: fields, on: x, when: 'id == "evt-1" && type == "x" && subject == "" && time.Year() == 2026', template: t, to: [user: u], data: {thing1: x}}
  - {name: strings, on: x, when: 'data.city startsWith "上海" and data.tags[0] == "vip"', template: t, to: [user: u], data: {thing1: x}}
  - {name: notbool, on: x, when: data.flag, template: t, to: [user: u], data: {thing1: x}}
`)
	tests := []struct{ data, want string }{
		{`{"amount": 120, "city": "上海市", "tags": ["vip"], "flag": true}`, "amount optional fields strings notbool"},
		{`{"amount": 100.5, "discount": 3}`, "fields"},
		{`{"amount": "lots", "flag": "yes"}`, "amount(error) optional fields notbool(error)"},
		{`{"amount": 12345678901234567890}`, "amount optional fields"},
	}
	for _, tt := range tests {
		var got []string
		for _, m := range set.Match(event("x", tt.data)) {
			name := m.Rule.Name
			if m.Err != nil {
				name += "(error)"
				if !strings.Contains(m.Err.Error(), "rule "+m.Rule.Name) {
					t.Errorf("error %q does not name its rule", m.Err)
				}
			}
			got = append(got, name)
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("data %s: Match = %v, want %s", tt.data, got, tt.want)
		}
	}
}

func TestMatchConcurrent(t *testing.T) {
	set := loadSample(t)
	ev := cloudEvent(t, "testdata/events/order.created.json")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				for _, m := range set.Match(ev) {
					if _, err := m.Rule.Render(ev); err != nil {
						t.Error(err)
						return
					}
					if _, err := m.Rule.Recipients(ev); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}
