package rules

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones must resolve in minimal containers too

	"github.com/expr-lang/expr/file"
	"gopkg.in/yaml.v3"
)

// Load reads and parses a rules file, expanding ${VAR} from the
// environment. A file that does not pass every check is an ErrorList with
// all of its problems; a file that cannot be read is a plain error.
func Load(path string) (*Set, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return Parse(path, src, os.LookupEnv)
}

// Parse parses and checks a rules file. file names it in errors; env looks
// up ${VAR} (nil: no variables are set). The error, when there is one, is
// an ErrorList.
func Parse(file string, src []byte, env func(string) (string, bool)) (*Set, error) {
	l := &loader{file: file, env: env, pos: map[string]Pos{}, badKeywords: map[string]bool{},
		merged: map[*yaml.Node][]pair{}, merging: map[*yaml.Node]bool{}, lines: strings.Split(string(src), "\n")}
	s := &Set{File: file, Apps: map[string]*App{}, Templates: map[string]*Template{}}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		l.syntaxErrors(err)
		return nil, l.result()
	}
	if len(root.Content) > 0 {
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil && len(extra.Content) > 0 && !isNull(extra.Content[0]) {
			l.errorf(&extra, "", "a second YAML document: a rules file is one document")
		}
		l.file2set(s, root.Content[0])
	}
	if len(l.errs) > 0 {
		return nil, l.result()
	}
	s.pos = l.pos
	s.buildIndex()
	return s, nil
}

func (l *loader) result() error {
	l.errs.sort()
	return l.errs
}

// Errorf is a problem at the position of field ("templates.order.id"), or
// of the nearest enclosing field the file has: how checks made after
// parsing (against WeChat's real template list) point at the file.
func (s *Set) Errorf(field, format string, args ...any) *Error {
	e := &Error{File: s.File, Field: field, Message: fmt.Sprintf(format, args...)}
	for f := field; f != ""; {
		if p, ok := s.pos[f]; ok {
			e.Line, e.Column = p.Line, p.Column
			break
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return e
}

// The fields of each mapping of the language. rules.schema.json lists the
// same; a test keeps them in step.
var (
	topFields       = []string{"apps", "templates", "rules"}
	appFields       = []string{"kind", "appid", "secret", "push_token", "aes_key", "allow_plaintext_push", "state", "lang", "token_mode", "subscriptions", "bind", "time_zone"}
	templateFields  = []string{"app", "id", "kind", "title", "opens", "keywords"}
	keywordFields   = []string{"type", "label", "enum"}
	ruleFields      = []string{"name", "description", "on", "when", "template", "via", "time_zone", "page", "url", "to", "data", "quiet_hours", "dedupe", "frequency_cap", "delivery"}
	pageFields      = []string{"path", "query"}
	recipientFields = []string{"user", "users", "role", "scope", "openid"}
	quietFields     = []string{"window", "time_zone", "action"}
	dedupeFields    = []string{"key", "window"}
	capFields       = []string{"max", "per"}
)

// extensionsRemoved drops top-level keys starting with "x-": a place for
// YAML anchors that rules share ("x-quiet: &quiet {...}", then
// "<<: *quiet"), as in docker-compose files.
func extensionsRemoved(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return n
	}
	out := *n
	out.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !strings.HasPrefix(n.Content[i].Value, "x-") {
			out.Content = append(out.Content, n.Content[i], n.Content[i+1])
		}
	}
	return &out
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)

func (l *loader) checkName(n *yaml.Node, field, what, name string) {
	if !nameRE.MatchString(name) {
		l.errorf(n, field, "%s name %q: use letters, digits and _ . : - (at most 64)", what, name)
	}
}

