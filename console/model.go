package console

import (
	"container/list"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
)

// ModelConfig bounds the read model. Zero fields take the defaults.
type ModelConfig struct {
	// Window is how far back the counters and a person's last results go,
	// and where the results are read from at start. Default 24 h.
	Window time.Duration
	// Bucket is the counters' time resolution. Default 5 min.
	Bucket time.Duration
	// LedgerLookback is how far back ledger changes are read at start, to
	// know who holds a credit: someone whose last change is older is not
	// counted. Default 7 days (the output stream's default max age).
	LedgerLookback time.Duration
	// MaxPeople is how many people's last results are kept (the least
	// recently active are forgotten first), PerPerson how many results each.
	// Defaults 2000 and 10.
	MaxPeople, PerPerson int
	// MaxHolders bounds the (app, openid, template) entries that hold a
	// credit. Past it, new holders are not tracked (and counted in
	// FeedStatus.HoldersUntracked): the holder counts become a lower bound.
	// About 150 bytes each; default 100,000.
	MaxHolders int
	// Recent is how many results and as many ledger changes are kept to
	// show a live client what happened just before it came. Default 200.
	Recent int
	// MaxLiveClients bounds the live tails open at once (default 8);
	// LiveQueue is how many messages one may fall behind before it is
	// dropped (default 256).
	MaxLiveClients, LiveQueue int
	Now                       func() time.Time
}

func (c *ModelConfig) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Window, 24*time.Hour)
	def(&c.Bucket, 5*time.Minute)
	def(&c.LedgerLookback, 7*24*time.Hour)
	if c.Bucket < time.Second {
		c.Bucket = time.Second
	}
	if c.Window < c.Bucket {
		c.Window = c.Bucket
	}
	defInt(&c.MaxPeople, 2000)
	defInt(&c.PerPerson, 10)
	defInt(&c.MaxHolders, 100_000)
	defInt(&c.Recent, 200)
	defInt(&c.MaxLiveClients, 8)
	defInt(&c.LiveQueue, 256)
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Bounds on what one time bucket keeps apart. Past them, rows fold into
// an "(other)" rule or template: the totals stay right.
const (
	maxOutcomeKeys  = 2000
	maxTemplateKeys = 500
	maxConfigKeys   = 200
	maxDeadKept     = 50
	otherName       = "(other)"
)

// Model is the read model of the output stream: counters of outcomes in
// time buckets, the last results of each person, the credit holders of
// each template, recent dead letters and configuration errors. Follow
// feeds it; the pages query it. Safe for concurrent use.
type Model struct {
	cfg ModelConfig
	hub *hub

	mu         sync.Mutex
	buckets    []bucket
	people     people
	holders    map[holderKey]holder
	configLast map[configKey]configSeen
	dead       ring[DeadLetter]
	results    ring[LiveItem]
	changes    ring[LiveItem]
	status     FeedStatus
}

// NewModel returns an empty read model.
func NewModel(cfg ModelConfig) *Model {
	cfg.setDefaults()
	n := int(cfg.Window / cfg.Bucket)
	if cfg.Window%cfg.Bucket != 0 {
		n++
	}
	return &Model{
		cfg:        cfg,
		hub:        newHub(cfg.MaxLiveClients, cfg.LiveQueue),
		buckets:    make([]bucket, n),
		people:     people{max: cfg.MaxPeople, per: cfg.PerPerson, ll: list.New(), idx: map[string]*list.Element{}},
		holders:    map[holderKey]holder{},
		configLast: map[configKey]configSeen{},
		dead:       ring[DeadLetter]{max: maxDeadKept},
		results:    ring[LiveItem]{max: cfg.Recent},
		changes:    ring[LiveItem]{max: cfg.Recent},
	}
}

// FeedStatus is how far the model has read the stream.
type FeedStatus struct {
	// ResultsFrom and LedgerFrom are where reading started.
	ResultsFrom, LedgerFrom time.Time
	// CaughtUp: each feed has read everything that was in the stream.
	ResultsCaughtUp, LedgerCaughtUp    bool
	Results, Changes, Dead, Unreadable int64
	// LastErr is the last failure to read the stream ("" once reading again).
	LastErr string
	// HoldersUntracked counts credit holders past MaxHolders.
	HoldersUntracked int
	// PeopleForgotten counts people whose last results were dropped for
	// others (MaxPeople).
	PeopleForgotten int
}

