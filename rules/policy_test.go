package rules_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/rules"
)

// quietRule parses a rule with the given quiet_hours and returns them.
func quietRule(t *testing.T, spec string) *rules.QuietHours {
	t.Helper()
	set, err := rules.Parse("rules.yaml", []byte(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: r, on: x, template: t, to: [user: u], data: {thing1: x}, quiet_hours: `+spec+`}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	return set.Rules[0].Policy.QuietHours
}

func TestQuietHoursCheck(t *testing.T) {
	tests := []struct {
		spec, at string // at: wall clock in the window's zone
		quiet    bool
		end      string
	}{
		{`"22:00-08:00"`, "2026-11-21 21:59", false, ""},
		{`"22:00-08:00"`, "2026-11-21 22:00", true, "2026-11-22 08:00"},
		{`"22:00-08:00"`, "2026-11-21 23:59", true, "2026-11-22 08:00"},
		{`"22:00-08:00"`, "2026-11-22 00:00", true, "2026-11-22 08:00"},
		{`"22:00-08:00"`, "2026-11-22 07:59", true, "2026-11-22 08:00"},
		{`"22:00-08:00"`, "2026-11-22 08:00", false, ""},
		{`"22:00-08:00"`, "2026-12-31 23:00", true, "2027-01-01 08:00"},
		{`"12:00-14:00"`, "2026-11-21 13:00", true, "2026-11-21 14:00"},
		{`"12:00-14:00"`, "2026-11-21 14:00", false, ""},
		{`"22:00-24:00"`, "2026-11-21 23:00", true, "2026-11-22 00:00"},
		{`"00:00-06:00"`, "2026-11-21 00:00", true, "2026-11-21 06:00"},
		{`{window: "22:00-08:00", time_zone: UTC}`, "2026-11-21 23:00", true, "2026-11-22 08:00"},
		// Across the spring-forward change in Berlin (02:00 -> 03:00 on
		// 2026-03-29): the window still ends at 08:00 local time.
		{`{window: "22:00-08:00", time_zone: Europe/Berlin}`, "2026-03-28 23:00", true, "2026-03-29 08:00"},
		// And the autumn one (03:00 -> 02:00 on 2026-10-25).
		{`{window: "22:00-08:00", time_zone: Europe/Berlin}`, "2026-10-25 01:30", true, "2026-10-25 08:00"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.spec, " at ", tt.at), func(t *testing.T) {
			q := quietRule(t, tt.spec)
			at, err := time.ParseInLocation("2006-01-02 15:04", tt.at, q.Location)
			if err != nil {
				t.Fatal(err)
			}
			quiet, end := q.Check(at.UTC())
			if quiet != tt.quiet {
				t.Fatalf("Check(%s) quiet = %v, want %v", tt.at, quiet, tt.quiet)
			}
			if !quiet {
				return
			}
			if got := end.In(q.Location).Format("2006-01-02 15:04"); got != tt.end {
				t.Errorf("end = %s, want %s", got, tt.end)
			}
			if !end.After(at) {
				t.Errorf("end %v is not after %v", end, at)
			}
			if again, _ := q.Check(end); again {
				t.Errorf("still quiet at the end of the window %v", end)
			}
		})
	}
}

func TestPolicyDefaultsAndDurations(t *testing.T) {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s, time_zone: Europe/Berlin}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - {name: plain, on: x, template: t, to: [user: u], data: {thing1: x}}
  - name: full
    on: x
    template: t
    to: [user: u]
    data: {thing1: x}
    time_zone: Asia/Tokyo
    quiet_hours: {window: "23:00-07:00", action: drop}
    dedupe: {key: "{{ .data.id }}", window: 1d12h}
    frequency_cap: {max: 3, per: 7d}
    delivery: at_most_once
`)
	plain, full := set.Rules[0], set.Rules[1]
	if p := plain.Policy; p.Delivery != rules.AtLeastOnce || p.QuietHours != nil || p.Dedupe != nil || p.Cap != nil {
		t.Errorf("plain rule policy %+v", p)
	}
	if plain.Location.String() != "Europe/Berlin" {
		t.Errorf("plain rule zone %v, want its app's", plain.Location)
	}
	p := full.Policy
	if p.Delivery != rules.AtMostOnce || p.QuietHours.Action != rules.QuietDrop || p.QuietHours.Location.String() != "Asia/Tokyo" ||
		p.QuietHours.Start != 23*time.Hour || p.QuietHours.End != 7*time.Hour {
		t.Errorf("full rule policy %+v, quiet %+v", p, p.QuietHours)
	}
	if p.Dedupe.Window != 36*time.Hour || p.Cap.Max != 3 || p.Cap.Per != 7*24*time.Hour {
		t.Errorf("dedupe %+v cap %+v", p.Dedupe, p.Cap)
	}
	if k, err := full.DedupeKey(event("x", `{"id": "A-1"}`)); k != "A-1" || err != nil {
		t.Errorf("DedupeKey = %q, %v", k, err)
	}
	if k, err := plain.DedupeKey(event("x", `{}`)); k != "" || err != nil {
		t.Errorf("DedupeKey without dedupe = %q, %v", k, err)
	}
	if _, err := full.DedupeKey(event("x", `{}`)); err == nil {
		t.Error("an empty dedupe key is not an error")
	}
}
