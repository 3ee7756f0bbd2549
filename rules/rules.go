// Package rules reads rules.yaml and decides, for a domain event, which
// subscribe messages to send to whom and with which words.
//
// A Set holds the apps, templates and rules of one file. Set.Match returns
// the rules an event matches; Rule.Recipients resolves who a rule names (as
// specs: user ids, roles within a scope, openids); Rule.Render renders the
// page and keyword data and fits each value to its WeChat keyword type.
//
// The package is pure: no network, no database. A Set is immutable once
// parsed and safe for concurrent use.
package rules

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Event is a domain event as rules see it. Templates reach its fields as
// .id, .type, .subject, .time and .data.
type Event struct {
	ID      string
	Type    string
	Subject string
	Time    time.Time
	Data    any
}

func (ev *Event) vars() map[string]any {
	return map[string]any{"id": ev.ID, "type": ev.Type, "subject": ev.Subject, "time": ev.Time, "data": ev.Data}
}

// Set is a parsed rules file.
type Set struct {
	File      string
	Apps      map[string]*App
	Templates map[string]*Template
	Rules     []*Rule
}

// App is a Mini Program the rules send through.
type App struct {
	Name      string
	AppID     string
	Secret    string
	PushToken string
	AESKey    string
	State     string // miniprogram_state
	Lang      string
	// TokenMode is "stable" (default) or "token".
	TokenMode string
	// Subscriptions says who decides whether a user may get a message:
	// "ledger" (default) checks and spends the credits wxbridge keeps;
	// "wechat" sends and lets WeChat answer 43101.
	Subscriptions string
}

// Values of App.Subscriptions, Template.Kind and Policy.Delivery.
const (
	SubscriptionsLedger = "ledger"
	SubscriptionsWeChat = "wechat"

	KindOneTime  = "one_time"
	KindLongTerm = "long_term"

	AtLeastOnce = "at_least_once"
	AtMostOnce  = "at_most_once"
)

// Template is a subscribe-message template of an app.
type Template struct {
	Name     string
	App      string
	ID       string
	Kind     string            // one_time or long_term
	Keywords map[string]string // key -> type ("thing1" -> "thing")
}

// Rule sends one template when an event matches.
type Rule struct {
	Name     string
	On       []string
	Template *Template
	App      *App
	Policy   Policy

	page *template.Template
	to   []recipientSpec
	data map[string]*template.Template
}

// Policy is what a rule does besides sending.
type Policy struct {
	// Delivery is at_least_once (default) or at_most_once: what to do with a
	// send that a crash left in doubt.
	Delivery string
}

// Recipient is one recipient spec after rendering. Exactly one of UserID,
// Role or OpenID is set.
type Recipient struct {
	UserID string
	Role   string
	Scope  string
	OpenID string
}

type recipientSpec struct {
	user, role, scope, openid *template.Template
}

// Rendered is a message ready to send, before the recipient is known.
type Rendered struct {
	App        string
	TemplateID string
	Page       string
	Data       map[string]string
	State      string
	Lang       string
}

// Load reads and parses a rules file, expanding ${VAR} from the environment.
func Load(path string) (*Set, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return Parse(path, src, os.LookupEnv)
}

type fileYAML struct {
	Apps      map[string]appYAML      `yaml:"apps"`
	Templates map[string]templateYAML `yaml:"templates"`
	Rules     []ruleYAML              `yaml:"rules"`
}

type appYAML struct {
	AppID         string `yaml:"appid"`
	Secret        string `yaml:"secret"`
	PushToken     string `yaml:"push_token"`
	AESKey        string `yaml:"aes_key"`
	State         string `yaml:"state"`
	Lang          string `yaml:"lang"`
	TokenMode     string `yaml:"token_mode"`
	Subscriptions string `yaml:"subscriptions"`
}

type templateYAML struct {
	App      string            `yaml:"app"`
	ID       string            `yaml:"id"`
	Kind     string            `yaml:"kind"`
	Keywords map[string]string `yaml:"keywords"`
}

type ruleYAML struct {
	Name     string            `yaml:"name"`
	On       stringList        `yaml:"on"`
	Template string            `yaml:"template"`
	Page     string            `yaml:"page"`
	To       []recipientYAML   `yaml:"to"`
	Data     map[string]string `yaml:"data"`
	Delivery string            `yaml:"delivery"`
}

type recipientYAML struct {
	User   string `yaml:"user"`
	Role   string `yaml:"role"`
	Scope  string `yaml:"scope"`
	OpenID string `yaml:"openid"`
}