type bucket struct {
	start    int64 // unix seconds; 0 for an unused bucket
	outcomes map[outcomeKey]int
	tmpl     map[tmplKey]*TemplateCounts
	config   map[configKey]int
	dead     int
}

type outcomeKey struct {
	Rule, Status, Reason string
	ErrCode              int
}

type tmplKey struct{ App, TemplateID string }

// TemplateCounts are a template's counts over some time.
type TemplateCounts struct {
	Sent                int // sent
	NotSubscribed       int // skipped/not_subscribed: no credit in the ledger
	Rejected            int // skipped/rejected: the user refused the template
	FailedNotSubscribed int // failed/not_subscribed: WeChat answered 43101
	Accepts             int // ledger changes that gave a credit
	Rejects             int // ledger changes to reject or ban
	Granted             int // credits given by accepts
	Spent               int // credits taken by sends
	Refunded            int // credits given back (WeChat did not count a send)
	Zeroed              int // credits WeChat said were gone (43101)
}

func (c *TemplateCounts) add(o *TemplateCounts) {
	c.Sent += o.Sent
	c.NotSubscribed += o.NotSubscribed
	c.Rejected += o.Rejected
	c.FailedNotSubscribed += o.FailedNotSubscribed
	c.Accepts += o.Accepts
	c.Rejects += o.Rejects
	c.Granted += o.Granted
	c.Spent += o.Spent
	c.Refunded += o.Refunded
	c.Zeroed += o.Zeroed
}

type configKey struct {
	Rule, App, TemplateID string
	ErrCode               int
	Field                 string // the keyword a 47003 names, else ""
}

type configSeen struct {
	At                   time.Time
	ErrMsg               string
	EventID, EventSource string
}

type holderKey struct{ App, OpenID, TemplateID string }

type holder struct {
	Credits  int
	LongTerm bool
	Bound    bool // the change carried a user id
}

// DeadLetter is an event the bridge could never process.
type DeadLetter struct {
	At        time.Time
	Reason    string // Wxbridge-Error
	Subject   string // where the event came from
	StreamSeq string // its sequence in the event stream
	Truncated string
}

// LiveItem is one line of the live tail: a result or a ledger change.
type LiveItem struct {
	Kind        string    `json:"kind"` // "result" or "ledger"
	At          time.Time `json:"at"`
	Rule        string    `json:"rule,omitempty"`
	EventID     string    `json:"event_id,omitempty"`
	EventSource string    `json:"event_source,omitempty"`
	EventType   string    `json:"event_type,omitempty"`
	App         string    `json:"app"`
	TemplateID  string    `json:"template_id"`
	Template    string    `json:"template,omitempty"` // its name in the rules: a result's own, else filled when shown
	// Channel is how the template sends (a result's own, else the rules'
	// in force, filled when shown): which road reached the person.
	Channel  string `json:"channel,omitempty"`
	UserID   string `json:"user_id,omitempty"`
	OpenID   string `json:"openid"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
	ErrCode  int    `json:"errcode,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	InDoubt  bool   `json:"in_doubt,omitempty"`
	Credits  *int   `json:"credits,omitempty"`
	Source   string `json:"source,omitempty"`
	ID       string `json:"key"`  // Key, filled when sent
	When     string `json:"when"` // At as the pages show it, filled when sent
}

// Key tells items apart, so that a live page shows each once however
// often it is sent (the recent items again on every reconnect).
func (it LiveItem) Key() string {
	return strings.Join([]string{it.Kind, it.At.UTC().Format(time.RFC3339Nano), it.EventSource, it.EventID, it.Rule, it.App,
		it.OpenID, it.TemplateID, it.Status, it.Source}, "|")
}

func resultItem(r *bridge.Result) LiveItem {
	return LiveItem{Kind: "result", At: r.At, Rule: r.Rule, EventID: r.EventID, EventSource: r.EventSource, EventType: r.EventType,
		App: r.App, TemplateID: r.TemplateID, Template: r.Template, Channel: r.Channel, UserID: r.UserID, OpenID: r.OpenID, Status: r.Status, Reason: r.Reason,
		ErrCode: r.ErrCode, Attempts: r.Attempts, InDoubt: r.InDoubt}
}

func changeItem(c *bridge.SubscriptionChange) LiveItem {
	credits := c.Credits
	return LiveItem{Kind: "ledger", At: c.At, App: c.App, TemplateID: c.TemplateID, UserID: c.UserID, OpenID: c.OpenID,
		Status: c.Status, Credits: &credits, Source: c.Source}
}

