package rules

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Rendered is a message ready to send, before the recipient is known: for
// one channel of a rule (RenderFor), with what that channel's API takes.
//
//	ChannelSubscribeMessage          subscribe/send: Page, Data, State, Lang
//	ChannelTemplateMessage           template/send: URL as url, MiniProgram as
//	                                 miniprogram, Data
//	ChannelSubscriptionNotification  subscribe/bizsend: URL as page (a web
//	                                 page), MiniProgram as miniprogram, Data
type Rendered struct {
	App        string // the app's name under apps
	Template   string // the template's name under templates
	TemplateID string
	Channel    string // ChannelSubscribeMessage, ChannelTemplateMessage...
	// Page is the Mini Program page a subscribe message opens.
	Page string
	// URL is the web page an official account's card opens (the rule's
	// url); "" for none.
	URL string
	// MiniProgram is the Mini Program page an official account's card
	// opens (its template's opens and the rule's page); nil for none.
	MiniProgram *MiniProgramPage
	Data        map[string]string
	State       string
	Lang        string
}

// MiniProgramPage is a page of a Mini Program, as an official account's
// card opens it.
type MiniProgramPage struct {
	AppID    string
	PagePath string // "" opens the Mini Program's home page
}

// pageSpec is the page a card opens: a templated string used as it is, or
// a path with query parameters whose values are escaped.
type pageSpec struct {
	path  *text
	query []queryParam
}

type queryParam struct {
	key   string
	value *text
}

// Render renders the rule for ev as a message of its Template (the first
// of its channels): RenderFor(ev, r.Template).
func (r *Rule) Render(ev *Event) (*Rendered, error) {
	return r.RenderFor(ev, r.Template)
}

// RenderFor renders the rule for ev as a message of tpl, one of its
// Channels: the page or the web page and Mini Program page the card opens,
// and the keyword data tpl takes, each value fitted to tpl's type for it.
// A value that cannot be made valid is a *DataError naming the keyword
// ("page" for the page, "url" for the web page); RenderFor returns the
// first, in the template's keyword order. A template that is not one of
// the rule's is an error.
func (r *Rule) RenderFor(ev *Event, tpl *Template) (*Rendered, error) {
	c := r.channel(tpl)
	if c == nil {
		return nil, fmt.Errorf("rule %s: template %s is not one of its channels", r.Name, templateName(tpl))
	}
	vars := ev.vars()
	out := &Rendered{App: c.app.Name, Template: tpl.Name, TemplateID: tpl.ID, Channel: tpl.Channel(),
		Data: make(map[string]string, len(c.data))}
	var err error
	switch out.Channel {
	case ChannelSubscribeMessage:
		out.State, out.Lang = c.app.State, c.app.Lang
		if out.Page, err = r.renderPage(vars); err != nil {
			return nil, err
		}
	default:
		if out.URL, out.MiniProgram, err = r.renderLinks(c, vars); err != nil {
			return nil, err
		}
	}
	for i := range c.data {
		_, v, err := r.renderKeyword(&c.data[i], vars)
		if err != nil {
			return nil, err
		}
		out.Data[c.data[i].key] = v
	}
	return out, nil
}

// renderURL renders the rule's url, "" when it has none.
func (r *Rule) renderURL(vars map[string]any) (string, error) {
	if r.url == nil {
		return "", nil
	}
	u, err := r.url.exec(vars)
	if err != nil {
		return "", &DataError{Rule: r.Name, Keyword: "url", Reason: err.Error(), Err: err}
	}
	u = strings.ReplaceAll(clean(u), " ", "%20")
	if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		return "", &DataError{Rule: r.Name, Keyword: "url", Reason: fmt.Sprintf("%s is not a web page: %s must render https://...", quote(u), r.url.src)}
	}
	return u, nil
}

func (r *Rule) channel(tpl *Template) *channel {
	for i := range r.channels {
		if r.channels[i].tpl == tpl {
			return &r.channels[i]
		}
	}
	return nil
}

func templateName(t *Template) string {
	if t == nil {
		return "(nil)"
	}
	return t.Name
}

