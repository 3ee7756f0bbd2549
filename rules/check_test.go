package rules_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/rules"
)

// head is a valid start of a file: the cases below add to it, so their
// line numbers start at 13.
const head = `apps:
  main:
    appid: wx0123456789abcdef
    secret: s3cret
templates:
  t:
    app: main
    id: TPL_T
    keywords:
      thing1: {label: 商品}
      phrase2: phrase
      time3: time
`

// rule is a valid rule for head, from line 13.
const rule = `rules:
  - name: r
    on: order.created
    template: t
    to:
      - user: "{{ .data.buyer_id }}"
    data:
      thing1: "{{ .data.item }}"
      phrase2: 已发货
      time3: "{{ .data.at }}"
`

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

// parseErrors parses src and returns its problems as
// "line:col field: message" strings.
func parseErrors(t *testing.T, src string) []string {
	t.Helper()
	_, err := rules.Parse("rules.yaml", []byte(src), env(map[string]string{"SET": "x"}))
	if err == nil {
		return nil
	}
	var list rules.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Parse error %T is not an ErrorList: %v", err, err)
	}
	var out []string
	for _, e := range list {
		out = append(out, strings.TrimPrefix(e.Error(), "rules.yaml:"))
	}
	return out
}

func TestValidFilesParse(t *testing.T) {
	if errs := parseErrors(t, head+rule); errs != nil {
		t.Fatalf("valid file: %s", strings.Join(errs, "\n"))
	}
	if errs := parseErrors(t, ""); errs != nil {
		t.Fatalf("empty file: %s", strings.Join(errs, "\n"))
	}
}