type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = []string{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}`)

// Parse parses a rules file. file names it in errors; env looks up ${VAR}.
func Parse(file string, src []byte, env func(string) (string, bool)) (*Set, error) {
	var missing []string
	src = envRef.ReplaceAllFunc(src, func(m []byte) []byte {
		sub := envRef.FindSubmatch(m)
		if v, ok := env(string(sub[1])); ok {
			return []byte(v)
		}
		if bytes.Contains(m, []byte(":-")) {
			return sub[2]
		}
		missing = append(missing, string(sub[1]))
		return nil
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: environment variables not set: %s", file, strings.Join(missing, ", "))
	}
	var f fileYAML
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	s := &Set{File: file, Apps: map[string]*App{}, Templates: map[string]*Template{}}
	for name, a := range f.Apps {
		s.Apps[name] = &App{Name: name, AppID: a.AppID, Secret: a.Secret, PushToken: a.PushToken, AESKey: a.AESKey,
			State: a.State, Lang: a.Lang, TokenMode: a.TokenMode, Subscriptions: a.Subscriptions}
		if s.Apps[name].Subscriptions == "" {
			s.Apps[name].Subscriptions = SubscriptionsLedger
		}
	}
	for name, t := range f.Templates {
		if _, ok := s.Apps[t.App]; !ok {
			return nil, fmt.Errorf("%s: template %s: app %q does not exist", file, name, t.App)
		}
		kind := t.Kind
		if kind == "" {
			kind = "one_time"
		}
		s.Templates[name] = &Template{Name: name, App: t.App, ID: t.ID, Kind: kind, Keywords: t.Keywords}
	}
	for i, r := range f.Rules {
		rule, err := s.compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("%s: rules[%d] (%s): %w", file, i, r.Name, err)
		}
		s.Rules = append(s.Rules, rule)
	}
	return s, nil
}

func (s *Set) compileRule(r ruleYAML) (*Rule, error) {
	t, ok := s.Templates[r.Template]
	if !ok {
		return nil, fmt.Errorf("template %q does not exist", r.Template)
	}
	rule := &Rule{Name: r.Name, On: r.On, Template: t, App: s.Apps[t.App], Policy: Policy{Delivery: r.Delivery},
		data: map[string]*template.Template{}}
	if rule.Policy.Delivery == "" {
		rule.Policy.Delivery = "at_least_once"
	}
	var err error
	if rule.page, err = parseText("page", r.Page); err != nil {
		return nil, err
	}
	for k, v := range r.Data {
		if _, ok := t.Keywords[k]; !ok {
			return nil, fmt.Errorf("data.%s: keyword not in template %s", k, t.Name)
		}
		if rule.data[k], err = parseText("data."+k, v); err != nil {
			return nil, err
		}
	}
	for i, to := range r.To {
		var spec recipientSpec
		for _, f := range []struct {
			dst **template.Template
			src string
		}{{&spec.user, to.User}, {&spec.role, to.Role}, {&spec.scope, to.Scope}, {&spec.openid, to.OpenID}} {
			if f.src == "" {
				continue
			}
			if *f.dst, err = parseText(fmt.Sprintf("to[%d]", i), f.src); err != nil {
				return nil, err
			}
		}
		rule.to = append(rule.to, spec)
	}
	return rule, nil
}

func parseText(name, src string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

func execText(t *template.Template, ev *Event) (string, error) {
	if t == nil {
		return "", nil
	}
	var b strings.Builder
	if err := t.Execute(&b, ev.vars()); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Match returns the rules ev matches, in file order.
func (s *Set) Match(ev *Event) []*Rule {
	var out []*Rule
	for _, r := range s.Rules {
		for _, p := range r.On {
			if matchType(p, ev.Type) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// matchType matches dotted event types like NATS subjects: "*" is one
// token, a trailing ">" is one or more.
func matchType(pattern, typ string) bool {
	p, t := strings.Split(pattern, "."), strings.Split(typ, ".")
	for i, tok := range p {
		if tok == ">" && i == len(p)-1 {
			return len(t) > i
		}
		if i >= len(t) || (tok != "*" && tok != t[i]) {
			return false
		}
	}
	return len(p) == len(t)
}

// Recipients renders the rule's recipient specs for ev.
func (r *Rule) Recipients(ev *Event) ([]Recipient, error) {
	var out []Recipient
	for _, spec := range r.to {
		var rc Recipient
		var err error
		if rc.UserID, err = execText(spec.user, ev); err != nil {
			return nil, fmt.Errorf("rule %s: recipient: %w", r.Name, err)
		}
		if rc.Role, err = execText(spec.role, ev); err != nil {
			return nil, fmt.Errorf("rule %s: recipient: %w", r.Name, err)
		}
		if rc.Scope, err = execText(spec.scope, ev); err != nil {
			return nil, fmt.Errorf("rule %s: recipient: %w", r.Name, err)
		}
		if rc.OpenID, err = execText(spec.openid, ev); err != nil {
			return nil, fmt.Errorf("rule %s: recipient: %w", r.Name, err)
		}
		if rc.UserID != "" || rc.Role != "" || rc.OpenID != "" {
			out = append(out, rc)
		}
	}
	return out, nil
}

// DataError says which keyword could not be rendered or fitted.
type DataError struct {
	Rule    string
	Keyword string
	Reason  string
}

func (e *DataError) Error() string {
	return fmt.Sprintf("rule %s: keyword %s: %s", e.Rule, e.Keyword, e.Reason)
}

// Render renders the page and keyword data of the rule for ev. A value
// that cannot be made valid for its keyword type is a *DataError.
func (r *Rule) Render(ev *Event) (*Rendered, error) {
	out := &Rendered{App: r.App.Name, TemplateID: r.Template.ID, State: r.App.State, Lang: r.App.Lang,
		Data: make(map[string]string, len(r.data))}
	var err error
	if out.Page, err = execText(r.page, ev); err != nil {
		return nil, &DataError{Rule: r.Name, Keyword: "page", Reason: err.Error()}
	}
	for k, t := range r.data {
		v, err := execText(t, ev)
		if err != nil {
			return nil, &DataError{Rule: r.Name, Keyword: k, Reason: err.Error()}
		}
		if r.Template.Keywords[k] == "thing" && utf8.RuneCountInString(v) > 20 {
			v = string([]rune(v)[:19]) + "…"
		}
		out.Data[k] = v
	}
	return out, nil
}