func (l *loader) file2set(s *Set, root *yaml.Node) {
	root = resolve(root)
	if isNull(root) {
		return
	}
	top := l.fields(extensionsRemoved(root), "", topFields...)
	if p, ok := top["apps"]; ok {
		for _, a := range l.pairs(p.v, "apps") {
			l.pos["apps."+a.key] = nodePos(a.k)
			l.checkName(a.k, "apps."+a.key, "app", a.key)
			s.Apps[a.key] = l.app(a)
		}
	}
	if p, ok := top["templates"]; ok {
		for _, t := range l.pairs(p.v, "templates") {
			l.pos["templates."+t.key] = nodePos(t.k)
			l.checkName(t.k, "templates."+t.key, "template", t.key)
			s.Templates[t.key] = l.template(s, t)
		}
	}
	p, ok := top["rules"]
	if !ok {
		return
	}
	seq := resolve(p.v)
	if isNull(seq) {
		return
	}
	if seq.Kind != yaml.SequenceNode {
		l.errorf(seq, "rules", "want a list of rules (- name: ...), not %s", kindName(seq))
		return
	}
	names := map[string]int{}
	for i, n := range seq.Content {
		r := l.rule(s, i, n)
		if r == nil {
			continue
		}
		if prev, dup := names[r.Name]; dup {
			l.errorAt(l.pos[fmt.Sprintf("rules[%d].name", i)], fmt.Sprintf("rules[%d].name", i), "rule name %q is already used by rules[%d]: names key send records and must be unique", r.Name, prev)
			continue
		}
		names[r.Name] = i
		s.Rules = append(s.Rules, r)
	}
}

