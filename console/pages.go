package console

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wxbridge/wxbridge/bridge"
	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
)

func (c *Console) parsePages() error {
	funcs := template.FuncMap{
		"when":      c.when,
		"ago":       c.ago,
		"eventURL":  eventURL,
		"personURL": func(q string) string { return "/console/person?" + url.Values{"q": {q}}.Encode() },
		"tmplName":  c.templateName,
		"channelOf": c.channelOf,
		"status":    statusClass,
		"span":      span,
		"plural":    plural,
	}
	c.pages = map[string]*template.Template{}
	base, err := template.New("").Funcs(funcs).ParseFS(webFS, "web/layout.html")
	if err != nil {
		return fmt.Errorf("console layout: %w", err)
	}
	for _, name := range pageFiles {
		t, err := template.Must(base.Clone()).ParseFS(webFS, "web/"+name+".html")
		if err != nil {
			return fmt.Errorf("console page %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return nil
}

func (c *Console) when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.In(c.cfg.Location).Format("2006-01-02 15:04:05 MST")
}

func (c *Console) ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := c.cfg.Now().Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h ago"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d ago"
}

// plural counts what: "1 credit", "2 credits".
func plural(n any, what string) string {
	var v int64
	switch n := n.(type) {
	case int:
		v = int64(n)
	case int64:
		v = n
	case *int:
		if n != nil {
			v = int64(*n)
		}
	default:
		return fmt.Sprint(n) + " " + what + "s"
	}
	if v == 1 {
		return "1 " + what
	}
	return strconv.FormatInt(v, 10) + " " + what + "s"
}

// span writes a window as people say it: "24 hours", "7 days".
func span(d time.Duration) string {
	switch {
	case d >= 48*time.Hour && d%(24*time.Hour) == 0:
		return strconv.Itoa(int(d/(24*time.Hour))) + " days"
	case d >= time.Hour && d%time.Hour == 0:
		if d == time.Hour {
			return "hour"
		}
		return strconv.Itoa(int(d/time.Hour)) + " hours"
	}
	return d.String()
}

// eventKeySep joins a CloudEvents source and id in the key the state
// knows an event by (bridge/event.go keySep).
const eventKeySep = "\x1f"

func eventURL(id, source string) string {
	v := url.Values{"id": {id}}
	if source != "" {
		v.Set("source", source)
	}
	return "/console/event?" + v.Encode()
}

// statusClass is the CSS class of a status; unknown ones get none.
func statusClass(s string) string {
	switch s {
	case bridge.StatusSent, bridge.StatusSkipped, bridge.StatusFailed, bridge.StatusDelivered, bridge.StatusUndelivered,
		storage.StateRetry, storage.StatePending, storage.StateDeferred, storage.StatusAccept, storage.StatusReject, storage.StatusBan:
		return "st-" + s
	}
	return ""
}

// templateName is a template's name in the rules in force, or its id.
func (c *Console) templateName(app, id string) string {
	if t := c.template(app, id); t != nil {
		return t.Name
	}
	return id
}

// channelOf is how a template of the rules in force sends
// (rules.ChannelSubscribeMessage...), "" for one they do not have.
func (c *Console) channelOf(app, id string) string {
	if t := c.template(app, id); t != nil {
		return t.Channel()
	}
	return ""
}

func (c *Console) template(app, id string) *rules.Template {
	set := c.cfg.Rules.State().Set
	if set == nil {
		return nil
	}
	for _, t := range set.Templates {
		if t.App == app && t.ID == id {
			return t
		}
	}
	return nil
}

// The overview.

var statusSeries = []series{
	{Name: "sent", Class: "st-sent"}, {Name: "delivered", Class: "st-delivered"}, {Name: "skipped", Class: "st-skipped"},
	{Name: "failed", Class: "st-failed"}, {Name: "undelivered", Class: "st-undelivered"},
}

type overviewView struct {
	Snap         Snapshot
	Rules        []ruleOutcomes
	Chart        template.HTML
	Legend       template.HTML
	Faults       []faultView
	Credits      []TemplateStats
	InFlight     *InFlight
	Backlog      *backlog
	LiveOpen     int
	LiveDropped  int
	WindowHours  int
	HoursInChart int
}

type ruleOutcomes struct {
	Rule      string
	Hour, Day int
	Rows      []Outcome
}

type faultView struct {
	ConfigFault
	Template string
	Keyword  string // for 47003: "thing1 (Buyer)"
	What     string
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, _ session) {
	snap := c.cfg.Model.Snapshot()
	v := overviewView{Snap: snap, WindowHours: int(snap.Window / time.Hour), HoursInChart: len(snap.Hourly)}
	byRule := map[string]*ruleOutcomes{}
	for _, o := range snap.Outcomes {
		ro := byRule[o.Rule]
		if ro == nil {
			ro = &ruleOutcomes{Rule: o.Rule}
			byRule[o.Rule] = ro
		}
		ro.Hour += o.Hour
		ro.Day += o.Day
		ro.Rows = append(ro.Rows, o)
	}
	for _, ro := range byRule {
		v.Rules = append(v.Rules, *ro)
	}
	slices.SortFunc(v.Rules, func(a, b ruleOutcomes) int { return strings.Compare(a.Rule, b.Rule) })

	labels := make([]string, len(snap.HourStarts))
	for i, t := range snap.HourStarts {
		labels[i] = t.In(c.cfg.Location).Format("15:04")
	}
	ss := slices.Clone(statusSeries)
	for i := range ss {
		ss[i].Values = make([]int, len(snap.Hourly))
		for h, m := range snap.Hourly {
			ss[i].Values[h] = m[ss[i].Name]
		}
	}
	v.Chart, v.Legend = barChart(labels, ss, 760, 170), legend(ss)

	for _, f := range snap.Faults {
		fv := faultView{ConfigFault: f, Template: c.templateName(f.App, f.TemplateID), What: explainCode(f.ErrCode)}
		if f.Field != "" {
			fv.Keyword = f.Field
			if t := c.template(f.App, f.TemplateID); t != nil && t.Label(f.Field) != f.Field {
				fv.Keyword += " (" + t.Label(f.Field) + ")"
			}
		}
		v.Faults = append(v.Faults, fv)
	}
	v.Credits = snap.Templates
	if c.cfg.InFlight != nil {
		in := c.cfg.InFlight()
		v.InFlight = &in
	}
	v.Backlog = c.backlog(r.Context())
	v.LiveOpen, v.LiveDropped = c.cfg.Model.LiveClients()
	c.render(w, r, http.StatusOK, "overview", page{Title: "Overview", Active: "overview", Data: v})
}

// explainCode says what a configuration errcode asks the operator to fix.
func explainCode(code int) string {
	switch code {
	case 40037:
		return "WeChat does not know this template id: compare the template's id in the rules with the mini program's template list (wxbridge rules check --remote)."
	case 41030:
		return "The page does not exist in the released mini program: fix the rule's page, or release the page first."
	case 43107:
		return "WeChat has withdrawn the right to send this template (or any subscribe message) from the app."
	case 47003:
		return "WeChat refused a keyword's value (empty, too long, or not of its type): fix the rule's data for that keyword."
	case 45168:
		return "WeChat found sensitive words in the message."
	}
	return "WeChat refused the request for a reason in the configuration (template, page, data or the app's credentials)."
}

// The person page.

type personView struct {
	Query      string
	Searched   bool
	UserID     string
	Candidates []string // several users carry the unionid searched for
	Bindings   []bindingView
	// Accounts are the person's relations to the official accounts of the
	// rules in force, as the bridge finds them.
	Accounts  []accountView
	Roles     []storage.RoleGrant
	Results   []bridge.Result
	InStore   bool
	MaxPeople int
	Window    time.Duration
	Err       string
}

type bindingView struct {
	storage.Binding
	Subscriptions []subscriptionView
}

type subscriptionView struct {
	storage.Subscription
	Template string
}

// accountView is one way the person is known in an official account: by
// their binding in it, or by a unionid of their bindings (what
// bridge/channels.go reach reads, in that order).
type accountView struct {
	App string
	// By says how: "binding" (their binding in the account) or "unionid".
	By, UnionID, From string // From: the app of the binding carrying UnionID
	OpenID            string // their openid in the account, when known
	Known, Following  bool   // a follower record exists, and says they follow
	Source            string
	UpdatedAt         time.Time
	// Reason is why no message of the account can reach them (no_unionid,
	// not_bound), "" when there is a way.
	Reason string
	// Subscriptions are their ledger in the account (subscription
	// notifications), for an openid found by unionid: the binding's are
	// shown with the bindings.
	Subscriptions []subscriptionView
}

// person finds someone by user id, openid or unionid and shows what the
// state and the stream say about them.
func (c *Console) person(w http.ResponseWriter, r *http.Request, _ session) {
	ctx := r.Context()
	st := c.cfg.Store
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	v := personView{Query: q, Searched: q != "", MaxPeople: c.cfg.Model.cfg.MaxPeople, Window: c.cfg.Model.cfg.Window}
	if q == "" {
		c.render(w, r, http.StatusOK, "person", page{Title: "Person", Active: "person", Data: v})
		return
	}
	fail := func(what string, err error) {
		v.Err = what + ": " + err.Error()
		c.render(w, r, http.StatusInternalServerError, "person", page{Title: "Person", Active: "person", Data: v})
	}
	userID, err := c.findUser(r, q, &v)
	if err != nil {
		fail("search", err)
		return
	}
	var openids []string
	if userID != "" {
		v.UserID = userID
		bindings, err := st.Bindings(ctx, userID)
		if err != nil {
			fail("read bindings of "+userID, err)
			return
		}
		if v.Roles, err = st.UserRoles(ctx, userID); err != nil {
			fail("read roles of "+userID, err)
			return
		}
		v.InStore = len(bindings) > 0 || len(v.Roles) > 0
		for _, b := range bindings {
			subs, err := st.Subscriptions(ctx, b.App, b.OpenID)
			if err != nil {
				fail("read the ledger of "+b.OpenID, err)
				return
			}
			bv := bindingView{Binding: b}
			for _, s := range subs {
				bv.Subscriptions = append(bv.Subscriptions, subscriptionView{Subscription: s, Template: c.templateName(b.App, s.TemplateID)})
			}
			v.Bindings = append(v.Bindings, bv)
			openids = append(openids, b.OpenID)
		}
		if v.Accounts, err = c.accounts(ctx, bindings); err != nil {
			fail("read the followers of "+userID, err)
			return
		}
		for _, a := range v.Accounts {
			if a.By == "unionid" && a.OpenID != "" {
				openids = append(openids, a.OpenID)
			}
		}
	} else if len(v.Candidates) == 0 {
		// Not in the state: maybe someone the stream knows (a recipient
		// never bound, or named by openid).
		v.UserID = q
		openids = []string{q}
	}
	if len(v.Candidates) == 0 {
		v.Results = c.cfg.Model.PersonResults(v.UserID, openids...)
	}
	c.render(w, r, http.StatusOK, "person", page{Title: "Person " + q, Active: "person", Data: v})
}

// officialAccounts are the names of the rules' official accounts, sorted.
func (c *Console) officialAccounts() []string {
	set := c.cfg.Rules.State().Set
	if set == nil {
		return nil
	}
	var out []string
	for name, a := range set.Apps {
		if a.Kind == rules.AppOfficialAccount {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// accounts says how the person with these bindings is known in each
// official account: their binding there, and each unionid their bindings
// carry looked up among the account's followers. A unionid wxbridge has
// not seen as a follower is shown as not known: the bridge would list the
// account's followers before giving up on it, which a page must not do.
func (c *Console) accounts(ctx context.Context, bindings []storage.Binding) ([]accountView, error) {
	st := c.cfg.Store
	var out []accountView
	for _, app := range c.officialAccounts() {
		n := len(out)
		var unionids []storage.Binding
		seen := map[string]bool{}
		for _, b := range bindings {
			if b.App == app {
				a := accountView{App: app, By: "binding", OpenID: b.OpenID}
				f, ok, err := st.Follower(ctx, app, b.OpenID)
				if err != nil {
					return nil, fmt.Errorf("follower %s of %s: %w", b.OpenID, app, err)
				}
				if ok {
					a.Known, a.Following, a.Source, a.UpdatedAt = true, f.Following, f.Source, f.UpdatedAt
				}
				out = append(out, a)
			}
			if b.UnionID != "" && !seen[b.UnionID] {
				seen[b.UnionID] = true
				unionids = append(unionids, b)
			}
		}
		for _, b := range unionids {
			a := accountView{App: app, By: "unionid", UnionID: b.UnionID, From: b.App}
			f, ok, err := st.FollowerByUnionID(ctx, app, b.UnionID)
			if err != nil {
				return nil, fmt.Errorf("follower with unionid %s in %s: %w", b.UnionID, app, err)
			}
			if ok {
				a.OpenID, a.Known, a.Following, a.Source, a.UpdatedAt = f.OpenID, true, f.Following, f.Source, f.UpdatedAt
				subs, err := st.Subscriptions(ctx, app, f.OpenID)
				if err != nil {
					return nil, fmt.Errorf("ledger of %s in %s: %w", f.OpenID, app, err)
				}
				for _, s := range subs {
					a.Subscriptions = append(a.Subscriptions, subscriptionView{Subscription: s, Template: c.templateName(app, s.TemplateID)})
				}
			}
			out = append(out, a)
		}
		if len(out) == n {
			// Neither a binding in the account nor a unionid to find them by.
			reason := "no_unionid"
			if len(bindings) == 0 {
				reason = "not_bound"
			}
			out = append(out, accountView{App: app, Reason: reason})
		}
	}
	return out, nil
}

// findUser is the user q names: a user id with bindings or roles, an
// openid bound in one of the apps, a unionid (several users may carry
// one: they are listed as candidates), or the openid of a follower of an
// official account whose unionid a binding carries.
func (c *Console) findUser(r *http.Request, q string, v *personView) (string, error) {
	ctx := r.Context()
	st := c.cfg.Store
	if b, err := st.Bindings(ctx, q); err != nil {
		return "", err
	} else if len(b) > 0 {
		return q, nil
	}
	if g, err := st.UserRoles(ctx, q); err != nil {
		return "", err
	} else if len(g) > 0 {
		return q, nil
	}
	if set := c.cfg.Rules.State().Set; set != nil {
		apps := make([]string, 0, len(set.Apps))
		for name := range set.Apps {
			apps = append(apps, name)
		}
		slices.Sort(apps)
		for _, app := range apps {
			user, ok, err := st.UserByOpenID(ctx, app, q)
			if err != nil {
				return "", err
			}
			if ok {
				return user, nil
			}
		}
	}
	bindings, err := st.BindingsByUnionID(ctx, q)
	if err != nil {
		return "", err
	}
	for _, app := range c.officialAccounts() {
		if len(bindings) > 0 {
			break
		}
		f, ok, err := st.Follower(ctx, app, q)
		if err != nil {
			return "", err
		}
		if ok && f.UnionID != "" {
			if bindings, err = st.BindingsByUnionID(ctx, f.UnionID); err != nil {
				return "", err
			}
		}
	}
	users := map[string]bool{}
	for _, b := range bindings {
		users[b.UserID] = true
	}
	switch len(users) {
	case 0:
		return "", nil
	case 1:
		return bindings[0].UserID, nil
	}
	for u := range users {
		v.Candidates = append(v.Candidates, u)
	}
	slices.Sort(v.Candidates)
	return "", nil
}

// The event page.

type eventView struct {
	ID, Source string
	Asked      bool
	Found      bool
	Done       bool
	DoneAt     time.Time
	Type       string
	Rows       []eventRow
	Err        string
}

type eventRow struct {
	storage.SendRecord
	Template string
	Channel  string // how the template sends, "" when the rules no longer have it
	Final    bool
}

func (c *Console) event(w http.ResponseWriter, r *http.Request, _ session) {
	q := r.URL.Query()
	v := eventView{ID: strings.TrimSpace(q.Get("id")), Source: strings.TrimSpace(q.Get("source"))}
	if v.ID == "" {
		c.render(w, r, http.StatusOK, "event", page{Title: "Event", Active: "event", Data: v})
		return
	}
	v.Asked = true
	key := v.ID
	if v.Source != "" {
		key = v.Source + eventKeySep + v.ID
	}
	recs, err := c.cfg.Store.EventSends(r.Context(), key)
	if err != nil {
		v.Err = err.Error()
		c.render(w, r, http.StatusInternalServerError, "event", page{Title: "Event", Active: "event", Data: v})
		return
	}
	done, isDone, err := c.cfg.Store.EventDone(r.Context(), key)
	if err != nil {
		v.Err = err.Error()
		c.render(w, r, http.StatusInternalServerError, "event", page{Title: "Event", Active: "event", Data: v})
		return
	}
	v.Done, v.DoneAt, v.Type = isDone, done.DoneAt, done.Type
	v.Found = isDone || len(recs) > 0
	for _, rec := range recs {
		if v.Type == "" {
			v.Type = rec.EventType
		}
		v.Rows = append(v.Rows, eventRow{SendRecord: rec, Template: c.templateName(rec.App, rec.TemplateID),
			Channel: c.channelOf(rec.App, rec.TemplateID), Final: storage.Final(rec.State)})
	}
	slices.SortFunc(v.Rows, func(a, b eventRow) int { return strings.Compare(a.Rule+"\x00"+a.Key, b.Rule+"\x00"+b.Key) })
	status := http.StatusOK
	if !v.Found {
		status = http.StatusNotFound
	}
	c.render(w, r, status, "event", page{Title: "Event " + v.ID, Active: "event", Data: v})
}

// The subscriptions page.

type subscriptionsView struct {
	Templates   []templateHealth
	Status      FeedStatus
	MaxHolders  int
	Lookback    time.Duration
	WindowHours int
}

type templateHealth struct {
	TemplateStats
	Name, Kind string
	Chart      template.HTML
	Legend     template.HTML
}

func (c *Console) subscriptions(w http.ResponseWriter, r *http.Request, _ session) {
	snap := c.cfg.Model.Snapshot()
	v := subscriptionsView{Status: snap.Status, MaxHolders: c.cfg.Model.cfg.MaxHolders, Lookback: c.cfg.Model.cfg.LedgerLookback,
		WindowHours: int(snap.Window / time.Hour)}
	seen := map[tmplKey]bool{}
	labels := make([]string, len(snap.HourStarts))
	for i, t := range snap.HourStarts {
		labels[i] = t.In(c.cfg.Location).Format("15:04")
	}
	add := func(ts TemplateStats) {
		th := templateHealth{TemplateStats: ts, Name: ts.TemplateID}
		if t := c.template(ts.App, ts.TemplateID); t != nil {
			th.Name, th.Kind = t.Name, t.Kind
		}
		ss := []series{{Name: "accepts", Class: "st-accept", Values: ts.Accepts}, {Name: "rejects", Class: "st-reject", Values: ts.Rejects}}
		th.Chart, th.Legend = barChart(labels, ss, 480, 110), legend(ss)
		v.Templates = append(v.Templates, th)
	}
	for _, ts := range snap.Templates {
		seen[tmplKey{App: ts.App, TemplateID: ts.TemplateID}] = true
		add(ts)
	}
	// Templates in the rules that nothing happened to are worth seeing too:
	// nobody holds a credit for them.
	if set := c.cfg.Rules.State().Set; set != nil {
		for _, t := range set.Templates {
			if !seen[tmplKey{App: t.App, TemplateID: t.ID}] {
				add(TemplateStats{App: t.App, TemplateID: t.ID, Accepts: make([]int, len(labels)), Rejects: make([]int, len(labels))})
			}
		}
	}
	slices.SortFunc(v.Templates, func(a, b templateHealth) int { return strings.Compare(a.Name, b.Name) })
	c.render(w, r, http.StatusOK, "subscriptions", page{Title: "Subscriptions", Active: "subscriptions", Data: v})
}