// renderLinks renders what an official account's card opens: the rule's
// url, and the page of the Mini Program its template opens.
func (r *Rule) renderLinks(c *channel, vars map[string]any) (string, *MiniProgramPage, error) {
	url, err := r.renderURL(vars)
	if err != nil {
		return "", nil, err
	}
	if c.tpl.opens == nil {
		return url, nil, nil
	}
	page, err := r.renderPage(vars)
	if err != nil {
		return "", nil, err
	}
	return url, &MiniProgramPage{AppID: c.tpl.opens.AppID, PagePath: page}, nil
}

func (r *Rule) renderPage(vars map[string]any) (string, error) {
	if r.page == nil {
		return "", nil
	}
	path, err := r.page.path.exec(vars)
	if err != nil {
		return "", &DataError{Rule: r.Name, Keyword: "page", Reason: err.Error(), Err: err}
	}
	// A space would make WeChat refuse the page (41030); an id with one in
	// it is still the id.
	path = strings.ReplaceAll(clean(path), " ", "%20")
	if len(r.page.query) == 0 {
		return path, nil
	}
	var b strings.Builder
	b.WriteString(path)
	for i, q := range r.page.query {
		v, err := q.value.exec(vars)
		if err != nil {
			return "", &DataError{Rule: r.Name, Keyword: "page", Reason: "query " + q.key + ": " + err.Error(), Err: err}
		}
		if v = clean(v); v == "" {
			return "", &DataError{Rule: r.Name, Keyword: "page", Reason: fmt.Sprintf("query %s: empty: %s rendered nothing for this event", q.key, q.value.src)}
		}
		if i == 0 && !strings.Contains(path, "?") {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(q.key))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(v))
	}
	return b.String(), nil
}

// renderKeyword returns the value as the template printed it and as it is
// sent.
func (r *Rule) renderKeyword(k *keywordSpec, vars map[string]any) (raw, fitted string, err error) {
	raw, err = k.text.exec(vars)
	if err != nil {
		return "", "", &DataError{Rule: r.Name, Keyword: k.key, Reason: err.Error(), Err: err}
	}
	fitted, err = Fit(k.typ, raw, r.Location, k.enum)
	if errors.Is(err, errEmpty) {
		return raw, "", &DataError{Rule: r.Name, Keyword: k.key, Reason: fmt.Sprintf("empty: %s rendered nothing for this event", k.text.src)}
	}
	if err != nil {
		return raw, "", &DataError{Rule: r.Name, Keyword: k.key, Reason: err.Error(), Err: err}
	}
	return raw, fitted, nil
}

// DedupeKey renders the rule's dedupe key for ev; "" when the rule has no
// dedupe policy. The bridge keeps the key per rule and recipient for
// Policy.Dedupe.Window. A key that renders empty is a *DataError with
// Keyword "dedupe.key": deduplicating on nothing would merge unrelated
// events.
func (r *Rule) DedupeKey(ev *Event) (string, error) {
	if r.dedup == nil {
		return "", nil
	}
	return r.dedupeKey(ev.vars())
}

func (r *Rule) dedupeKey(vars map[string]any) (string, error) {
	k, err := r.dedup.exec(vars)
	if err != nil {
		return "", &DataError{Rule: r.Name, Keyword: "dedupe.key", Reason: err.Error(), Err: err}
	}
	if k = clean(k); k == "" {
		return "", &DataError{Rule: r.Name, Keyword: "dedupe.key", Reason: fmt.Sprintf("empty: %s rendered nothing for this event", r.dedup.src)}
	}
	return k, nil
}

// Preview is what a rule would do with an event, with every problem rather
// than the first: what `wxbridge rules render` shows. Page, PageErr and
// Keywords are those of the rule's Template; Channels has every channel's.
type Preview struct {
	Rule          *Rule
	Recipients    []Recipient
	RecipientsErr error
	Page          string
	PageErr       error
	Keywords      []KeywordPreview
	Channels      []ChannelPreview
	DedupeKey     string
	DedupeErr     error
}

// ChannelPreview is the message of one channel of a rule.
type ChannelPreview struct {
	Template *Template
	// Page is the Mini Program page the card opens: a subscribe message's
	// page, or the page of the Mini Program an official account's
	// template opens.
	Page        string
	PageErr     error
	URL         string // an official account's web page
	URLErr      error
	MiniProgram *MiniProgramPage
	Keywords    []KeywordPreview
}

// KeywordPreview is one keyword: Raw as the template printed it, Value as
// it would be sent, or Err.
type KeywordPreview struct {
	Key, Type, Label string
	Raw, Value       string
	Err              error
}