// Filter selects live items: each non-empty field must match.
type Filter struct {
	Rule   string
	Status string
	Person string // a user id or an openid
}

func (f Filter) match(it *LiveItem) bool {
	return (f.Rule == "" || f.Rule == it.Rule) && (f.Status == "" || f.Status == it.Status) &&
		(f.Person == "" || f.Person == it.UserID || f.Person == it.OpenID)
}

// Where the feed found a message.
const (
	kindResult = iota
	kindChange
	kindDead
)

// errUnreadable is a message the model cannot read: counted and skipped.
var errUnreadable = errors.New("unreadable message")

// apply reads one message of the output stream. stored is when the stream
// stored it; live says the feed has caught up, so the item goes to the
// live tail too.
func (m *Model) apply(kind int, h nats.Header, data []byte, stored time.Time, live bool) error {
	switch kind {
	case kindResult:
		var r bridge.Result
		if err := json.Unmarshal(data, &r); err != nil {
			m.unreadable()
			return errUnreadable
		}
		if r.At.IsZero() {
			r.At = stored
		}
		it := m.applyResult(&r)
		if live {
			m.hub.publish(it)
		}
	case kindChange:
		var c bridge.SubscriptionChange
		if err := json.Unmarshal(data, &c); err != nil {
			m.unreadable()
			return errUnreadable
		}
		if c.At.IsZero() {
			c.At = stored
		}
		it := m.applyChange(&c)
		if live {
			m.hub.publish(it)
		}
	case kindDead:
		m.applyDead(DeadLetter{At: stored, Reason: h.Get("Wxbridge-Error"), Subject: h.Get("Wxbridge-Subject"),
			StreamSeq: h.Get("Wxbridge-Stream-Seq"), Truncated: h.Get("Wxbridge-Truncated")})
	}
	return nil
}

func (m *Model) unreadable() {
	m.mu.Lock()
	m.status.Unreadable++
	m.mu.Unlock()
}

func (m *Model) applyResult(r *bridge.Result) LiveItem {
	it := resultItem(r)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status.Results++
	m.results.add(it)
	b := m.bucketAt(r.At)
	if b == nil {
		return it // older than the window
	}
	ok := outcomeKey{Rule: r.Rule, Status: r.Status, Reason: r.Reason, ErrCode: r.ErrCode}
	if _, seen := b.outcomes[ok]; !seen && len(b.outcomes) >= maxOutcomeKeys {
		ok.Rule = otherName
	}
	b.outcomes[ok]++
	tc := b.template(r.App, r.TemplateID)
	switch {
	case r.Status == bridge.StatusSent:
		tc.Sent++
	case r.Status == bridge.StatusSkipped && r.Reason == "not_subscribed":
		tc.NotSubscribed++
	case r.Status == bridge.StatusSkipped && r.Reason == "rejected":
		tc.Rejected++
	case r.Status == bridge.StatusFailed && r.Reason == "not_subscribed":
		tc.FailedNotSubscribed++
	}
	if r.Status == bridge.StatusFailed && ConfigError(r.ErrCode) {
		ck := configKey{Rule: r.Rule, App: r.App, TemplateID: r.TemplateID, ErrCode: r.ErrCode, Field: faultyKeyword(r.ErrCode, r.ErrMsg)}
		if _, seen := b.config[ck]; !seen && len(b.config) >= maxConfigKeys {
			ck = configKey{Rule: otherName, ErrCode: r.ErrCode}
		}
		b.config[ck]++
		if _, seen := m.configLast[ck]; seen || len(m.configLast) < maxConfigKeys {
			m.configLast[ck] = configSeen{At: r.At, ErrMsg: r.ErrMsg, EventID: r.EventID, EventSource: r.EventSource}
		}
	}
	m.people.add(personKey(r.UserID, r.OpenID), *r, &m.status.PeopleForgotten)
	return it
}

// userSources are the ledger sources by which a person gives a credit.
var userSources = map[string]bool{storage.SourcePopup: true, storage.SourceClient: true, storage.SourceChange: true}

