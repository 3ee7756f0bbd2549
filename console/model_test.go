package console_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/console"
)

// clock is a settable time for the model.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var t0 = time.Date(2026, 11, 21, 10, 2, 0, 0, time.UTC)

func newModel(t *testing.T, cfg console.ModelConfig) (*console.Model, *clock) {
	t.Helper()
	c := &clock{t: t0}
	cfg.Now = c.now
	return console.NewModel(cfg), c
}

func applyResult(t *testing.T, m *console.Model, r bridge.Result) {
	t.Helper()
	data, _ := json.Marshal(r)
	if err := m.Apply("wxbridge.results."+r.EventType, nil, data, r.At, false); err != nil {
		t.Fatal(err)
	}
}

func applyChange(t *testing.T, m *console.Model, c bridge.SubscriptionChange) {
	t.Helper()
	data, _ := json.Marshal(c)
	if err := m.Apply("wxbridge.subscriptions."+c.App, nil, data, c.At, false); err != nil {
		t.Fatal(err)
	}
}

func result(rule, status, reason string, at time.Time) bridge.Result {
	return bridge.Result{EventID: "e-" + at.Format("150405"), EventType: "statement.issued", Rule: rule, App: "main", TemplateID: "TPL",
		UserID: "u-1", OpenID: "o-1", Status: status, Reason: reason, Attempts: 1, At: at}
}

func outcome(s console.Snapshot, rule, status, reason string) (hour, day int) {
	for _, o := range s.Outcomes {
		if o.Rule == rule && o.Status == status && o.Reason == reason {
			return o.Hour, o.Day
		}
	}
	return -1, -1
}

// Outcomes count in the last hour and the last day by when they happened;
// older ones are not counted at all.
func TestModelCountsOutcomesByRuleStatusReason(t *testing.T) {
	m, _ := newModel(t, console.ModelConfig{})
	applyResult(t, m, result("r1", "sent", "", t0.Add(-time.Minute)))
	applyResult(t, m, result("r1", "sent", "", t0.Add(-10*time.Minute)))
	applyResult(t, m, result("r1", "sent", "", t0.Add(-2*time.Hour)))
	applyResult(t, m, result("r1", "skipped", "not_subscribed", t0.Add(-30*time.Minute)))
	applyResult(t, m, result("r2", "skipped", "not_subscribed", t0.Add(-23*time.Hour)))
	applyResult(t, m, result("r2", "sent", "", t0.Add(-25*time.Hour)))   // out of the window
	applyResult(t, m, result("r2", "failed", "", t0.Add(3*time.Minute))) // a clock ahead: counts now

	s := m.Snapshot()
	for _, c := range []struct {
		rule, status, reason string
		hour, day            int
	}{
		{"r1", "sent", "", 2, 3},
		{"r1", "skipped", "not_subscribed", 1, 1},
		{"r2", "skipped", "not_subscribed", 0, 1},
		{"r2", "sent", "", -1, -1},
		{"r2", "failed", "", 1, 1},
	} {
		if h, d := outcome(s, c.rule, c.status, c.reason); h != c.hour || d != c.day {
			t.Errorf("%s %s/%s: hour %d day %d, want %d %d", c.rule, c.status, c.reason, h, d, c.hour, c.day)
		}
	}
	total := 0
	for _, h := range s.Hourly {
		total += h["sent"]
	}
	if total != 3 || s.Hourly[len(s.Hourly)-1]["sent"] != 2 {
		t.Errorf("hourly sent %v", s.Hourly)
	}
	// Time moves on: the outcomes of an hour ago leave the last hour, and
	// those of a day ago leave the day.
	m2, clk := newModel(t, console.ModelConfig{})
	applyResult(t, m2, result("r1", "sent", "", t0))
	clk.t = t0.Add(90 * time.Minute)
	if h, d := outcome(m2.Snapshot(), "r1", "sent", ""); h != 0 || d != 1 {
		t.Errorf("after 90 min: hour %d day %d", h, d)
	}
	clk.t = t0.Add(25 * time.Hour)
	if h, d := outcome(m2.Snapshot(), "r1", "sent", ""); h != -1 || d != -1 {
		t.Errorf("after 25 h: hour %d day %d", h, d)
	}
}

