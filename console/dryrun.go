package console

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
)

// Dry run limits.
const (
	maxEventForm        = 1 << 20 // bytes of a pasted event
	maxDryRunRecipients = 100     // rows per rule; the rest are counted
)

type rulesView struct {
	State     RulesState
	Apps      []appView
	Templates []*rules.Template
	Rules     []*rules.Rule
	Types     []string // event types the rules name exactly, to pick from
	// The dry run form and its outcome.
	Type, Event string
	Picked      string // what was loaded into the form
	Run         *dryRun
}

// appView is what the console shows of an app: never its secrets.
type appView struct {
	Name, Kind, AppID, State, Lang, Subscriptions, TimeZone string
	Encrypted                                               bool // it has an AES key (safe mode pushes)
}

func (c *Console) rulesView() rulesView {
	st := c.cfg.Rules.State()
	v := rulesView{State: st}
	if st.Set == nil {
		return v
	}
	for _, a := range st.Set.Apps {
		v.Apps = append(v.Apps, appView{Name: a.Name, Kind: a.Kind, AppID: a.AppID, State: a.State, Lang: a.Lang, Subscriptions: a.Subscriptions,
			TimeZone: a.TimeZone, Encrypted: a.AESKey != ""})
	}
	slices.SortFunc(v.Apps, func(a, b appView) int { return strings.Compare(a.Name, b.Name) })
	for _, t := range st.Set.Templates {
		v.Templates = append(v.Templates, t)
	}
	slices.SortFunc(v.Templates, func(a, b *rules.Template) int { return strings.Compare(a.Name, b.Name) })
	v.Rules = st.Set.Rules
	seen := map[string]bool{}
	for _, r := range st.Set.Rules {
		for _, on := range r.On {
			if !strings.ContainsAny(on, "*>") && !seen[on] {
				seen[on] = true
				v.Types = append(v.Types, on)
			}
		}
	}
	slices.Sort(v.Types)
	return v
}

// rulesPage shows the rules in force and the dry run form; ?pick=TYPE
// loads the latest event of that type from the event stream into it.
func (c *Console) rulesPage(w http.ResponseWriter, r *http.Request, _ session) {
	v := c.rulesView()
	if typ := r.URL.Query().Get("pick"); typ != "" {
		v.Type = typ
		body, err := c.latestEvent(r.Context(), typ)
		if err != nil {
			v.Picked = err.Error()
		} else {
			v.Event, v.Picked = string(body), "the latest "+typ+" event in stream "+c.cfg.EventStream
		}
	}
	c.render(w, r, http.StatusOK, "rules", page{Title: "Rules", Active: "rules", Data: v})
}

// dryRunPage runs the pasted event through the rules in force.
func (c *Console) dryRunPage(w http.ResponseWriter, r *http.Request, _ session) {
	r.Body = http.MaxBytesReader(w, r.Body, maxEventForm)
	v := c.rulesView()
	v.Type, v.Event = strings.TrimSpace(r.PostFormValue("type")), r.PostFormValue("event")
	if v.State.Set == nil {
		c.fail(w, r, http.StatusServiceUnavailable, "No rules are in force yet.")
		return
	}
	run := &dryRun{}
	v.Run = run
	ev, err := parseEvent([]byte(v.Event), v.Type, c.cfg.Now())
	if err != nil {
		run.Err = err.Error()
		c.render(w, r, http.StatusUnprocessableEntity, "rules", page{Title: "Rules", Active: "rules", Data: v})
		return
	}
	if err := c.dryRun(r.Context(), v.State.Set, ev, run); err != nil {
		run.Err = err.Error()
		c.render(w, r, http.StatusInternalServerError, "rules", page{Title: "Rules", Active: "rules", Data: v})
		return
	}
	c.render(w, r, http.StatusOK, "rules", page{Title: "Rules", Active: "rules", Data: v})
}

// dryRun is what the rules would do with an event.
type dryRun struct {
	Err   string
	Event *rules.Event
	Rules []ruleRun
}

type ruleRun struct {
	Rule *rules.Rule
	// Problem: the rule cannot be rendered for this event, and every
	// recipient fails. A channel of several that cannot be rendered fails
	// only the recipients it reaches: its card says so.
	Problem string
	// Cards are the rule's messages, one per channel in the order they are
	// tried, as `wxbridge rules render` numbers them.
	Cards          []*card
	CardText       string // the same cards as `wxbridge rules render` draws them
	Quiet          string
	Notes          []string
	Recipients     []recipientRun
	MoreRecipients int
}