func (m *Model) applyChange(c *bridge.SubscriptionChange) LiveItem {
	it := changeItem(c)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status.Changes++
	m.changes.add(it)
	key := holderKey{App: c.App, OpenID: c.OpenID, TemplateID: c.TemplateID}
	prev, had := m.holders[key]
	longTerm := c.Kind == storage.KindLongTerm
	var d TemplateCounts
	switch {
	case c.Status == storage.StatusReject || c.Status == storage.StatusBan:
		d.Rejects = 1
	case c.Status != storage.StatusAccept:
	case c.Source == storage.SourceSend:
		d.Spent = 1
	case c.Source == storage.SourceRefund:
		d.Refunded = 1
	case c.Source == storage.SourceWeChat:
		d.Zeroed = prev.Credits
	case userSources[c.Source] && longTerm:
		if !had {
			d.Accepts, d.Granted = 1, 1
		}
	case userSources[c.Source]:
		// A holder not seen before had nothing: the model keeps every
		// holder it has seen since LedgerLookback (up to MaxHolders).
		if n := c.Credits - prev.Credits; n > 0 {
			d.Accepts, d.Granted = 1, n
		}
	}
	holding := c.Status == storage.StatusAccept && (longTerm || c.Credits > 0)
	switch {
	case !holding:
		delete(m.holders, key)
	case had || len(m.holders) < m.cfg.MaxHolders:
		m.holders[key] = holder{Credits: c.Credits, LongTerm: longTerm, Bound: c.UserID != ""}
	default:
		m.status.HoldersUntracked++
	}
	if b := m.bucketAt(c.At); b != nil && d != (TemplateCounts{}) {
		b.template(c.App, c.TemplateID).add(&d)
	}
	return it
}

func (m *Model) applyDead(d DeadLetter) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status.Dead++
	m.dead.add(d)
	if b := m.bucketAt(d.At); b != nil {
		b.dead++
	}
}

// bucketAt is the bucket counting what happened at t, or nil when t is
// older than the window. A time in the future (a bridge's clock ahead of
// this one) counts now. The caller holds mu.
func (m *Model) bucketAt(t time.Time) *bucket {
	size := int64(m.cfg.Bucket / time.Second)
	now := m.cfg.Now().Unix()
	cur := now - now%size
	start := t.Unix() - t.Unix()%size
	if start > cur {
		start = cur
	}
	n := int64(len(m.buckets))
	if start <= cur-n*size {
		return nil
	}
	b := &m.buckets[(start/size)%n]
	if b.start != start {
		if b.start > start {
			return nil
		}
		*b = bucket{start: start, outcomes: map[outcomeKey]int{}, tmpl: map[tmplKey]*TemplateCounts{}, config: map[configKey]int{}}
	}
	return b
}

func (b *bucket) template(app, id string) *TemplateCounts {
	k := tmplKey{App: app, TemplateID: id}
	tc := b.tmpl[k]
	if tc == nil {
		if len(b.tmpl) >= maxTemplateKeys {
			k = tmplKey{App: otherName, TemplateID: otherName}
			if tc = b.tmpl[k]; tc != nil {
				return tc
			}
		}
		tc = &TemplateCounts{}
		b.tmpl[k] = tc
	}
	return tc
}

// ConfigError says whether a WeChat errcode is the configuration's fault
// (template id, page, data, a banned capability, refused content), the
// same classes the bridge counts in wxbridge_config_errors_total.
func ConfigError(code int) bool {
	if code == 0 {
		return false
	}
	e := &wechat.APIError{Code: code, Path: "/cgi-bin/message/subscribe/send"}
	return errors.Is(e, wechat.ErrConfig) || errors.Is(e, wechat.ErrData)
}

// faultyKeyword is the keyword a 47003 errmsg names ("argument invalid!
// data.thing1.value invalid" names thing1).
func faultyKeyword(code int, msg string) string {
	if code != 47003 {
		return ""
	}
	return (&wechat.APIError{Code: code, Msg: msg}).Field()
}

// personKey is how the model knows a person: by user id, else by openid
// (a recipient named by openid that no user is bound to).
func personKey(userID, openid string) string {
	if userID != "" {
		return "u:" + userID
	}
	return "o:" + openid
}

// people keeps the last results of the most recently active people.
type people struct {
	max, per int
	ll       *list.List // of *person, most recent first
	idx      map[string]*list.Element
}

type person struct {
	key     string
	results []bridge.Result // oldest first, at most per
}