// A configuration error names the rule, the template and, for 47003, the
// keyword WeChat's errmsg points at.
func TestModelConfigErrorsNameTheKeyword(t *testing.T) {
	m, _ := newModel(t, console.ModelConfig{})
	r := result("statement", "failed", "wechat_error", t0.Add(-time.Minute))
	r.ErrCode, r.ErrMsg = 47003, "argument invalid! data.thing1.value invalid rid: 6933-48ac"
	applyResult(t, m, r)
	applyResult(t, m, r)
	r2 := result("order", "failed", "wechat_error", t0.Add(-2*time.Hour))
	r2.ErrCode, r2.ErrMsg = 40037, "invalid template_id rid: x"
	applyResult(t, m, r2)
	r3 := result("order", "failed", "wechat_error", t0.Add(-time.Minute))
	r3.ErrCode = 40003 // a recipient's problem, not the configuration's
	applyResult(t, m, r3)

	faults := m.Snapshot().Faults
	if len(faults) != 2 {
		t.Fatalf("faults %+v", faults)
	}
	f := faults[0] // newest first
	if f.Rule != "statement" || f.TemplateID != "TPL" || f.ErrCode != 47003 || f.Field != "thing1" || f.Hour != 2 || f.Day != 2 || f.EventID == "" {
		t.Errorf("47003 fault %+v", f)
	}
	if g := faults[1]; g.Rule != "order" || g.ErrCode != 40037 || g.Field != "" || g.Hour != 0 || g.Day != 1 {
		t.Errorf("40037 fault %+v", g)
	}
}

func templateStats(s console.Snapshot, id string) console.TemplateStats {
	for _, ts := range s.Templates {
		if ts.TemplateID == id {
			return ts
		}
	}
	return console.TemplateStats{}
}

// The ledger's changes say who holds a credit, and how many credits were
// granted, spent and given back.
func TestModelCreditsFromLedgerChanges(t *testing.T) {
	m, _ := newModel(t, console.ModelConfig{MaxHolders: 3})
	ch := func(openid, user, tpl, kind, status, source string, credits int) {
		applyChange(t, m, bridge.SubscriptionChange{App: "main", OpenID: openid, UserID: user, TemplateID: tpl, Kind: kind, Status: status,
			Credits: credits, Source: source, At: t0.Add(-time.Minute)})
	}
	ch("o-1", "u-1", "T1", "one_time", "accept", "client", 1)
	ch("o-1", "u-1", "T1", "one_time", "accept", "popup", 2)
	ch("o-1", "u-1", "T1", "one_time", "accept", "send", 1)
	ch("o-1", "u-1", "T1", "one_time", "accept", "refund", 2)
	ch("o-2", "", "T1", "one_time", "accept", "popup", 1)
	ch("o-2", "", "T1", "one_time", "accept", "send", 0) // spent its only credit
	ch("o-3", "u-3", "T1", "one_time", "accept", "client", 1)
	ch("o-3", "u-3", "T1", "one_time", "accept", "wechat", 0) // 43101: WeChat says none left
	ch("o-4", "u-4", "T1", "one_time", "reject", "change", 0)
	ch("o-5", "u-5", "T2", "long_term", "accept", "change", 0)
	ch("o-6", "u-6", "T2", "long_term", "accept", "change", 0)
	ch("o-7", "u-7", "T2", "long_term", "accept", "change", 0) // past MaxHolders (3)

	s := m.Snapshot()
	t1 := templateStats(s, "T1")
	if t1.Holders != 1 || t1.BoundHolders != 1 || t1.Credits != 2 {
		t.Errorf("T1 holders %d bound %d credits %d, want 1 1 2", t1.Holders, t1.BoundHolders, t1.Credits)
	}
	if d := t1.Day; d.Granted != 4 || d.Accepts != 4 || d.Spent != 2 || d.Refunded != 1 || d.Zeroed != 1 || d.Rejects != 1 {
		t.Errorf("T1 counts %+v", d)
	}
	t2 := templateStats(s, "T2")
	if t2.Holders != 2 || t2.Day.Accepts != 3 {
		t.Errorf("T2 holders %d accepts %d, want 2 and 3", t2.Holders, t2.Day.Accepts)
	}
	if s.Status.HoldersUntracked != 1 {
		t.Errorf("untracked holders %d, want 1", s.Status.HoldersUntracked)
	}
	if sum(t1.Accepts) != 4 || sum(t1.Rejects) != 1 || t1.Accepts[len(t1.Accepts)-1] != 4 {
		t.Errorf("T1 accepts per hour %v rejects %v", t1.Accepts, t1.Rejects)
	}
}