// TestCheckErrors is every problem Parse (and `wxbridge rules check`)
// reports, each with its exact position and field.
func TestCheckErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      string // "line:col: field: " and the start of the message
	}{
		// The file itself.
		{"yaml syntax", "apps:\n  main: [\n", `2:1: YAML: did not find expected node content`},
		{"second document", head + rule + "---\nrules: []\n", `23:1: a second YAML document`},
		{"unknown top-level field", head + "rulez: []\n", `13:1: rulez: unknown field "rulez" (did you mean "rules"?)`},
		{"rules not a list", head + "rules: {name: r}\n", `13:8: rules: want a list of rules`},
		{"duplicate key", head + rule + "    on: order.paid\n", `23:5: rules[0].on: defined twice (first at line 15)`},

		// Environment variables.
		{"missing variable", strings.Replace(head, "s3cret", "${MAIN_SECRET}", 1) + rule,
			`4:13: apps.main.secret: environment variable MAIN_SECRET is not set`},
		{"missing variable mid-value", strings.Replace(head, "s3cret", "pre-${MAIN_SECRET}", 1) + rule,
			`4:17: apps.main.secret: environment variable MAIN_SECRET is not set`},
		{"malformed variable", strings.Replace(head, "s3cret", "${1X}", 1) + rule,
			`4:13: apps.main.secret: ${1X}: "1X" is not a variable name`},
		{"unclosed variable", strings.Replace(head, "s3cret", "${SET", 1) + rule,
			`4:13: apps.main.secret: unclosed ${`},

		// Apps.
		{"app unknown field", strings.Replace(head, "    secret:", "    colour: red\n    secret:", 1) + rule,
			`4:5: apps.main.colour: unknown field "colour"`},
		{"app missing secret", strings.Replace(head, "    secret: s3cret\n", "", 1) + rule,
			`3:5: apps.main.secret: missing required field secret`},
		{"bad appid", strings.Replace(head, "wx0123456789abcdef", "wx123", 1) + rule,
			`3:12: apps.main.appid: "wx123" is not an AppID`},
		{"bad aes key", strings.Replace(head, "    secret: s3cret\n", "    secret: s3cret\n    aes_key: short\n", 1) + rule,
			`5:14: apps.main.aes_key: an EncodingAESKey is 43 characters, this one is 5`},
		{"bad state", strings.Replace(head, "    secret: s3cret\n", "    secret: s3cret\n    state: live\n", 1) + rule,
			`5:12: apps.main.state: "live" is not one of developer, trial, formal`},
		{"allow_plaintext_push not a boolean", strings.Replace(head, "    secret: s3cret\n", "    secret: s3cret\n    allow_plaintext_push: yes\n", 1) + rule,
			`5:27: apps.main.allow_plaintext_push: "yes" is not true or false`},
		{"bad bind", strings.Replace(head, "    secret: s3cret\n", "    secret: s3cret\n    bind: openid\n", 1) + rule,
			`5:11: apps.main.bind: "openid" is not one of any, code`},
		{"bad time zone", strings.Replace(head, "    secret: s3cret\n", "    secret: s3cret\n    time_zone: Beijing\n", 1) + rule,
			`5:16: apps.main.time_zone: unknown time zone "Beijing"`},
		{"bad app name", strings.Replace(head, "  main:", "  main app:", 1), `2:3: apps.main app: app name "main app"`},

		// Templates.
		{"template of unknown app", strings.Replace(head, "app: main", "app: mian", 1) + rule,
			`7:10: templates.t.app: app "mian" does not exist (apps: main)`},
		{"template missing id", strings.Replace(head, "    id: TPL_T\n", "", 1) + rule,
			`7:5: templates.t.id: missing required field id`},
		{"template bad kind", strings.Replace(head, "    id: TPL_T\n", "    id: TPL_T\n    kind: forever\n", 1) + rule,
			`9:11: templates.t.kind: "forever" is not one of one_time, long_term`},
		{"keyword bad key", strings.Replace(head, "time3: time", "when3: time", 1) + rule,
			`12:7: templates.t.keywords.when3: keyword key when3: "when" is not a keyword type`},
		{"keyword key without number", strings.Replace(head, "time3: time", "time: time", 1) + rule,
			`12:7: templates.t.keywords.time: keyword key "time": WeChat keys are a type and a number`},
		{"keyword type against key", strings.Replace(head, "time3: time", "time3: date", 1) + rule,
			`12:14: templates.t.keywords.time3: keyword time3 has type date, but WeChat names keys after their type`},
		{"keyword unknown field", strings.Replace(head, "{label: 商品}", "{lable: 商品}", 1) + rule,
			`10:16: templates.t.keywords.thing1.lable: unknown field "lable" (did you mean "label"?)`},
		{"enum values on a thing", strings.Replace(head, "{label: 商品}", "{enum: [a]}", 1) + rule,
			`10:16: templates.t.keywords.thing1.enum: only enum and const keywords have values`},

		// Rules: names, patterns, references.
		{"rule missing name", strings.Replace(head+rule, "  - name: r\n    on:", "  - on:", 1),
			`14:5: rules[0].name: missing required field name`},
		{"rule unknown field", head + rule + "    priority: high\n",
			`23:5: rules[0].priority: unknown field "priority"`},
		{"duplicate rule name", head + rule + strings.TrimPrefix(rule, "rules:\n"),
			`23:11: rules[1].name: rule name "r" is already used by rules[0]`},
		{"bad rule name", strings.Replace(head+rule, "name: r", "name: my rule", 1),
			`14:11: rules[0].name: rule name "my rule"`},
		{"empty token", strings.Replace(head+rule, "on: order.created", "on: order..created", 1),
			`15:9: rules[0].on: "order..created" has an empty token`},
		{"> not last", strings.Replace(head+rule, "on: order.created", "on: [order.created, order.>.x]", 1),
			`15:25: rules[0].on[1]: "order.>.x" has > before the end`},
		{"partial wildcard", strings.Replace(head+rule, "on: order.created", "on: order*", 1),
			`15:9: rules[0].on: "order*" has "order*": wildcards are whole tokens`},
		{"empty pattern", strings.Replace(head+rule, "on: order.created", `on: ""`, 1),
			`15:9: rules[0].on: empty pattern`},
		{"unknown template", strings.Replace(head+rule, "template: t", "template: tt", 1),
			`16:15: rules[0].template: template "tt" does not exist (templates: t)`},

		// Conditions.
		{"when syntax", strings.Replace(head+rule, "    template: t\n", "    when: data.amount >> 0\n    template: t\n", 1),
			`16:24: rules[0].when: unexpected token Operator(">")`},
		{"when unknown function", strings.Replace(head+rule, "    template: t\n", "    when: big(data.amount)\n    template: t\n", 1),
			`16:11: rules[0].when: unknown name big`},
		{"when unknown variable", strings.Replace(head+rule, "    template: t\n", "    when: amount > 0\n    template: t\n", 1),
			`16:11: rules[0].when: unknown name amount`},
		{"when never true", strings.Replace(head+rule, "    template: t\n", "    when: 1 > 2\n    template: t\n", 1),
			`16:11: rules[0].when: "1 > 2" is always false: the rule can never match`},
		{"when never true with +", strings.Replace(head+rule, "    template: t\n", "    when: 1 + 1 > 2\n    template: t\n", 1),
			`16:11: rules[0].when: "1 + 1 > 2" is always false: the rule can never match`},
		{"when too long", strings.Replace(head+rule, "    template: t\n", "    when: "+strings.Repeat("data.x > 0 && ", 200)+"true\n    template: t\n", 1),
			`16:2346: rules[0].when: compilation failed: expression exceeds maximum allowed nodes`},

		// Recipients.
		{"no recipients", strings.Replace(head+rule, "    to:\n      - user: \"{{ .data.buyer_id }}\"\n", "    to: []\n", 1),
			`17:9: rules[0].to: no recipients`},
		{"recipient names nobody", strings.Replace(head+rule, `      - user: "{{ .data.buyer_id }}"`, `      - scope: x`, 1),
			`18:9: rules[0].to[0]: a recipient names a user`},
		{"recipient names two", strings.Replace(head+rule, `      - user: "{{ .data.buyer_id }}"`, "      - user: u-1\n        openid: o-1", 1),
			`19:9: rules[0].to[0].openid: a recipient is one of user, users, role or openid; this one has user and openid`},
		{"scope without role", strings.Replace(head+rule, `      - user: "{{ .data.buyer_id }}"`, "      - user: u-1\n        scope: x", 1),
			`19:9: rules[0].to[0].scope: scope goes with role`},
		{"recipient unknown field", strings.Replace(head+rule, `      - user: "{{ .data.buyer_id }}"`, `      - group: admins`, 1),
			`18:9: rules[0].to[0].group: unknown field "group"`},

		// Templated text.
		{"template syntax", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: "{{ .data.item }"`, 1),
			`20:16: rules[0].data.thing1: unexpected "}" in operand`},
		{"unknown function", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: "{{ upcase .data.item }}"`, 1),
			`20:19: rules[0].data.thing1: unknown function "upcase"`},
		{"unknown function in a block", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, "thing1: |\n        {{ .data.item }}\n        {{ shout .data.x }}", 1),
			`22:12: rules[0].data.thing1: unknown function "shout"`},
		{"range over a number past the limit", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: "{{ range 100000000 }}{{ end }}"`, 1),
			`20:25: rules[0].data.thing1: range over 100000000: more than the 10000 iterations one value may make`},
		{"nested ranges past the limit", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: "x{{ range 1000 }}{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}{{ end }}"`, 1),
			`20:42: rules[0].data.thing1: these ranges over numbers make at least 1001000 iterations, more than the 10000`},
		{"ranges one after the other past the limit", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: "{{ range 5000 }}{{ end }}{{ range $i := 5001 }}{{ end }}"`, 1),
			`20:50: rules[0].data.thing1: these ranges over numbers make at least 10001 iterations`},
		{"define", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: '{{ define "a" }}x{{ end }}{{ template "a" }}'`, 1),
			`20:32: rules[0].data.thing1: {{ define }} and {{ block }} are not supported`},
		{"block", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: '{{ block "a" . }}x{{ end }}'`, 1),
			`20:33: rules[0].data.thing1: {{ define }} and {{ block }} are not supported`},
		{"assignment to $", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: "{{ range $ := .data.l }}{{ end }}"`, 1),
			`20:25: rules[0].data.thing1: $ is the event and cannot be assigned`},
		{"page with spaces", strings.Replace(head+rule, "    to:\n", "    page: pages/order detail\n    to:\n", 1),
			`17:11: rules[0].page: "pages/order detail" has spaces`},
		{"page path with query", strings.Replace(head+rule, "    to:\n", "    page: {path: \"p?id=1\"}\n    to:\n", 1),
			`17:18: rules[0].page.path: "p?id=1": the path has no query or spaces`},

		// Keyword data.
		{"keyword not in template", head + rule + "      thing9: x\n",
			`23:7: rules[0].data.thing9: keyword thing9 is not in template t (it has thing1, phrase2, time3)`},
		{"keyword left out", strings.Replace(head+rule, "      phrase2: 已发货\n", "", 1),
			`19:5: rules[0].data: no value for phrase2 of template t`},
		{"no data at all", strings.Replace(head+rule, "    data:\n      thing1: \"{{ .data.item }}\"\n      phrase2: 已发货\n      time3: \"{{ .data.at }}\"\n", "", 1),
			`14:5: rules[0]: no value for thing1, phrase2, time3 of template t`},
		{"thing literal overflows", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: 这是一段非常非常非常非常非常长的说明文字啊`, 1),
			`20:15: rules[0].data.thing1: "这是一段非常非常非常非常非常长的说明文字啊" is 21 characters; thing allows 20`},
		{"thing text around placeholders overflows", strings.Replace(head+rule, `thing1: "{{ .data.item }}"`, `thing1: "您购买的商品已经由仓库打包完成并交给快递公司：{{ .data.item }}"`, 1),
			`20:15: rules[0].data.thing1: the text around the placeholders is already 23 characters; thing allows 20 in all`},
		{"phrase literal not Chinese", strings.Replace(head+rule, "phrase2: 已发货", "phrase2: Shipped", 1),
			`21:16: rules[0].data.phrase2: "Shipped" has 'S': phrase takes Chinese characters only`},
		{"phrase text around placeholders", strings.Replace(head+rule, "phrase2: 已发货", `phrase2: "状态{{ .data.s }}!"`, 1),
			`21:16: rules[0].data.phrase2: the text around the placeholders has '!', which phrase does not allow`},
		{"time literal not a time", strings.Replace(head+rule, `time3: "{{ .data.at }}"`, "time3: soon", 1),
			`22:14: rules[0].data.time3: cannot read "soon" as a time`},

		// Policies.
		{"bad delivery", head + rule + "    delivery: exactly_once\n",
			`23:15: rules[0].delivery: "exactly_once" is not one of at_least_once, at_most_once`},
		{"bad quiet window", head + rule + "    quiet_hours: 22:00-8\n",
			`23:18: rules[0].quiet_hours: "22:00-8" is not a window`},
		{"quiet window out of range", head + rule + "    quiet_hours: {window: \"22:00-24:30\"}\n",
			`23:27: rules[0].quiet_hours.window: 24:30 is not a time of day`},
		{"empty quiet window", head + rule + "    quiet_hours: 08:00-08:00\n",
			`23:18: rules[0].quiet_hours: "08:00-08:00" is empty or the whole day`},
		{"bad quiet action", head + rule + "    quiet_hours: {window: \"22:00-08:00\", action: wait}\n",
			`23:50: rules[0].quiet_hours.action: "wait" is not one of defer, drop`},
		{"bad quiet zone", head + rule + "    quiet_hours: {window: \"22:00-08:00\", time_zone: Mars}\n",
			`23:53: rules[0].quiet_hours.time_zone: unknown time zone "Mars"`},
		{"dedupe without key", head + rule + "    dedupe: {window: 10m}\n",
			`23:13: rules[0].dedupe.key: missing required field key`},
		{"bad dedupe window", head + rule + "    dedupe: {key: \"{{ .id }}\", window: 10 minutes}\n",
			`23:40: rules[0].dedupe.window: "10 minutes" is not a duration`},
		{"zero dedupe window", head + rule + "    dedupe: {key: \"{{ .id }}\", window: 0s}\n",
			`23:40: rules[0].dedupe.window: "0s": a window must be longer than zero`},
		{"bad cap", head + rule + "    frequency_cap: {max: many, per: 1h}\n",
			`23:26: rules[0].frequency_cap.max: "many" is not a count`},
		{"cap without per", head + rule + "    frequency_cap: {max: 3}\n",
			`23:20: rules[0].frequency_cap.per: missing required field per`},
		{"bad rule time zone", head + rule + "    time_zone: UTC+8\n",
			`23:16: rules[0].time_zone: unknown time zone "UTC+8"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := parseErrors(t, tt.src)
			for _, e := range errs {
				if strings.HasPrefix(e, tt.want) {
					return
				}
			}
			t.Errorf("want an error starting %q; got:\n%s", tt.want, strings.Join(errs, "\n"))
		})
	}
}