// oneOf checks an enumerated setting, or sets its default.
func (l *loader) oneOf(m map[string]pair, key, field, def string, allowed ...string) string {
	p, ok := m[key]
	if !ok {
		return def
	}
	v, _ := l.str(p.v, subfield(field, key))
	if v == "" {
		return def
	}
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	l.errorf(p.v, subfield(field, key), "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

// boolean reads a true/false setting; absent or empty is false. Only the
// two words are accepted: a setting that weakens a check must not be
// switched on by a typo or a "yes" that YAML 1.2 reads as a string.
func (l *loader) boolean(m map[string]pair, key, field string) bool {
	p, ok := m[key]
	if !ok {
		return false
	}
	v, _ := l.str(p.v, subfield(field, key))
	switch v {
	case "", "false":
		return false
	case "true":
		return true
	}
	l.errorf(p.v, subfield(field, key), "%q is not true or false", v)
	return false
}

func (l *loader) get(m map[string]pair, key, field string) string {
	p, ok := m[key]
	if !ok {
		return ""
	}
	v, _ := l.str(p.v, subfield(field, key))
	return v
}

func (l *loader) zone(m map[string]pair, key, field string) *time.Location {
	p, ok := m[key]
	if !ok {
		return nil
	}
	name, ok := l.str(p.v, subfield(field, key))
	if !ok || name == "" {
		return nil
	}
	loc, err := loadZone(name)
	if err != nil {
		l.errorf(p.v, subfield(field, key), "%v", err)
		return nil
	}
	return loc
}

var appIDRE = regexp.MustCompile(`^wx[0-9a-fA-F]{16}$`)

func (l *loader) app(a pair) *App {
	field := "apps." + a.key
	m := l.fields(a.v, field, appFields...)
	l.require(a.v, m, field, "appid", "secret")
	app := &App{Name: a.key,
		Kind:      l.oneOf(m, "kind", field, AppMiniProgram, AppMiniProgram, AppOfficialAccount),
		AppID:     l.get(m, "appid", field),
		Secret:    l.get(m, "secret", field),
		PushToken: l.get(m, "push_token", field),
		AESKey:    l.get(m, "aes_key", field),
		State:     l.oneOf(m, "state", field, "", "developer", "trial", "formal"),
		Lang:      l.oneOf(m, "lang", field, "", "zh_CN", "en_US", "zh_HK", "zh_TW"),
		TokenMode: l.oneOf(m, "token_mode", field, TokenModeStable, TokenModeStable, TokenModeToken),
		Subscriptions: l.oneOf(m, "subscriptions", field, SubscriptionsLedger,
			SubscriptionsLedger, SubscriptionsWeChat),
		AllowPlaintextPush: l.boolean(m, "allow_plaintext_push", field),
		Bind:               l.oneOf(m, "bind", field, BindAny, BindAny, BindCode),
		TimeZone:           DefaultTimeZone,
	}
	if app.AppID != "" && !appIDRE.MatchString(app.AppID) {
		l.errorf(m["appid"].v, field+".appid", "%q is not an AppID: wx followed by 16 hex digits", app.AppID)
	}
	if p, ok := m["state"]; ok && app.Kind == AppOfficialAccount && app.State != "" {
		l.errorf(p.k, field+".state", "state is the miniprogram_state of a Mini Program's messages; an official account's cards open the mini program a template names with opens")
	}
	if app.AESKey != "" && len(app.AESKey) != 43 {
		l.errorf(m["aes_key"].v, field+".aes_key", "an EncodingAESKey is 43 characters, this one is %d", len(app.AESKey))
	}
	if loc := l.zone(m, "time_zone", field); loc != nil {
		app.TimeZone, app.Location = loc.String(), loc
	} else {
		app.Location, _ = loadZone(DefaultTimeZone)
	}
	return app
}

var keyRE = regexp.MustCompile(`^([a-z_]+?)(\d+)$`)

func (l *loader) template(s *Set, t pair) *Template {
	field := "templates." + t.key
	m := l.fields(t.v, field, templateFields...)
	l.require(t.v, m, field, "app", "id", "keywords")
	tp := &Template{Name: t.key,
		App:      l.get(m, "app", field),
		ID:       l.get(m, "id", field),
		Kind:     l.oneOf(m, "kind", field, KindOneTime, KindOneTime, KindLongTerm, KindTemplateMessage),
		Title:    l.get(m, "title", field),
		Opens:    l.get(m, "opens", field),
		Keywords: map[string]string{}, Labels: map[string]string{}, Enums: map[string][]string{}}
	tp.app = s.Apps[tp.App]
	if p, ok := m["app"]; ok && tp.App != "" && tp.app == nil {
		l.errorf(p.v, field+".app", "app %q does not exist (apps: %s)", tp.App, strings.Join(sortedKeys(s.Apps), ", "))
	}
	official := tp.app != nil && tp.app.Kind == AppOfficialAccount
	if p, ok := m["kind"]; ok && tp.Kind == KindTemplateMessage && tp.app != nil && !official {
		l.errorf(p.v, field+".kind", "template_message is an official account's kind of template; app %s is a Mini Program (kind: official_account makes an app one)", tp.App)
	}
	if p, ok := m["opens"]; ok && tp.Opens != "" {
		switch o := s.Apps[tp.Opens]; {
		case tp.app != nil && !official:
			l.errorf(p.k, field+".opens", "opens is for official account templates: a Mini Program's cards open its own pages (page:)")
		case o == nil:
			l.errorf(p.v, field+".opens", "app %q does not exist (apps: %s)", tp.Opens, strings.Join(sortedKeys(s.Apps), ", "))
		case o.Kind != AppMiniProgram:
			l.errorf(p.v, field+".opens", "app %s is an official account: opens names the Mini Program whose page the card opens", tp.Opens)
		default:
			tp.opens = o
		}
	}
	if p, ok := m["id"]; ok && strings.ContainsFunc(tp.ID, func(r rune) bool { return r <= ' ' }) {
		l.errorf(p.v, field+".id", "%q has spaces: template ids have none", tp.ID)
	}
	if p, ok := m["keywords"]; ok {
		for _, kw := range l.pairs(p.v, field+".keywords") {
			l.keyword(tp, kw, field+".keywords."+kw.key)
			if tp.Keywords[kw.key] == TypeConst && tp.app != nil && !official {
				l.errorf(kw.k, field+".keywords."+kw.key, "const keywords belong to official account templates; a Mini Program's have enum (enum_string) instead")
			}
		}
	}
	return tp
}

// keyword reads one template keyword: "thing1: thing", or
// "thing1: {type: thing, label: 商品名称}", or an enum with its values.
func (l *loader) keyword(tp *Template, kw pair, field string) {
	l.pos[field] = nodePos(kw.k)
	km := keyRE.FindStringSubmatch(kw.key)
	if km == nil {
		l.errorf(kw.k, field, "keyword key %q: WeChat keys are a type and a number, like thing1 or character_string3", kw.key)
		l.badKeywords[tp.Name+"."+kw.key] = true
		return
	}
	prefix := km[1]
	if prefix == "enum_string" {
		prefix = TypeEnum
	}
	var typ, label string
	var enum []string
	v := resolve(kw.v)
	switch {
	case v.Kind == yaml.MappingNode:
		m := l.fields(v, field, keywordFields...)
		typ, label = l.get(m, "type", field), l.get(m, "label", field)
		if p, ok := m["enum"]; ok {
			enum, _ = l.strList(p.v, field+".enum")
			if typ := cmp.Or(typ, prefix); typ != TypeEnum && typ != TypeConst {
				l.errorf(p.k, field+".enum", "only enum and const keywords have values; %s is a %s", kw.key, typ)
			}
		}
	default:
		typ, _ = l.str(v, field)
	}
	switch {
	case !slices.Contains(KeywordTypes, prefix):
		l.errorf(kw.k, field, "keyword key %s: %q is not a keyword type (types: %s)", kw.key, prefix, strings.Join(KeywordTypes, ", "))
		l.badKeywords[tp.Name+"."+kw.key] = true
		return
	case typ != "" && typ != prefix:
		l.errorf(v, field, "keyword %s has type %s, but WeChat names keys after their type: %s is a %s", kw.key, typ, kw.key, prefix)
	}
	typ = prefix
	tp.Keywords[kw.key] = typ
	tp.Keys = append(tp.Keys, kw.key)
	if label != "" {
		tp.Labels[kw.key] = label
	}
	if len(enum) > 0 {
		tp.Enums[kw.key] = enum
	}
}

func (l *loader) rule(s *Set, i int, n *yaml.Node) *Rule {
	field := fmt.Sprintf("rules[%d]", i)
	n = resolve(n)
	l.pos[field] = nodePos(n)
	m := l.fields(n, field, ruleFields...)
	if n.Kind != yaml.MappingNode {
		return nil
	}
	l.require(n, m, field, "name", "on", "to")
	r := &Rule{Name: l.get(m, "name", field), Description: l.get(m, "description", field)}
	if p, ok := m["name"]; ok && r.Name != "" {
		l.checkName(p.v, field+".name", "rule", r.Name)
	}
	if p, ok := m["on"]; ok {
		var nodes []*yaml.Node
		r.On, nodes = l.strList(p.v, field+".on")
		for j, pat := range r.On {
			if err := checkPattern(pat); err != nil {
				f := field + ".on"
				if resolve(p.v).Kind == yaml.SequenceNode {
					f = fmt.Sprintf("%s[%d]", f, j)
				}
				l.errorf(nodes[j], f, "%v", err)
			}
		}
	}
	l.channels(s, r, n, m, field)
	if len(r.channels) > 0 {
		r.Template, r.App = r.channels[0].tpl, r.channels[0].app
	}
	r.Location = l.zone(m, "time_zone", field)
	if r.Location == nil && r.App != nil {
		r.Location = r.App.Location
	}
	if r.Location == nil {
		r.Location, _ = loadZone(DefaultTimeZone)
	}
	funcs, recipientFuncs := newFuncSet(r.Location, false), newFuncSet(r.Location, true)
	if p, ok := m["when"]; ok {
		r.When, _ = l.str(p.v, field+".when")
		l.when(r, resolve(p.v), field+".when")
	}
	if p, ok := m["page"]; ok {
		r.page = l.page(resolve(p.v), field+".page", funcs)
		if len(r.channels) > 0 && !r.opensPages() {
			l.errorf(p.k, field+".page", "no template of this rule opens a Mini Program page: an official account's template needs opens: naming the Mini Program")
		}
	}
	if p, ok := m["url"]; ok {
		r.url = l.webURL(resolve(p.v), field+".url", funcs)
		if len(r.channels) > 0 && !r.official() {
			l.errorf(p.k, field+".url", "url is the web page an official account's card opens, and this rule has no official account template")
		}
	}
	if p, ok := m["to"]; ok {
		r.to = l.recipients(resolve(p.v), field+".to", recipientFuncs)
	}
	l.data(r, m, n, field, funcs)
	l.policy(r, m, field, funcs)
	return r
}

func (l *loader) when(r *Rule, n *yaml.Node, field string) {
	if strings.TrimSpace(r.When) == "" {
		r.When = ""
		return
	}
	prog, counted, err := compileWhen(r.When)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			l.errorAt(l.lineColPos(n, fe.Line, fe.Column), field, "%s", fe.Message)
		} else {
			l.errorf(n, field, "%v", err)
		}
		return
	}
	if neverTrue(prog) {
		l.errorf(n, field, "%q is always false: the rule can never match", r.When)
		return
	}
	r.when, r.whenCounted = prog, counted
}