// Several reports whether the rule has more than one channel (via).
func (rr ruleRun) Several() bool { return len(rr.Cards) > 1 }

// maxCardGets bounds the recipients a card lists as getting it; the rest
// are counted.
const maxCardGets = 10

// card is the message WeChat would show for one channel of a rule.
type card struct {
	Index    int // 1-based: the order the channel is tried in
	Template string
	App      string
	Channel  string // rules.ChannelSubscribeMessage...
	Title    string
	Keywords []cardKeyword
	// Page is the Mini Program page the card opens: a subscribe message's,
	// or for an official account's card the page of the Mini Program Opens
	// names. URL is the web page an official account's card opens.
	Page, PageErr string
	Opens         string
	URL, URLErr   string
	// Problem is why this channel's message cannot be rendered: every
	// recipient it would reach fails with invalid_data.
	Problem string
	// Gets are the recipients that would get this card (up to
	// maxCardGets), GetsMore how many more.
	Gets     []string
	GetsMore int
}

type cardKeyword struct {
	Key, Label, Type string
	Raw, Value       string
	Err              string
}

// recipientRun is what would happen to one recipient.
type recipientRun struct {
	Spec   string // the recipient spec it came from
	UserID string
	// OpenID is the openid the message would go to, in By's app; else the
	// recipient's openid in the first channel's app, if known.
	OpenID  string
	Verdict string // send, skip or fail
	Reason  string // as a result would say it: not_bound, not_subscribed...
	// Detail says why; a recipient no channel of several reaches has, as
	// the result's errmsg would, every channel's reason.
	Detail string
	// By is the channel that decides: the one the message would go by (or
	// fail, or wait for the end of quiet hours on). Nil when none does.
	By *channelRun
	// Tried are the channels judged, in order, By last when set.
	Tried []channelRun
}

// channelRun is what one channel would do for a recipient.
type channelRun struct {
	Index    int // the channel's card
	Template string
	App      string
	Channel  string
	OpenID   string // the recipient's openid in App, when known
	Verdict  string
	Reason   string
	Detail   string
}

// channelPlan is one channel of a rule for one event: what bridge/channels.go
// calls a route.
type channelPlan struct {
	index     int
	tpl       *rules.Template
	app       *rules.App
	renderErr error // the event cannot be rendered for this channel
}

// renderErr is the error RenderFor would meet for the channel, in its
// order: a subscribe message's page, else the web page and the page of
// the Mini Program the card opens; then the keywords in template order.
func renderErr(cp rules.ChannelPreview) error {
	if cp.Template.Channel() != rules.ChannelSubscribeMessage && cp.URLErr != nil {
		return cp.URLErr
	}
	if cp.PageErr != nil {
		return cp.PageErr
	}
	for _, k := range cp.Keywords {
		if k.Err != nil {
			return k.Err
		}
	}
	return nil
}

// cardOf draws one channel's preview as the card WeChat shows: the one
// place that knows how a preview becomes a card.
func cardOf(cp rules.ChannelPreview, i int) *card {
	t := cp.Template
	cd := &card{Index: i + 1, Template: t.Name, App: t.App, Channel: t.Channel(), Title: t.Title, Page: cp.Page, URL: cp.URL}
	if cd.Title == "" {
		cd.Title = t.Name
	}
	if cd.Channel != rules.ChannelSubscribeMessage {
		cd.Opens = t.Opens
	}
	if cp.PageErr != nil {
		cd.PageErr = rules.ReasonOf(cp.PageErr)
	}
	if cp.URLErr != nil {
		cd.URLErr = rules.ReasonOf(cp.URLErr)
	}
	for _, k := range cp.Keywords {
		kw := cardKeyword{Key: k.Key, Label: t.Label(k.Key), Type: k.Type, Raw: k.Raw, Value: k.Value}
		if k.Err != nil {
			kw.Err = rules.ReasonOf(k.Err)
		}
		cd.Keywords = append(cd.Keywords, kw)
	}
	if err := renderErr(cp); err != nil {
		cd.Problem = err.Error()
	}
	return cd
}