// Rules can share settings through YAML anchors, kept under top-level x-
// keys, and merge keys.
func TestAnchorsAndMerge(t *testing.T) {
	set := mustParse(`
x-defaults:
  quiet: &quiet {window: "22:00-08:00", action: drop}
  rule: &base
    template: t
    to: [user: "{{ .data.user }}"]
    data: {thing1: "{{ .data.item }}"}
    quiet_hours: *quiet
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates: {t: {app: main, id: T, keywords: {thing1: thing}}}
rules:
  - <<: *base
    name: a
    on: order.created
  - <<: *base
    name: b
    on: order.paid
    quiet_hours: "23:00-07:00"
`)
	a, b := set.Rules[0], set.Rules[1]
	if a.Policy.QuietHours.String() != "22:00-08:00 Asia/Shanghai, drop" || b.Policy.QuietHours.String() != "23:00-07:00 Asia/Shanghai, defer" {
		t.Errorf("quiet hours %v / %v", a.Policy.QuietHours, b.Policy.QuietHours)
	}
	msg, err := b.Render(event("order.paid", `{"item": "键盘"}`))
	if err != nil || msg.Data["thing1"] != "键盘" {
		t.Errorf("merged rule renders %v, %v", msg, err)
	}
}

// Execution errors read as the template was written, not as wxbridge
// rewrote it.
func TestExecErrorsReadAsWritten(t *testing.T) {
	p := oneThing(t, `{{ .data.x 1 }}`).Preview(event("x", `{"x": 1}`))
	if err := p.Keywords[0].Err; err == nil || !strings.Contains(err.Error(), ".data.x") || strings.Contains(err.Error(), "__") {
		t.Errorf("error %v", err)
	}
}