// text parses a templated value and reports syntax errors and unknown
// functions where they are.
func (l *loader) text(n *yaml.Node, field string, funcs *funcSet) *text {
	src, ok := l.str(n, field)
	if !ok {
		return nil
	}
	x, err := parseText(src, funcs)
	if err != nil {
		te := err.(*textError)
		p := l.lineColPos(n, te.line, 0)
		if te.off >= 0 {
			p = l.offsetPos(n, te.off)
		}
		if te.fn != "" {
			if off := fnOffset(src, te.fn); off >= 0 {
				p = l.offsetPos(n, off)
			}
		}
		l.errorAt(p, field, "%s", te.msg)
		return nil
	}
	return x
}

// fnOffset finds where a function name is called in a template.
func fnOffset(src, fn string) int {
	re := regexp.MustCompile(`(^|[\s(|{])` + regexp.QuoteMeta(fn) + `($|[\s)}])`)
	if loc := re.FindStringIndex(src); loc != nil {
		if loc[0] == 0 && strings.HasPrefix(src, fn) {
			return 0
		}
		return loc[0] + 1
	}
	return -1
}

func (l *loader) page(n *yaml.Node, field string, funcs *funcSet) *pageSpec {
	if n.Kind != yaml.MappingNode {
		x := l.text(n, field, funcs)
		if x == nil {
			return nil
		}
		if x.constant() && strings.ContainsFunc(clean(x.src), func(r rune) bool { return r == ' ' }) {
			l.errorf(n, field, "%q has spaces: a page is a path like pages/order/detail?id=1", x.src)
		}
		return &pageSpec{path: x}
	}
	m := l.fields(n, field, pageFields...)
	l.require(n, m, field, "path")
	ps := &pageSpec{}
	if p, ok := m["path"]; ok {
		ps.path = l.text(p.v, field+".path", funcs)
		if ps.path != nil && ps.path.constant() && strings.ContainsAny(ps.path.src, "? ") {
			l.errorf(p.v, field+".path", "%q: the path has no query or spaces; put parameters under query", ps.path.src)
		}
	}
	if p, ok := m["query"]; ok {
		for _, q := range l.pairs(p.v, field+".query") {
			if x := l.text(q.v, field+".query."+q.key, funcs); x != nil {
				ps.query = append(ps.query, queryParam{q.key, x})
			}
		}
	}
	if ps.path == nil {
		return nil
	}
	return ps
}