func (p *people) add(key string, r bridge.Result, forgotten *int) {
	if e, ok := p.idx[key]; ok {
		pe := e.Value.(*person)
		if len(pe.results) >= p.per {
			pe.results = slices.Delete(pe.results, 0, len(pe.results)-p.per+1)
		}
		pe.results = append(pe.results, r)
		p.ll.MoveToFront(e)
		return
	}
	if p.ll.Len() >= p.max {
		old := p.ll.Back()
		p.ll.Remove(old)
		delete(p.idx, old.Value.(*person).key)
		*forgotten++
	}
	p.idx[key] = p.ll.PushFront(&person{key: key, results: []bridge.Result{r}})
}

func (p *people) get(key string) []bridge.Result {
	if e, ok := p.idx[key]; ok {
		return e.Value.(*person).results
	}
	return nil
}

// ring keeps the last max items.
type ring[T any] struct {
	max   int
	items []T
	next  int
}

func (r *ring[T]) add(v T) {
	if len(r.items) < r.max {
		r.items = append(r.items, v)
		return
	}
	r.items[r.next] = v
	r.next = (r.next + 1) % r.max
}

// all returns the items oldest first.
func (r *ring[T]) all() []T {
	out := make([]T, 0, len(r.items))
	out = append(out, r.items[r.next:]...)
	return append(out, r.items[:r.next]...)
}

// Queries.

// Outcome is a count of results of one rule, status and reason.
type Outcome struct {
	Rule, Status, Reason string
	ErrCode              int
	Hour, Day            int
}

// ConfigFault is a configuration error WeChat reported: which rule, which
// template and which keyword are at fault.
type ConfigFault struct {
	Rule, App, TemplateID string
	ErrCode               int
	Field                 string
	Hour, Day             int
	Last                  time.Time
	LastMsg               string
	EventID, EventSource  string
}

// TemplateStats are one template's numbers over the window.
type TemplateStats struct {
	App, TemplateID string
	Hour, Day       TemplateCounts
	// Holders hold a credit now (one-time: credits > 0; long-term: an
	// accept), BoundHolders those whose change carried a user id, Credits
	// the one-time credits they hold together.
	Holders, BoundHolders, Credits int
	// Accepts and Rejects per hour of the window, oldest first.
	Accepts, Rejects []int
}

// Snapshot is everything the overview and subscriptions pages show, read
// at one instant.
type Snapshot struct {
	Now      time.Time
	Window   time.Duration
	Outcomes []Outcome
	// Hourly counts results per status per hour of the window, oldest first.
	Hourly      []map[string]int
	HourStarts  []time.Time
	Faults      []ConfigFault
	Templates   []TemplateStats
	DeadHour    int
	DeadDay     int
	DeadLetters []DeadLetter // newest first
	Status      FeedStatus
}