// Every function FuncNames lists (and docs/rules.md describes) is callable.
func TestFuncNames(t *testing.T) {
	for _, fn := range rules.FuncNames {
		src := strings.Replace(head+rule, `"{{ .data.item }}"`, `"{{ `+fn+` }}x"`, 1)
		for _, e := range parseErrors(t, src) {
			if strings.Contains(e, "unknown function") {
				t.Errorf("%s: %s", fn, e)
			}
		}
	}
}

// Aliases cannot make Parse loop or blow up: a mapping that merges itself
// is an error, and a billion merged entries take no time.
func TestMergeBombs(t *testing.T) {
	errs := parseErrors(t, "apps: &m {<<: *m}\n")
	if len(errs) != 1 || !strings.HasPrefix(errs[0], "1:11: apps: << merges a mapping into itself") {
		t.Errorf("self merge: %q", errs)
	}
	var b strings.Builder
	b.WriteString("x-0: &a0 {appid: wx0123456789abcdef, secret: s}\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "x-%d: &a%d {<<: [%s]}\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	b.WriteString("apps: {main: *a9}\n")
	if errs := parseErrors(t, b.String()); errs != nil {
		t.Errorf("merge bomb: %q", errs)
	}
}

// The push and identity settings of an app: safe by default where that
// breaks nothing (plaintext refused once a key is set), today's behaviour
// where it would (openid binds allowed); ${VAR} works for both.
func TestAppSecuritySettings(t *testing.T) {
	tests := []struct {
		name      string
		app       string
		env       map[string]string
		plaintext bool
		bind      string
	}{
		{"defaults", "", nil, false, rules.BindAny},
		{"explicit", "    allow_plaintext_push: true\n    bind: code\n", nil, true, rules.BindCode},
		{"explicit off", "    allow_plaintext_push: false\n    bind: any\n", nil, false, rules.BindAny},
		{"from the environment", "    allow_plaintext_push: ${MIGRATING:-false}\n    bind: ${BIND:-any}\n",
			map[string]string{"MIGRATING": "true", "BIND": "code"}, true, rules.BindCode},
		{"environment defaults", "    allow_plaintext_push: ${MIGRATING:-false}\n    bind: ${BIND:-any}\n", nil, false, rules.BindAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(head, "    secret: s3cret\n", "    secret: s3cret\n"+tt.app, 1) + rule
			set, err := rules.Parse("rules.yaml", []byte(src), func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			if a := set.Apps["main"]; a.AllowPlaintextPush != tt.plaintext || a.Bind != tt.bind {
				t.Errorf("allow_plaintext_push %v, bind %q; want %v, %q", a.AllowPlaintextPush, a.Bind, tt.plaintext, tt.bind)
			}
		})
	}
}