func (l *loader) recipients(n *yaml.Node, field string, funcs *funcSet) []recipientSpec {
	items := []*yaml.Node{n}
	single := true
	switch n.Kind {
	case yaml.SequenceNode:
		items, single = n.Content, false
		if len(items) == 0 {
			l.errorf(n, field, "no recipients: list at least one user, role or openid")
		}
	case yaml.MappingNode:
	default:
		l.errorf(n, field, "want a list of recipients (- user: ..., - role: ... scope: ..., - openid: ...)")
		return nil
	}
	var out []recipientSpec
	for i, it := range items {
		f, short := field, "to"
		if !single {
			f, short = fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("to[%d]", i)
		}
		it = resolve(it)
		m := l.fields(it, f, recipientFields...)
		if it.Kind != yaml.MappingNode {
			continue
		}
		spec := recipientSpec{field: short}
		var set []string
		for _, k := range []string{"user", "users", "role", "openid"} {
			if p, ok := m[k]; ok {
				set = append(set, k)
				x := l.text(p.v, f+"."+k, funcs)
				switch k {
				case "user", "users":
					spec.user = x
				case "role":
					spec.role = x
				case "openid":
					spec.openid = x
				}
				if x != nil && x.constant() && clean(x.src) == "" {
					l.errorf(p.v, f+"."+k, "empty %s", k)
				}
			}
		}
		switch {
		case len(set) == 0:
			l.errorf(it, f, "a recipient names a user (user: or users:), a role (role: with scope:) or an openid")
		case len(set) > 1:
			l.errorf(m[set[1]].k, f+"."+set[1], "a recipient is one of user, users, role or openid; this one has %s", strings.Join(set, " and "))
		}
		if p, ok := m["scope"]; ok {
			if spec.role == nil && len(set) > 0 {
				l.errorf(p.k, f+".scope", "scope goes with role")
			}
			spec.scope = l.text(p.v, f+".scope", funcs)
		}
		out = append(out, spec)
	}
	return out
}

