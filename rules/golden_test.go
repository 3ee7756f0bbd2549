package rules_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/rules"
)

var update = flag.Bool("update", false, "rewrite testdata/render.golden")

// Everything the sample rules.yaml and the fuzz rules render for the sample
// events and the fuzz seeds, errors included, is pinned in
// testdata/render.golden: a change to how templates execute (the limits,
// say) must not change what ordinary templates print. Run with -update
// after a deliberate change, and read the diff.
func TestRenderGolden(t *testing.T) {
	sets := []*rules.Set{loadSample(t), mustParse(fuzzRules)}
	var events []*rules.Event
	files, _ := filepath.Glob("testdata/events/*.json")
	for _, f := range files {
		events = append(events, cloudEvent(t, f))
	}
	for _, seed := range renderSeeds {
		// Two tokens for the rule all-types, one for the rule funcs.
		for _, typ := range []string{"order.created", "order"} {
			ev := event(typ, seed)
			ev.Time = time.Date(2026, 11, 21, 14, 5, 0, 0, time.UTC)
			events = append(events, ev)
		}
	}
	var b strings.Builder
	for i, ev := range events {
		fmt.Fprintf(&b, "## event %d %s %s\n", i, ev.Type, ev.ID)
		for _, s := range sets {
			for _, m := range s.Match(ev) {
				p := m.Rule.Preview(ev)
				fmt.Fprintf(&b, "rule %s when-err=%v\n", m.Rule.Name, m.Err)
				fmt.Fprintf(&b, "  to %v err=%v\n", p.Recipients, p.RecipientsErr)
				fmt.Fprintf(&b, "  page %q err=%v\n", p.Page, p.PageErr)
				for _, k := range p.Keywords {
					fmt.Fprintf(&b, "  %s raw=%q value=%q err=%v\n", k.Key, k.Raw, k.Value, k.Err)
				}
				fmt.Fprintf(&b, "  dedupe %q err=%v\n", p.DedupeKey, p.DedupeErr)
			}
		}
	}
	const golden = "testdata/render.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < min(len(gl), len(wl)); i++ {
			if gl[i] != wl[i] {
				t.Fatalf("rendering changed at line %d of %s:\n got %s\nwant %s", i+1, golden, gl[i], wl[i])
			}
		}
		t.Fatalf("rendering changed: %d lines, %s has %d", len(gl), golden, len(wl))
	}
}