func sum(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

// Skips for lack of a credit are counted per template: what tells product
// people when to ask users to subscribe again.
func TestModelCountsSkipsForLackOfCredit(t *testing.T) {
	m, _ := newModel(t, console.ModelConfig{})
	for i := 0; i < 3; i++ {
		applyResult(t, m, result("r1", "skipped", "not_subscribed", t0.Add(-time.Duration(i)*time.Hour)))
	}
	applyResult(t, m, result("r1", "failed", "not_subscribed", t0))
	applyResult(t, m, result("r1", "skipped", "rejected", t0))
	ts := templateStats(m.Snapshot(), "TPL")
	if ts.Hour.NotSubscribed != 1 || ts.Day.NotSubscribed != 3 || ts.Day.FailedNotSubscribed != 1 || ts.Day.Rejected != 1 {
		t.Errorf("template counts hour %+v day %+v", ts.Hour, ts.Day)
	}
}

// The last results are kept for the most recently active people only, and
// only the last few of each.
func TestModelKeepsLastResultsOfRecentPeople(t *testing.T) {
	m, _ := newModel(t, console.ModelConfig{MaxPeople: 2, PerPerson: 3})
	for i := 0; i < 5; i++ {
		r := result("r1", "sent", "", t0.Add(time.Duration(i-10)*time.Minute))
		r.EventID = "a" + string(rune('0'+i))
		applyResult(t, m, r)
	}
	b := result("r1", "skipped", "not_bound", t0.Add(-time.Minute))
	b.UserID, b.OpenID = "u-2", ""
	applyResult(t, m, b)
	o := result("r1", "sent", "", t0.Add(-time.Minute))
	o.UserID, o.OpenID = "", "o-direct" // named by openid, bound to nobody
	applyResult(t, m, o)

	if got := m.PersonResults("u-1", "o-1"); len(got) != 0 {
		t.Errorf("u-1 was the least recently active of three and should be forgotten, got %d results", len(got))
	}
	if got := m.PersonResults("u-2"); len(got) != 1 || got[0].Reason != "not_bound" {
		t.Errorf("u-2: %+v", got)
	}
	if got := m.PersonResults("", "o-direct"); len(got) != 1 {
		t.Errorf("o-direct: %+v", got)
	}
	if m.Status().PeopleForgotten != 1 {
		t.Errorf("forgotten %d", m.Status().PeopleForgotten)
	}

	m2, _ := newModel(t, console.ModelConfig{PerPerson: 3})
	for i := 0; i < 5; i++ {
		r := result("r1", "sent", "", t0.Add(time.Duration(i-10)*time.Minute))
		r.EventID = "a" + string(rune('0'+i))
		applyResult(t, m2, r)
	}
	got := m2.PersonResults("u-1")
	if len(got) != 3 || got[0].EventID != "a4" || got[2].EventID != "a2" {
		t.Errorf("last 3, newest first: %+v", got)
	}
}

// Dead letters are counted and kept with their reason; a message the model
// cannot read is counted and skipped.
func TestModelDeadLettersAndUnreadable(t *testing.T) {
	m, _ := newModel(t, console.ModelConfig{})
	h := nats.Header{}
	h.Set("Wxbridge-Error", "event body is not JSON")
	h.Set("Wxbridge-Subject", "events.order.created")
	h.Set("Wxbridge-Stream-Seq", "42")
	if err := m.Apply("wxbridge.dead", h, []byte("{nope"), t0.Add(-time.Minute), false); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply("wxbridge.results.x", nil, []byte("{nope"), t0, false); err == nil {
		t.Error("an unreadable result was accepted")
	}
	s := m.Snapshot()
	if s.DeadHour != 1 || s.DeadDay != 1 || len(s.DeadLetters) != 1 || s.DeadLetters[0].Reason != "event body is not JSON" ||
		s.DeadLetters[0].StreamSeq != "42" || s.DeadLetters[0].Subject != "events.order.created" {
		t.Errorf("dead letters: %d %d %+v", s.DeadHour, s.DeadDay, s.DeadLetters)
	}
	if s.Status.Unreadable != 1 {
		t.Errorf("unreadable %d", s.Status.Unreadable)
	}
}

// A live client gets what its filter selects; one that does not read is
// dropped instead of making the feed wait or buffer without limit.
func TestLiveClientsFilteredAndDroppedWhenSlow(t *testing.T) {
	m, _ := newModel(t, console.ModelConfig{MaxLiveClients: 2, LiveQueue: 4})
	sentOnly, _, leave1, err := m.Join(console.Filter{Status: "sent", Person: "u-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer leave1()
	_, slowGone, leave2, err := m.Join(console.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer leave2()
	if _, _, _, err := m.Join(console.Filter{}); err == nil {
		t.Fatal("a third live client was let in past MaxLiveClients 2")
	}
	live := func(r bridge.Result) {
		data, _ := json.Marshal(r)
		if err := m.Apply("wxbridge.results.x", nil, data, r.At, true); err != nil {
			t.Fatal(err)
		}
	}
	live(result("r1", "skipped", "not_subscribed", t0))
	live(result("r1", "sent", "", t0))
	other := result("r1", "sent", "", t0)
	other.UserID = "u-2"
	live(other)
	select {
	case it := <-sentOnly:
		if it.Status != "sent" || it.UserID != "u-1" {
			t.Errorf("filtered client got %+v", it)
		}
	default:
		t.Fatal("the filtered client got nothing")
	}
	select {
	case it := <-sentOnly:
		t.Errorf("the filtered client got %+v too", it)
	default:
	}
	// The unfiltered client has read nothing: its queue (4) holds 3; two
	// more overflow it, and it is dropped at once, without blocking.
	live(result("r1", "sent", "", t0))
	live(result("r1", "sent", "", t0))
	select {
	case <-slowGone:
	default:
		t.Fatal("a client that fell behind was not dropped")
	}
	if open, dropped := m.LiveClients(); open != 1 || dropped != 1 {
		t.Errorf("open %d dropped %d, want 1 1", open, dropped)
	}
}