// dryRun follows the bridge's steps for each matching rule and recipient
// (bridge/handle.go plan, bridge/send.go deliverTo, bridge/channels.go
// reach) with reads only: the condition, the recipients, rendering, each
// channel in order (the binding, or the follower found by unionid in an
// official account), quiet hours now, the ledger. Dedupe windows and
// frequency caps are not checked, nor what WeChat itself would answer.
func (c *Console) dryRun(ctx context.Context, set *rules.Set, ev *rules.Event, run *dryRun) error {
	run.Event = ev
	for _, m := range set.Match(ev) {
		rr := ruleRun{Rule: m.Rule}
		if m.Err != nil {
			rr.Problem = "when: " + rules.ReasonOf(m.Err)
			rr.Recipients = []recipientRun{{Spec: "when", Verdict: "fail", Reason: "invalid_data", Detail: rr.Problem}}
			run.Rules = append(run.Rules, rr)
			continue
		}
		p := m.Rule.Preview(ev)
		rr.CardText = p.Card()
		plans := make([]channelPlan, len(p.Channels))
		for i, cp := range p.Channels {
			rr.Cards = append(rr.Cards, cardOf(cp, i))
			plans[i] = channelPlan{index: i + 1, tpl: cp.Template, app: cp.Template.Application(), renderErr: renderErr(cp)}
		}
		var dedupeErr error
		if m.Rule.Policy.Dedupe != nil {
			dedupeErr = p.DedupeErr
		}
		switch {
		case p.RecipientsErr != nil:
			rr.Problem = p.RecipientsErr.Error()
		case len(plans) == 1 && plans[0].renderErr != nil:
			rr.Problem = plans[0].renderErr.Error()
		case dedupeErr != nil:
			rr.Problem = dedupeErr.Error()
		}
		if err := c.dryRunRecipients(ctx, m.Rule, p, plans, dedupeErr, &rr); err != nil {
			return err
		}
		run.Rules = append(run.Rules, rr)
	}
	return nil
}

func (c *Console) dryRunRecipients(ctx context.Context, r *rules.Rule, p *rules.Preview, plans []channelPlan, dedupeErr error, rr *ruleRun) error {
	if p.RecipientsErr != nil {
		rr.Recipients = []recipientRun{{Spec: "to", Verdict: "fail", Reason: "invalid_data", Detail: p.RecipientsErr.Error()}}
		return nil
	}
	now := c.cfg.Now()
	if q := r.Policy.QuietHours; q != nil {
		if quiet, end := q.Check(now); quiet {
			if q.Action == rules.QuietDrop {
				rr.Quiet = "now is inside quiet hours (" + q.String() + "): dropped"
			} else {
				rr.Quiet = "now is inside quiet hours (" + q.String() + "): deferred to " + c.when(end)
			}
		}
	}
	if r.Policy.Dedupe != nil || r.Policy.Cap != nil {
		rr.Notes = append(rr.Notes, "dedupe windows and frequency caps are not checked by a dry run")
	}
	if len(plans) > 1 {
		rr.Notes = append(rr.Notes, "a channel WeChat refuses (43101 no subscription, 43004 not following) passes the recipient to the next; a dry run cannot know")
	}
	seen := map[string]bool{}
	add := func(run recipientRun) {
		k := "u:" + run.UserID + "\x00o:" + run.OpenID + "\x00" + run.Spec
		if run.UserID != "" || run.OpenID != "" {
			k = "u:" + run.UserID + "\x00o:" + run.OpenID
		}
		if seen[k] {
			return
		}
		seen[k] = true
		if len(rr.Recipients) >= maxDryRunRecipients {
			rr.MoreRecipients++
			return
		}
		rr.Recipients = append(rr.Recipients, run)
	}
	for _, rc := range p.Recipients {
		switch {
		case rc.UserID != "":
			add(recipientRun{Spec: rc.String(), UserID: rc.UserID})
		case rc.OpenID != "":
			add(recipientRun{Spec: rc.String(), OpenID: rc.OpenID})
		case rc.Role != "":
			members, err := c.cfg.Store.RoleMembers(ctx, rc.Role, rc.Scope)
			if err != nil {
				return fmt.Errorf("members of role %s in %s: %w", rc.Role, rc.Scope, err)
			}
			if len(members) == 0 {
				add(recipientRun{Spec: rc.String(), Verdict: "skip", Reason: "no_recipient", Detail: "nobody holds this role"})
			}
			for _, mb := range members {
				add(recipientRun{Spec: rc.String(), UserID: mb.UserID})
			}
		default:
			add(recipientRun{Spec: rc.String(), Verdict: "skip", Reason: "no_recipient", Detail: rc.Field + " named nobody for this event"})
		}
	}
	for i := range rr.Recipients {
		run := &rr.Recipients[i]
		if run.Verdict != "" {
			continue
		}
		if err := c.judge(ctx, r, plans, dedupeErr, run, rr.Quiet); err != nil {
			return err
		}
		if run.Verdict == "send" && run.By != nil {
			cd := rr.Cards[run.By.Index-1]
			who := run.UserID
			if who == "" {
				who = run.OpenID
			}
			if len(cd.Gets) < maxCardGets {
				cd.Gets = append(cd.Gets, who)
			} else {
				cd.GetsMore++
			}
		}
	}
	return nil
}