// Err is the first problem of the preview, in the order Render and
// Recipients would meet them.
func (p *Preview) Err() error {
	if p.RecipientsErr != nil {
		return p.RecipientsErr
	}
	for _, c := range p.Channels {
		if c.PageErr != nil {
			return c.PageErr
		}
		if c.URLErr != nil {
			return c.URLErr
		}
		for _, k := range c.Keywords {
			if k.Err != nil {
				return k.Err
			}
		}
	}
	return p.DedupeErr
}

// Preview renders everything the rule would for ev, for every channel.
func (r *Rule) Preview(ev *Event) *Preview {
	vars := ev.vars()
	p := &Preview{Rule: r}
	p.Recipients, p.RecipientsErr = r.Recipients(ev)
	for i := range r.channels {
		c := &r.channels[i]
		cp := ChannelPreview{Template: c.tpl}
		if c.tpl.Channel() == ChannelSubscribeMessage || c.tpl.opens != nil {
			cp.Page, cp.PageErr = r.renderPage(vars)
		}
		if c.tpl.opens != nil && cp.PageErr == nil {
			cp.MiniProgram = &MiniProgramPage{AppID: c.tpl.opens.AppID, PagePath: cp.Page}
		}
		if c.tpl.Channel() != ChannelSubscribeMessage {
			cp.URL, cp.URLErr = r.renderURL(vars)
		}
		for j := range c.data {
			k := &c.data[j]
			kp := KeywordPreview{Key: k.key, Type: k.typ, Label: c.tpl.Labels[k.key]}
			kp.Raw, kp.Value, kp.Err = r.renderKeyword(k, vars)
			cp.Keywords = append(cp.Keywords, kp)
		}
		p.Channels = append(p.Channels, cp)
	}
	p.Page, p.PageErr = r.renderPage(vars)
	if len(p.Channels) > 0 {
		p.Keywords = p.Channels[0].Keywords
	}
	if r.dedup != nil {
		p.DedupeKey, p.DedupeErr = r.dedupeKey(vars)
	}
	return p
}

// Card is a text picture of the message as WeChat shows it; for a rule
// with several channels, one card per channel, numbered in the order they
// are tried.
func (p *Preview) Card() string {
	if len(p.Channels) == 1 {
		return p.Channels[0].Card()
	}
	var b strings.Builder
	for i, c := range p.Channels {
		app := ""
		if c.Template.app != nil {
			app = " of " + c.Template.app.Name
		}
		fmt.Fprintf(&b, "%d. %s (%s%s)\n", i+1, c.Template.Name, c.Template.Channel(), app)
		b.WriteString(c.Card())
	}
	return b.String()
}

// Card draws the channel's message: its keywords and what the card opens.
func (c ChannelPreview) Card() string {
	data := map[string]string{}
	for _, k := range c.Keywords {
		if k.Err != nil {
			data[k.Key] = "(error)"
		} else {
			data[k.Key] = k.Value
		}
	}
	if c.Template.Channel() == ChannelSubscribeMessage {
		return c.Template.Card(c.Page, data)
	}
	var link string
	switch {
	case c.MiniProgram != nil:
		name := c.Template.Opens
		link = "进入小程序查看 › " + name + " " + c.MiniProgram.PagePath
	case c.URLErr != nil:
		link = "详情 › (error)"
	case c.URL != "":
		link = "详情 › " + c.URL
	}
	return c.Template.card(link, data)
}

// Card draws a subscribe message of this template: the title, one
// "label: value" line per keyword in template order, and the page the card
// opens.
func (t *Template) Card(page string, data map[string]string) string {
	link := ""
	if page != "" {
		link = "进入小程序查看 › " + page
	}
	return t.card(link, data)
}

func (t *Template) card(link string, data map[string]string) string {
	var b strings.Builder
	title := t.Title
	if title == "" {
		title = t.Name
	}
	fmt.Fprintf(&b, "┌─ %s\n", title)
	for _, k := range t.Keys {
		fmt.Fprintf(&b, "│ %s: %s\n", t.Label(k), data[k])
	}
	if link != "" {
		fmt.Fprintf(&b, "└─ %s\n", link)
	} else {
		b.WriteString("└─\n")
	}
	return b.String()
}