// channels reads template: or via: — one or the other — into r.channels.
func (l *loader) channels(s *Set, r *Rule, n *yaml.Node, m map[string]pair, field string) {
	tp, hasTemplate := m["template"]
	vp, hasVia := m["via"]
	switch {
	case hasTemplate && hasVia:
		l.errorf(vp.k, field+".via", "a rule has template or via, not both: via lists the templates tried in order")
		return
	case !hasTemplate && !hasVia:
		l.errorf(n, field+".template", "missing required field template (or via: a list of templates tried in order)")
		return
	case hasTemplate:
		if isNull(resolve(tp.v)) {
			l.errorf(tp.k, field+".template", "missing required field template")
			return
		}
		name := l.get(m, "template", field)
		if t := l.templateRef(s, name, tp.v, field+".template"); t != nil {
			r.channels = []channel{{tpl: t, app: t.app}}
		}
		return
	}
	list := resolve(vp.v)
	if list.Kind != yaml.SequenceNode {
		l.errorf(list, field+".via", "want a list of templates tried in order ([a, b]), not %s", kindName(list))
		return
	}
	if len(list.Content) == 0 {
		l.errorf(list, field+".via", "no templates: via lists at least one")
		return
	}
	seen := map[string]int{}
	for i, it := range list.Content {
		f := fmt.Sprintf("%s.via[%d]", field, i)
		l.pos[f] = nodePos(resolve(it))
		name, ok := l.str(it, f)
		if !ok {
			continue
		}
		if prev, dup := seen[name]; dup {
			l.errorf(resolve(it), f, "template %s is already via[%d]: each template is tried once", name, prev)
			continue
		}
		seen[name] = i
		if t := l.templateRef(s, name, it, f); t != nil {
			r.channels = append(r.channels, channel{tpl: t, app: t.app})
		}
	}
}

func (l *loader) templateRef(s *Set, name string, n *yaml.Node, field string) *Template {
	t := s.Templates[name]
	if t == nil && name != "" {
		l.errorf(resolve(n), field, "template %q does not exist (templates: %s)", name, strings.Join(sortedKeys(s.Templates), ", "))
	}
	return t
}

// opensPages reports whether a channel of the rule opens a Mini Program
// page: a Mini Program's template, or an official account's that opens
// one.
func (r *Rule) opensPages() bool {
	for _, c := range r.channels {
		if c.tpl.Channel() == ChannelSubscribeMessage || c.tpl.opens != nil {
			return true
		}
	}
	return false
}

// official reports whether a channel of the rule is an official account's.
func (r *Rule) official() bool {
	for _, c := range r.channels {
		if c.tpl.Channel() != ChannelSubscribeMessage {
			return true
		}
	}
	return false
}

// webURL reads the url of a rule: a templated http(s) URL.
func (l *loader) webURL(n *yaml.Node, field string, funcs *funcSet) *text {
	x := l.text(n, field, funcs)
	if x == nil {
		return nil
	}
	src := strings.TrimSpace(x.src)
	if !strings.HasPrefix(src, "{{") && !strings.HasPrefix(src, "http://") && !strings.HasPrefix(src, "https://") {
		l.errorf(n, field, "%q is not a web page: url starts with https:// (or http://)", x.src)
	}
	return x
}