// judge decides what would happen to one recipient: bridge/send.go
// deliverTo, channel by channel.
func (c *Console) judge(ctx context.Context, r *rules.Rule, plans []channelPlan, dedupeErr error, run *recipientRun, quiet string) error {
	st := c.cfg.Store
	named := run.OpenID
	if named != "" {
		// An openid is one app's: the rule's first.
		plans = plans[:1]
		if run.UserID == "" {
			u, ok, err := st.UserByOpenID(ctx, r.App.Name, named)
			if err != nil {
				return fmt.Errorf("user of %s in %s: %w", named, r.App.Name, err)
			}
			if ok {
				run.UserID = u
			}
		}
	}
	decide := func(cr channelRun, verdict, reason, detail string) {
		cr.Verdict, cr.Reason, cr.Detail = verdict, reason, detail
		run.Tried = append(run.Tried, cr)
		run.By = &run.Tried[len(run.Tried)-1]
		run.Verdict, run.Reason, run.Detail = verdict, reason, detail
		if cr.OpenID != "" {
			run.OpenID = cr.OpenID
		}
	}
	if len(plans) == 1 && plans[0].renderErr != nil {
		decide(channelRunOf(plans[0], named), "fail", "invalid_data", plans[0].renderErr.Error())
		return nil
	}
	if dedupeErr != nil {
		run.Verdict, run.Reason, run.Detail = "fail", "invalid_data", dedupeErr.Error()
		return nil
	}
	for _, pl := range plans {
		cr := channelRunOf(pl, named)
		openid, reason, detail, err := c.reach(ctx, r, pl, run.UserID, named)
		if err != nil {
			return err
		}
		if reason != "" {
			cr.Verdict, cr.Reason, cr.Detail = "skip", reason, detail
			run.Tried = append(run.Tried, cr)
			continue
		}
		cr.OpenID = openid
		if pl.renderErr != nil {
			decide(cr, "fail", "invalid_data", pl.renderErr.Error())
			return nil
		}
		if quiet != "" {
			decide(cr, "skip", "quiet_hours", quiet)
			return nil
		}
		ok, reason, credit, err := c.credit(ctx, pl, openid)
		if err != nil {
			return err
		}
		detail = joinDetail(detail, credit)
		if !ok {
			cr.Verdict, cr.Reason, cr.Detail = "skip", reason, detail
			run.Tried = append(run.Tried, cr)
			continue
		}
		decide(cr, "send", "", detail)
		return nil
	}
	// None reaches the recipient: skipped with the first channel's reason,
	// and every channel's in the detail as the result's errmsg has them.
	first := run.Tried[0]
	run.Verdict, run.Reason, run.Detail = "skip", first.Reason, first.Detail
	if first.OpenID != "" && run.OpenID == "" {
		run.OpenID = first.OpenID
	}
	if len(run.Tried) > 1 {
		parts := make([]string, len(run.Tried))
		for i, t := range run.Tried {
			parts[i] = t.Template + ": " + t.Reason
		}
		run.Detail = strings.Join(parts, "; ")
	}
	return nil
}

func channelRunOf(pl channelPlan, openid string) channelRun {
	return channelRun{Index: pl.index, Template: pl.tpl.Name, App: pl.app.Name, Channel: pl.tpl.Channel(), OpenID: openid}
}