// Snapshot aggregates the buckets.
func (m *Model) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	size := int64(m.cfg.Bucket / time.Second)
	now := m.cfg.Now()
	cur := now.Unix() - now.Unix()%size
	hours := int((m.cfg.Window + time.Hour - 1) / time.Hour)
	s := Snapshot{Now: now, Window: m.cfg.Window, Status: m.status, Hourly: make([]map[string]int, hours), HourStarts: make([]time.Time, hours)}
	// Hour i of the chart ends with bucket cur (i = hours-1).
	perHour := int64(time.Hour / time.Second)
	for i := range s.Hourly {
		s.Hourly[i] = map[string]int{}
		s.HourStarts[i] = time.Unix(cur+size-int64(hours-i)*perHour, 0)
	}
	hourAgo := cur + size - perHour // buckets starting here or later are "the last hour"
	outcomes := map[outcomeKey]*Outcome{}
	faults := map[configKey]*ConfigFault{}
	type tmplAgg struct{ hour, day TemplateCounts }
	tmpls := map[tmplKey]*tmplAgg{}
	accepts := map[tmplKey][]int{}
	rejects := map[tmplKey][]int{}
	n := int64(len(m.buckets))
	for i := range m.buckets {
		b := &m.buckets[i]
		if b.start == 0 || b.start <= cur-n*size || b.start > cur {
			continue
		}
		inHour := b.start >= hourAgo
		hour := hours - 1 - int((cur-b.start)/perHour)
		if hour < 0 {
			hour = 0
		}
		for k, v := range b.outcomes {
			o := outcomes[k]
			if o == nil {
				o = &Outcome{Rule: k.Rule, Status: k.Status, Reason: k.Reason, ErrCode: k.ErrCode}
				outcomes[k] = o
			}
			o.Day += v
			if inHour {
				o.Hour += v
			}
			s.Hourly[hour][k.Status] += v
		}
		for k, v := range b.config {
			f := faults[k]
			if f == nil {
				f = &ConfigFault{Rule: k.Rule, App: k.App, TemplateID: k.TemplateID, ErrCode: k.ErrCode, Field: k.Field}
				if seen, ok := m.configLast[k]; ok {
					f.Last, f.LastMsg, f.EventID, f.EventSource = seen.At, seen.ErrMsg, seen.EventID, seen.EventSource
				}
				faults[k] = f
			}
			f.Day += v
			if inHour {
				f.Hour += v
			}
		}
		for k, v := range b.tmpl {
			a := tmpls[k]
			if a == nil {
				a = &tmplAgg{}
				tmpls[k] = a
				accepts[k], rejects[k] = make([]int, hours), make([]int, hours)
			}
			a.day.add(v)
			if inHour {
				a.hour.add(v)
			}
			accepts[k][hour] += v.Accepts
			rejects[k][hour] += v.Rejects
		}
		s.DeadDay += b.dead
		if inHour {
			s.DeadHour += b.dead
		}
	}
	for _, o := range outcomes {
		s.Outcomes = append(s.Outcomes, *o)
	}
	slices.SortFunc(s.Outcomes, func(a, b Outcome) int {
		return strings.Compare(a.Rule+"\x00"+a.Status+"\x00"+a.Reason+"\x00"+strconv.Itoa(a.ErrCode),
			b.Rule+"\x00"+b.Status+"\x00"+b.Reason+"\x00"+strconv.Itoa(b.ErrCode))
	})
	for _, f := range faults {
		s.Faults = append(s.Faults, *f)
	}
	slices.SortFunc(s.Faults, func(a, b ConfigFault) int { return b.Last.Compare(a.Last) })
	holders := map[tmplKey]*TemplateStats{}
	for k, h := range m.holders {
		tk := tmplKey{App: k.App, TemplateID: k.TemplateID}
		ts := holders[tk]
		if ts == nil {
			ts = &TemplateStats{App: k.App, TemplateID: k.TemplateID}
			holders[tk] = ts
		}
		ts.Holders++
		if h.Bound {
			ts.BoundHolders++
		}
		if !h.LongTerm {
			ts.Credits += h.Credits
		}
	}
	for k, a := range tmpls {
		ts := holders[k]
		if ts == nil {
			ts = &TemplateStats{App: k.App, TemplateID: k.TemplateID}
			holders[k] = ts
		}
		ts.Hour, ts.Day, ts.Accepts, ts.Rejects = a.hour, a.day, accepts[k], rejects[k]
	}
	for _, ts := range holders {
		if ts.Accepts == nil {
			ts.Accepts, ts.Rejects = make([]int, hours), make([]int, hours)
		}
		s.Templates = append(s.Templates, *ts)
	}
	slices.SortFunc(s.Templates, func(a, b TemplateStats) int {
		return strings.Compare(a.App+"\x00"+a.TemplateID, b.App+"\x00"+b.TemplateID)
	})
	s.DeadLetters = m.dead.all()
	slices.Reverse(s.DeadLetters)
	return s
}

// PersonResults are the last results of a person known by userID and/or
// their openids, newest first.
func (m *Model) PersonResults(userID string, openids ...string) []bridge.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []bridge.Result
	if userID != "" {
		out = append(out, m.people.get(personKey(userID, ""))...)
	}
	for _, o := range openids {
		if o != "" {
			out = append(out, m.people.get(personKey("", o))...)
		}
	}
	// Newest first; of two at the same instant, the one read last.
	slices.Reverse(out)
	slices.SortStableFunc(out, func(a, b bridge.Result) int { return b.At.Compare(a.At) })
	return out
}

// Recent are up to n recent items that f selects, oldest first.
func (m *Model) Recent(f Filter, n int) []LiveItem {
	m.mu.Lock()
	all := append(m.results.all(), m.changes.all()...)
	m.mu.Unlock()
	slices.SortStableFunc(all, func(a, b LiveItem) int { return a.At.Compare(b.At) })
	out := all[:0]
	for i := range all {
		if f.match(&all[i]) {
			out = append(out, all[i])
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// Status is how far the model has read the stream.
func (m *Model) Status() FeedStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// LiveClients is how many live tails are open, and how many were dropped
// for falling behind.
func (m *Model) LiveClients() (open, dropped int) { return m.hub.counts() }
