package rules_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/rules"
)

// benchRules is a 200-rule file: 50 event types with 3 exact rules each
// (one with a condition), 40 wildcard rules and 10 catch-alls by service.
func benchRules() string {
	var b strings.Builder
	b.WriteString(`apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates:
  t:
    app: main
    id: TPL
    keywords: {character_string1: character_string, thing2: thing, amount3: amount, time4: time, phrase5: phrase}
rules:
`)
	rule := func(name, on, when string) {
		fmt.Fprintf(&b, `  - name: %s
    on: %q
`, name, on)
		if when != "" {
			fmt.Fprintf(&b, "    when: %s\n", when)
		}
		b.WriteString(`    template: t
    page: pages/order/detail?id={{ .data.order_id }}
    to:
      - user: "{{ .data.buyer_id }}"
      - role: seller
        scope: "seller:{{ .data.seller_id }}"
    data:
      character_string1: "{{ .data.order_no }}"
      thing2: "{{ .data.item_name }}等{{ len .data.items }}件"
      amount3: "{{ .data.total | money }}"
      time4: "{{ .data.created_at }}"
      phrase5: '{{ choose .data.status "paid" "已支付" "shipped" "已发货" "处理中" }}'
`)
	}
	for i := range 50 {
		typ := fmt.Sprintf("svc%d.event%d", i%10, i)
		rule(fmt.Sprintf("r%d-a", i), typ, "")
		rule(fmt.Sprintf("r%d-b", i), typ, "")
		rule(fmt.Sprintf("r%d-c", i), typ, "data.total > 100")
	}
	for i := range 40 {
		rule(fmt.Sprintf("w%d", i), fmt.Sprintf("svc%d.*", i%10+10), "")
	}
	for i := range 10 {
		rule(fmt.Sprintf("s%d", i), fmt.Sprintf("svc%d.>", i), "")
	}
	return b.String()
}

// BenchmarkMatchRender is the rules side of one event: Match over 200
// rules, then Recipients and Render of every matched rule (4 here: two
// exact, one with a condition, one wildcard).
func BenchmarkMatchRender(b *testing.B) {
	set, err := rules.Parse("bench.yaml", []byte(benchRules()), nil)
	if err != nil {
		b.Fatal(err)
	}
	if len(set.Rules) != 200 {
		b.Fatalf("%d rules", len(set.Rules))
	}
	ev := event("svc3.event13", `{"order_id": "1001", "order_no": "SO20261121-1001", "buyer_id": "u-17", "seller_id": 42,
		"item_name": "Apple iPhone 17 Pro 256GB 深空黑色", "items": [1, 2], "total": 9147.5,
		"created_at": "2026-11-21T14:05:00Z", "status": "paid"}`)
	if n := len(set.Match(ev)); n != 4 {
		b.Fatalf("%d rules match", n)
	}
	renders := 0
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		for _, m := range set.Match(ev) {
			if _, err := m.Rule.Recipients(ev); err != nil {
				b.Fatal(err)
			}
			if _, err := m.Rule.Render(ev); err != nil {
				b.Fatal(err)
			}
			renders++
		}
	}
	elapsed := time.Since(start).Seconds()
	b.ReportMetric(float64(b.N)/elapsed, "events/s")
	b.ReportMetric(float64(renders)/elapsed, "renders/s")
}

// BenchmarkMatch is Match alone over the same 200 rules, for an event
// that matches nothing and one that matches four.
func BenchmarkMatch(b *testing.B) {
	set, err := rules.Parse("bench.yaml", []byte(benchRules()), nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, typ := range []string{"unknown.event", "svc3.event13"} {
		ev := event(typ, `{"total": 120}`)
		b.Run(typ, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				set.Match(ev)
			}
		})
	}
}

// BenchmarkRenderFuncs renders a rule whose every keyword goes through
// text/template rather than the fast path: functions, range, with, index.
func BenchmarkRenderFuncs(b *testing.B) {
	set, err := rules.Parse("fuzz.yaml", []byte(fuzzRules), nil)
	if err != nil {
		b.Fatal(err)
	}
	r := set.Rules[1]
	ev := event("order", `{"s": "abc", "l": [1, "x", 2.5, "y"], "m": {"k": {"k": "v"}}, "t": "2026-03-08T07:30:00Z",
		"n": 123456, "id": "1", "a": "u-1", "b": "u-2", "users": ["u-3", "u-4"]}`)
	if _, err := r.Render(ev); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Render(ev); err != nil {
			b.Fatal(err)
		}
		if _, err := r.Recipients(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderForEveryChannel renders a three-channel via rule for each
// of its templates, the worst case of a recipient no channel but the last
// can reach.
func BenchmarkRenderForEveryChannel(b *testing.B) {
	set := mustParse(oaHead + oaRule)
	r := set.Rules[0]
	ev := event("statement.issued", statementEvent)
	channels := r.Channels()
	b.ReportAllocs()
	for b.Loop() {
		for _, tpl := range channels {
			if _, err := r.RenderFor(ev, tpl); err != nil {
				b.Fatal(err)
			}
		}
	}
}