func joinDetail(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// reach finds the recipient's openid in the channel's app, or the reason
// it has none, as bridge/channels.go reach does, with reads only: where
// the bridge would list an official account's followers (a unionid it has
// not seen), the dry run says so and counts the person as not following.
func (c *Console) reach(ctx context.Context, r *rules.Rule, pl channelPlan, userID, named string) (openid, reason, detail string, err error) {
	st := c.cfg.Store
	app := pl.app.Name
	if named != "" {
		return named, "", "", nil
	}
	if pl.app.Kind != rules.AppOfficialAccount {
		b, ok, err := st.Binding(ctx, app, userID)
		if err != nil {
			return "", "", "", fmt.Errorf("binding of %s in %s: %w", userID, app, err)
		}
		if !ok {
			return "", "not_bound", "no openid bound in app " + app, nil
		}
		return b.OpenID, "", "", nil
	}
	tm := pl.tpl.Channel() == rules.ChannelTemplateMessage
	// A binding in the account itself is used first...
	own, bound, err := st.Binding(ctx, app, userID)
	if err != nil {
		return "", "", "", fmt.Errorf("binding of %s in %s: %w", userID, app, err)
	}
	if bound {
		if !tm {
			return own.OpenID, "", "bound in " + app, nil
		}
		f, known, err := st.Follower(ctx, app, own.OpenID)
		if err != nil {
			return "", "", "", fmt.Errorf("follower %s of %s: %w", own.OpenID, app, err)
		}
		switch {
		case !known:
			return own.OpenID, "", "bound in " + app + "; not known as a follower: WeChat decides", nil
		case !f.Following:
			return "", "not_following", "bound in " + app + ", and unfollowed it " + c.followSeen(f), nil
		}
		return own.OpenID, "", "bound in " + app + ", follows it", nil
	}
	// ...else the person is found by a unionid: the one of their binding
	// in the rule's first app (the bridge's lookup), else any.
	unionid, from := "", ""
	if b, ok, err := st.Binding(ctx, r.App.Name, userID); err != nil {
		return "", "", "", fmt.Errorf("binding of %s in %s: %w", userID, r.App.Name, err)
	} else if ok && b.UnionID != "" {
		unionid, from = b.UnionID, b.App
	}
	if unionid == "" {
		all, err := st.Bindings(ctx, userID)
		if err != nil {
			return "", "", "", fmt.Errorf("bindings of %s: %w", userID, err)
		}
		if len(all) == 0 {
			return "", "not_bound", "no binding in any app: nothing to find them in " + app + " by", nil
		}
		for _, b := range all {
			if b.UnionID != "" {
				unionid, from = b.UnionID, b.App
				break
			}
		}
		if unionid == "" {
			return "", "no_unionid", fmt.Sprintf("none of their %s carries a unionid to find them in %s by", plural(len(all), "binding"), app), nil
		}
	}
	by := "unionid " + unionid + " (bound in " + from + ")"
	f, ok, err := st.FollowerByUnionID(ctx, app, unionid)
	if err != nil {
		return "", "", "", fmt.Errorf("follower with unionid %s in %s: %w", unionid, app, err)
	}
	switch {
	case !ok:
		return "", "not_following", by + " is not known as a follower; the bridge would list the account's followers first", nil
	case !f.Following && tm:
		return "", "not_following", by + ": " + f.OpenID + " unfollowed " + app + " " + c.followSeen(f), nil
	case !f.Following:
		return f.OpenID, "", by + ": " + f.OpenID + " in " + app + ", not following it", nil
	}
	return f.OpenID, "", by + ": " + f.OpenID + " follows " + app, nil
}

// followSeen says where and when a follower's state was learnt.
func (c *Console) followSeen(f storage.Follower) string {
	return "(" + f.Source + ", " + c.when(f.UpdatedAt) + ")"
}

// credit says whether the ledger lets the channel send to openid, as the
// reservation would decide (storage.DecideReserve): a template message and
// an app whose subscriptions WeChat checks need none.
func (c *Console) credit(ctx context.Context, pl channelPlan, openid string) (ok bool, reason, detail string, err error) {
	switch {
	case pl.tpl.Channel() == rules.ChannelTemplateMessage:
		return true, "", "", nil
	case pl.app.Subscriptions == rules.SubscriptionsWeChat:
		return true, "", "app " + pl.app.Name + " lets WeChat check subscriptions", nil
	}
	subs, err := c.cfg.Store.Subscriptions(ctx, pl.app.Name, openid)
	if err != nil {
		return false, "", "", fmt.Errorf("ledger of %s in %s: %w", openid, pl.app.Name, err)
	}
	sub, found := storage.Subscription{}, false
	for _, s := range subs {
		if s.TemplateID == pl.tpl.ID {
			sub, found = s, true
		}
	}
	if pl.tpl.Kind != "" {
		sub.Kind = pl.tpl.Kind // the template's kind decides, as in a reservation
	}
	ok, reason = sub.Usable()
	switch {
	case !found:
		return false, reason, "no accept of " + pl.tpl.Name + " in the ledger", nil
	case !ok:
		return false, reason, fmt.Sprintf("ledger: %s, %d credits (%s, %s)", sub.Status, sub.Credits, sub.Source, c.when(sub.UpdatedAt)), nil
	case sub.Kind == rules.KindLongTerm:
		return true, "", "long-term subscription", nil
	}
	return true, "", fmt.Sprintf("spends 1 of %d credits", sub.Credits), nil
}

// parseEvent reads a pasted event as the bridge reads a NATS message body
// and `wxbridge rules render` an event file: a structured CloudEvent, or
// a plain JSON payload whose type is given. typ, when set, wins.
func parseEvent(body []byte, typ string, now time.Time) (*rules.Event, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errors.New("paste an event: a CloudEvent, or a JSON payload with its type")
	}
	if !json.Valid(body) {
		return nil, errors.New("the event is not JSON")
	}
	var ce struct {
		SpecVersion string          `json:"specversion"`
		ID          string          `json:"id"`
		Source      string          `json:"source"`
		Type        string          `json:"type"`
		Subject     string          `json:"subject"`
		Time        string          `json:"time"`
		Data        json.RawMessage `json:"data"`
		DataBase64  string          `json:"data_base64"`
	}
	ev := &rules.Event{ID: "dry-run", Time: now}
	data := body
	if json.Unmarshal(body, &ce) == nil && ce.SpecVersion != "" {
		ev.ID, ev.Source, ev.Type, ev.Subject = ce.ID, ce.Source, ce.Type, ce.Subject
		if ce.Time != "" {
			t, err := time.Parse(time.RFC3339Nano, ce.Time)
			if err != nil {
				return nil, fmt.Errorf("CloudEvent time %q is not RFC 3339", ce.Time)
			}
			ev.Time = t
		}
		data = ce.Data
		if ce.DataBase64 != "" {
			var err error
			if data, err = base64.StdEncoding.DecodeString(ce.DataBase64); err != nil {
				return nil, fmt.Errorf("data_base64: %w", err)
			}
		}
	}
	if typ != "" {
		ev.Type = typ
	}
	if ev.Type == "" {
		return nil, errors.New("this is not a CloudEvent: say its type")
	}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // as the bridge does: amounts and long ids stay exact
		if err := dec.Decode(&ev.Data); err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
	}
	return ev, nil
}

