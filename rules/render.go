package rules

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Rendered is a message ready to send, before the recipient is known.
type Rendered struct {
	App        string
	TemplateID string
	Page       string
	Data       map[string]string
	State      string
	Lang       string
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

// Render renders the page and keyword data of the rule for ev and fits
// every value to its keyword type. A value that cannot be made valid is a
// *DataError naming the keyword ("page" for the page); Render returns the
// first, in the template's keyword order.
func (r *Rule) Render(ev *Event) (*Rendered, error) {
	vars := ev.vars()
	page, err := r.renderPage(vars)
	if err != nil {
		return nil, err
	}
	out := &Rendered{App: r.App.Name, TemplateID: r.Template.ID, Page: page, State: r.App.State, Lang: r.App.Lang,
		Data: make(map[string]string, len(r.data))}
	for i := range r.data {
		_, v, err := r.renderKeyword(&r.data[i], vars)
		if err != nil {
			return nil, err
		}
		out.Data[r.data[i].key] = v
	}
	return out, nil
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
// than the first: what `wxbridge rules render` shows.
type Preview struct {
	Rule          *Rule
	Recipients    []Recipient
	RecipientsErr error
	Page          string
	PageErr       error
	Keywords      []KeywordPreview
	DedupeKey     string
	DedupeErr     error
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
	if p.PageErr != nil {
		return p.PageErr
	}
	for _, k := range p.Keywords {
		if k.Err != nil {
			return k.Err
		}
	}
	return p.DedupeErr
}

// Preview renders everything the rule would for ev.
func (r *Rule) Preview(ev *Event) *Preview {
	vars := ev.vars()
	p := &Preview{Rule: r}
	p.Recipients, p.RecipientsErr = r.Recipients(ev)
	p.Page, p.PageErr = r.renderPage(vars)
	for i := range r.data {
		k := &r.data[i]
		kp := KeywordPreview{Key: k.key, Type: k.typ, Label: r.Template.Labels[k.key]}
		kp.Raw, kp.Value, kp.Err = r.renderKeyword(k, vars)
		p.Keywords = append(p.Keywords, kp)
	}
	if r.dedup != nil {
		p.DedupeKey, p.DedupeErr = r.dedupeKey(vars)
	}
	return p
}

// Card is a text picture of the subscribe message as WeChat shows it.
func (p *Preview) Card() string {
	data := map[string]string{}
	for _, k := range p.Keywords {
		if k.Err != nil {
			data[k.Key] = "(error)"
		} else {
			data[k.Key] = k.Value
		}
	}
	return p.Rule.Template.Card(p.Page, data)
}

// Card draws a subscribe message of this template: the title, one
// "label: value" line per keyword in template order, and the page the card
// opens.
func (t *Template) Card(page string, data map[string]string) string {
	var b strings.Builder
	title := t.Title
	if title == "" {
		title = t.Name
	}
	fmt.Fprintf(&b, "┌─ %s\n", title)
	for _, k := range t.Keys {
		fmt.Fprintf(&b, "│ %s: %s\n", t.Label(k), data[k])
	}
	if page != "" {
		fmt.Fprintf(&b, "└─ 进入小程序查看 › %s\n", page)
	} else {
		b.WriteString("└─\n")
	}
	return b.String()
}
