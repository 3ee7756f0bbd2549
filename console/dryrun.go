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
	Name, AppID, State, Lang, Subscriptions, TimeZone string
	Encrypted                                         bool // it has an AES key (safe mode pushes)
}

func (c *Console) rulesView() rulesView {
	st := c.cfg.Rules.State()
	v := rulesView{State: st}
	if st.Set == nil {
		return v
	}
	for _, a := range st.Set.Apps {
		v.Apps = append(v.Apps, appView{Name: a.Name, AppID: a.AppID, State: a.State, Lang: a.Lang, Subscriptions: a.Subscriptions,
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
	Rule           *rules.Rule
	Problem        string // the rule cannot be rendered for this event: every recipient fails
	Card           *card
	CardText       string // the same card as `wxbridge rules render` draws it
	Quiet          string
	Notes          []string
	Recipients     []recipientRun
	MoreRecipients int
}

// card is the subscribe message WeChat would show.
type card struct {
	Title    string
	Keywords []cardKeyword
	Page     string
	PageErr  string
}

type cardKeyword struct {
	Key, Label, Type string
	Raw, Value       string
	Err              string
}

// recipientRun is what would happen to one recipient.
type recipientRun struct {
	Spec    string // the recipient spec it came from
	UserID  string
	OpenID  string
	Verdict string // send, skip or fail
	Reason  string // as a result would say it: not_bound, not_subscribed...
	Detail  string
}

// cardOf draws a rule's preview as the card WeChat shows: the one place
// that knows how a preview becomes a card.
func cardOf(p *rules.Preview) *card {
	t := p.Rule.Template
	cd := &card{Title: t.Title, Page: p.Page}
	if cd.Title == "" {
		cd.Title = t.Name
	}
	if p.PageErr != nil {
		cd.PageErr = rules.ReasonOf(p.PageErr)
	}
	for _, k := range p.Keywords {
		kw := cardKeyword{Key: k.Key, Label: t.Label(k.Key), Type: k.Type, Raw: k.Raw, Value: k.Value}
		if k.Err != nil {
			kw.Err = rules.ReasonOf(k.Err)
		}
		cd.Keywords = append(cd.Keywords, kw)
	}
	return cd
}

// dryRun follows the bridge's steps for each matching rule and recipient
// (bridge/handle.go plan, bridge/send.go deliverTo) with reads only: the
// condition, the recipients, rendering, the binding, quiet hours now, the
// ledger. Dedupe windows and frequency caps are not checked.
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
		rr.Card, rr.CardText = cardOf(p), p.Card()
		if err := p.Err(); err != nil {
			rr.Problem = err.Error()
		}
		if err := c.dryRunRecipients(ctx, m.Rule, p, &rr); err != nil {
			return err
		}
		run.Rules = append(run.Rules, rr)
	}
	return nil
}

func (c *Console) dryRunRecipients(ctx context.Context, r *rules.Rule, p *rules.Preview, rr *ruleRun) error {
	if p.RecipientsErr != nil {
		rr.Recipients = []recipientRun{{Spec: "to", Verdict: "fail", Reason: "invalid_data", Detail: p.RecipientsErr.Error()}}
		return nil
	}
	renderErr := p.PageErr
	for _, k := range p.Keywords {
		if renderErr == nil {
			renderErr = k.Err
		}
	}
	if renderErr == nil && r.Policy.Dedupe != nil {
		renderErr = p.DedupeErr
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
		if err := c.judge(ctx, r, run, renderErr, rr.Quiet); err != nil {
			return err
		}
	}
	return nil
}

// judge decides what would happen to one recipient.
func (c *Console) judge(ctx context.Context, r *rules.Rule, run *recipientRun, renderErr error, quiet string) error {
	st := c.cfg.Store
	if renderErr != nil {
		run.Verdict, run.Reason, run.Detail = "fail", "invalid_data", renderErr.Error()
		return nil
	}
	if run.OpenID == "" {
		b, ok, err := st.Binding(ctx, r.App.Name, run.UserID)
		if err != nil {
			return fmt.Errorf("binding of %s in %s: %w", run.UserID, r.App.Name, err)
		}
		if !ok {
			run.Verdict, run.Reason, run.Detail = "skip", "not_bound", "no openid bound in app "+r.App.Name
			return nil
		}
		run.OpenID = b.OpenID
	} else if run.UserID == "" {
		if u, ok, err := st.UserByOpenID(ctx, r.App.Name, run.OpenID); err != nil {
			return fmt.Errorf("user of %s in %s: %w", run.OpenID, r.App.Name, err)
		} else if ok {
			run.UserID = u
		}
	}
	if quiet != "" {
		run.Verdict, run.Reason, run.Detail = "skip", "quiet_hours", quiet
		return nil
	}
	if r.App.Subscriptions == rules.SubscriptionsWeChat {
		run.Verdict, run.Detail = "send", "app "+r.App.Name+" lets WeChat check subscriptions"
		return nil
	}
	subs, err := st.Subscriptions(ctx, r.App.Name, run.OpenID)
	if err != nil {
		return fmt.Errorf("ledger of %s in %s: %w", run.OpenID, r.App.Name, err)
	}
	sub := storage.Subscription{Kind: r.Template.Kind}
	found := false
	for _, s := range subs {
		if s.TemplateID == r.Template.ID {
			sub, found = s, true
		}
	}
	ok, reason := sub.Usable()
	switch {
	case !found:
		run.Verdict, run.Reason, run.Detail = "skip", reason, "no accept of "+r.Template.Name+" in the ledger"
	case !ok:
		run.Verdict, run.Reason, run.Detail = "skip", reason, fmt.Sprintf("ledger: %s, %d credits (%s, %s)", sub.Status, sub.Credits, sub.Source, c.when(sub.UpdatedAt))
	case sub.Kind == rules.KindLongTerm:
		run.Verdict, run.Detail = "send", "long-term subscription"
	default:
		run.Verdict, run.Detail = "send", fmt.Sprintf("spends 1 of %d credits", sub.Credits)
	}
	return nil
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