// latestEvent is the last event of typ in the event stream, as JSON a dry
// run takes: a CloudEvent in binary mode (ce- headers) is turned into a
// structured one.
func (c *Console) latestEvent(ctx context.Context, typ string) ([]byte, error) {
	if c.cfg.JetStream == nil {
		return nil, errors.New("no event stream to pick from: paste an event")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := c.cfg.JetStream.Stream(ctx, c.cfg.EventStream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", c.cfg.EventStream, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, c.cfg.EventPrefix+typ)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("no %s event on %s%s in stream %s: paste one", typ, c.cfg.EventPrefix, typ, c.cfg.EventStream)
	}
	if err != nil {
		return nil, fmt.Errorf("latest %s event: %w", typ, err)
	}
	if m.Header.Get("ce-specversion") == "" {
		var out bytes.Buffer
		if json.Indent(&out, m.Data, "", "  ") != nil {
			return m.Data, nil
		}
		return out.Bytes(), nil
	}
	ce := map[string]any{}
	for k, vs := range m.Header {
		if name, ok := strings.CutPrefix(strings.ToLower(k), "ce-"); ok && len(vs) > 0 {
			v := vs[0]
			if u, err := url.PathUnescape(v); err == nil {
				v = u // ce- header values are percent-encoded
			}
			ce[name] = v
		}
	}
	if json.Valid(m.Data) {
		ce["data"] = json.RawMessage(m.Data)
	} else {
		ce["data_base64"] = base64.StdEncoding.EncodeToString(m.Data)
	}
	return json.MarshalIndent(ce, "", "  ")
}