// data reads the rule's keyword values. They are shared by its channels:
// each template takes the keys it has, every key of every template must be
// given, and a key no template has is a mistake. Each value is checked
// against the type and values of each template that takes it.
func (l *loader) data(r *Rule, m map[string]pair, n *yaml.Node, field string, funcs *funcSet) {
	p, ok := m["data"]
	var entries []pair
	if ok {
		entries = l.pairs(p.v, field+".data")
	}
	given := map[string]bool{}
	for _, e := range entries {
		f := field + ".data." + e.key
		l.pos[f] = nodePos(e.v)
		given[e.key] = true
		x := l.text(e.v, f, funcs)
		if len(r.channels) == 0 {
			continue
		}
		taken, bad := false, false
		reported := map[string]bool{}
		for i := range r.channels {
			c := &r.channels[i]
			typ, known := c.tpl.Keywords[e.key]
			if !known {
				continue
			}
			taken = true
			if l.badKeywords[c.tpl.Name+"."+e.key] {
				bad = true
				continue
			}
			if x == nil {
				continue
			}
			enum := c.tpl.Enums[e.key]
			if msg := staticKeywordProblem(typ, x, r.Location, enum); msg != "" && !reported[msg] {
				reported[msg] = true
				if len(r.channels) > 1 {
					msg += " (template " + c.tpl.Name + ")"
				}
				l.errorf(e.v, f, "%s", msg)
			}
			c.data = append(c.data, keywordSpec{key: e.key, typ: typ, enum: enum, text: x})
		}
		if !taken && !bad {
			if len(r.channels) == 1 {
				t := r.channels[0].tpl
				l.errorf(e.k, f, "keyword %s is not in template %s (it has %s)", e.key, t.Name, strings.Join(t.Keys, ", "))
			} else {
				l.errorf(e.k, f, "keyword %s is in none of the templates of via (%s)", e.key, r.keysByTemplate())
			}
		}
	}
	for i := range r.channels {
		c := &r.channels[i]
		var missing []string
		for _, k := range c.tpl.Keys {
			if !given[k] {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			at, f := n, field
			if ok {
				at, f = p.k, field+".data"
			}
			l.errorf(at, f, "no value for %s of template %s: WeChat refuses a message with a keyword missing", strings.Join(missing, ", "), c.tpl.Name)
		}
		// Render in the template's order, so errors and cards follow it.
		order := map[string]int{}
		for i, k := range c.tpl.Keys {
			order[k] = i
		}
		slices.SortStableFunc(c.data, func(a, b keywordSpec) int { return order[a.key] - order[b.key] })
	}
	if len(r.channels) > 0 {
		r.data = r.channels[0].data
	}
}

// keysByTemplate lists each channel's keys: "a: thing1, time2; b: thing2".
func (r *Rule) keysByTemplate() string {
	parts := make([]string, len(r.channels))
	for i, c := range r.channels {
		parts[i] = c.tpl.Name + ": " + strings.Join(c.tpl.Keys, ", ")
	}
	return strings.Join(parts, "; ")
}

func (l *loader) policy(r *Rule, m map[string]pair, field string, funcs *funcSet) {
	r.Policy.Delivery = l.oneOf(m, "delivery", field, AtLeastOnce, AtLeastOnce, AtMostOnce)
	if p, ok := m["quiet_hours"]; ok {
		r.Policy.QuietHours = l.quietHours(resolve(p.v), field+".quiet_hours", r.Location)
	}
	if p, ok := m["dedupe"]; ok {
		f := field + ".dedupe"
		dm := l.fields(p.v, f, dedupeFields...)
		l.require(p.v, dm, f, "key", "window")
		if kp, ok := dm["key"]; ok {
			r.dedup = l.text(kp.v, f+".key", funcs)
		}
		if wp, ok := dm["window"]; ok {
			if w := l.duration(wp.v, f+".window"); w > 0 {
				r.Policy.Dedupe = &Dedupe{Window: w}
			}
		}
		if r.dedup == nil || r.Policy.Dedupe == nil {
			r.dedup, r.Policy.Dedupe = nil, nil
		}
	}
	if p, ok := m["frequency_cap"]; ok {
		f := field + ".frequency_cap"
		cm := l.fields(p.v, f, capFields...)
		l.require(p.v, cm, f, "max", "per")
		c := &FrequencyCap{}
		if mp, ok := cm["max"]; ok {
			s, _ := l.str(mp.v, f+".max")
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				l.errorf(mp.v, f+".max", "%q is not a count: want a whole number of messages, 1 or more", s)
			}
			c.Max = n
		}
		if pp, ok := cm["per"]; ok {
			c.Per = l.duration(pp.v, f+".per")
		}
		if c.Max > 0 && c.Per > 0 {
			r.Policy.Cap = c
		}
	}
}

func (l *loader) duration(n *yaml.Node, field string) time.Duration {
	s, ok := l.str(n, field)
	if !ok {
		return 0
	}
	d, err := parseDuration(s)
	if err == nil && d <= 0 {
		err = fmt.Errorf("%q: a window must be longer than zero", s)
	}
	if err != nil {
		l.errorf(n, field, "%v", err)
		return 0
	}
	return d
}

func (l *loader) quietHours(n *yaml.Node, field string, loc *time.Location) *QuietHours {
	q := &QuietHours{Location: loc, Action: QuietDefer}
	window, windowNode, windowField := "", n, field
	if n.Kind == yaml.MappingNode {
		m := l.fields(n, field, quietFields...)
		l.require(n, m, field, "window")
		if p, ok := m["window"]; ok {
			window, _ = l.str(p.v, field+".window")
			windowNode, windowField = resolve(p.v), field+".window"
		}
		if z := l.zone(m, "time_zone", field); z != nil {
			q.Location = z
		}
		q.Action = l.oneOf(m, "action", field, QuietDefer, QuietDefer, QuietDrop)
	} else {
		window, _ = l.str(n, field)
	}
	if window == "" {
		return nil
	}
	var err error
	if q.Start, q.End, err = parseWindow(window); err != nil {
		l.errorf(windowNode, windowField, "%v", err)
		return nil
	}
	return q
}
