package rules_test

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/wxbridge/wxbridge/rules"
)

// oaHead has a Mini Program, an official account and a template of each
// kind; rules start at line 39.
const oaHead = `apps:
  main:
    appid: wx0123456789abcdef
    secret: s3cret
  service:
    kind: official_account
    appid: wx0a0a0a0a0a0a0a0a
    secret: s3cret
templates:
  mp:
    app: main
    id: TPL_MP
    keywords: {thing1: thing, character_string3: character_string, time4: time}
  oa_msg:
    app: service
    id: TPL_OA_MSG
    kind: template_message
    opens: main
    title: 对账单通知
    keywords:
      thing2: {label: 对账单位}
      character_string3: {label: 账期}
      const4: {label: 状态, enum: [已出账, 已结清]}
      time5: {label: 出账时间}
  oa_biz:
    app: service
    id: TPL_OA_BIZ
    keywords: {thing1: thing}
  oa_plain:
    app: service
    id: TPL_OA_PLAIN
    kind: template_message
    keywords: {thing2: thing}
  main_long:
    app: main
    id: TPL_MP_LONG
    kind: long_term
    keywords: {phrase1: phrase}
`

// oaRule sends mp, then oa_msg, then oa_biz; from line 39.
const oaRule = `rules:
  - name: statement
    on: statement.issued
    via: [mp, oa_msg, oa_biz]
    page: pages/statement/detail?id={{ .data.id }}
    url: https://example.com/s/{{ .data.id }}
    to:
      - user: "{{ .data.user }}"
    data:
      thing1: "{{ .data.buyer }}"
      thing2: "{{ .data.seller }}"
      character_string3: "{{ .data.month }}"
      time4: "{{ .data.at }}"
      const4: 已出账
      time5: "{{ .data.at }}"
`

func TestOfficialAccountFileParses(t *testing.T) {
	set := mustParse(oaHead + oaRule)
	if a := set.Apps["service"]; a.Kind != rules.AppOfficialAccount || set.Apps["main"].Kind != rules.AppMiniProgram {
		t.Errorf("kinds: service %q, main %q", a.Kind, set.Apps["main"].Kind)
	}
	want := map[string]string{"mp": rules.ChannelSubscribeMessage, "main_long": rules.ChannelSubscribeMessage,
		"oa_msg": rules.ChannelTemplateMessage, "oa_plain": rules.ChannelTemplateMessage, "oa_biz": rules.ChannelSubscriptionNotification}
	for name, ch := range want {
		if got := set.Templates[name].Channel(); got != ch {
			t.Errorf("%s.Channel() = %s, want %s", name, got, ch)
		}
	}
	r := set.Rules[0]
	var names []string
	for _, c := range r.Channels() {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "mp,oa_msg,oa_biz" || r.Template.Name != "mp" || r.App.Name != "main" {
		t.Errorf("Channels() = %v, Template %s, App %s", names, r.Template.Name, r.App.Name)
	}
}

// The official account's problems, each at its line, column and field.
func TestOfficialAccountCheckErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"app kind", strings.Replace(oaHead, "kind: official_account", "kind: service_account", 1) + oaRule,
			`6:11: apps.service.kind: "service_account" is not one of mini_program, official_account`},
		{"state on an official account", strings.Replace(oaHead, "    kind: official_account\n", "    kind: official_account\n    state: formal\n", 1) + oaRule,
			`7:5: apps.service.state: state is the miniprogram_state of a Mini Program's messages`},
		{"template message on a Mini Program", strings.Replace(oaHead, "    kind: long_term\n", "    kind: template_message\n", 1) + oaRule,
			`37:11: templates.main_long.kind: template_message is an official account's kind of template; app main is a Mini Program`},
		{"template kind", strings.Replace(oaHead, "    kind: long_term\n", "    kind: template\n", 1) + oaRule,
			`37:11: templates.main_long.kind: "template" is not one of one_time, long_term, template_message`},
		{"opens on a Mini Program template", strings.Replace(oaHead, "    kind: long_term\n", "    kind: long_term\n    opens: main\n", 1) + oaRule,
			`38:5: templates.main_long.opens: opens is for official account templates`},
		{"opens an unknown app", strings.Replace(oaHead, "opens: main", "opens: mian", 1) + oaRule,
			`18:12: templates.oa_msg.opens: app "mian" does not exist (apps: main, service)`},
		{"opens an official account", strings.Replace(oaHead, "opens: main", "opens: service", 1) + oaRule,
			`18:12: templates.oa_msg.opens: app service is an official account`},
		{"const on a Mini Program", strings.Replace(oaHead, "phrase1: phrase", "const1: const", 1) + oaRule,
			`38:16: templates.main_long.keywords.const1: const keywords belong to official account templates`},
		{"template and via", strings.Replace(oaHead+oaRule, "    via: [mp, oa_msg, oa_biz]\n", "    template: mp\n    via: [mp, oa_msg, oa_biz]\n", 1),
			`43:5: rules[0].via: a rule has template or via, not both`},
		{"neither template nor via", strings.Replace(oaHead+oaRule, "    via: [mp, oa_msg, oa_biz]\n", "", 1),
			`40:5: rules[0].template: missing required field template (or via: a list of templates tried in order)`},
		{"via empty", strings.Replace(oaHead+oaRule, "[mp, oa_msg, oa_biz]", "[]", 1),
			`42:10: rules[0].via: no templates: via lists at least one`},
		{"via not a list", strings.Replace(oaHead+oaRule, "[mp, oa_msg, oa_biz]", "mp", 1),
			`42:10: rules[0].via: want a list of templates tried in order ([a, b]), not a value`},
		{"via twice the same", strings.Replace(oaHead+oaRule, "[mp, oa_msg, oa_biz]", "[mp, oa_msg, mp]", 1),
			`42:23: rules[0].via[2]: template mp is already via[0]`},
		{"via unknown template", strings.Replace(oaHead+oaRule, "[mp, oa_msg, oa_biz]", "[mp, oa_mgs]", 1),
			`42:15: rules[0].via[1]: template "oa_mgs" does not exist (templates: main_long, mp, oa_biz, oa_msg, oa_plain)`},
		{"a key in no template", strings.Replace(oaHead+oaRule, "      time5: \"{{ .data.at }}\"\n", "      time5: \"{{ .data.at }}\"\n      thing9: x\n", 1),
			`54:7: rules[0].data.thing9: keyword thing9 is in none of the templates of via (mp: thing1, character_string3, time4; oa_msg: thing2, character_string3, const4, time5; oa_biz: thing1)`},
		{"a key of the second template missing", strings.Replace(oaHead+oaRule, "      const4: 已出账\n", "", 1),
			`47:5: rules[0].data: no value for const4 of template oa_msg`},
		{"a value the second template refuses", strings.Replace(oaHead+oaRule, "const4: 已出账", "const4: 已作废", 1),
			`52:15: rules[0].data.const4: "已作废" is not one of the template's values "已出账", "已结清" (template oa_msg)`},
		{"url on a Mini Program rule", strings.Replace(oaHead+oaRule, "[mp, oa_msg, oa_biz]", "[mp]", 1),
			`44:5: rules[0].url: url is the web page an official account's card opens, and this rule has no official account template`},
		{"url not a web page", strings.Replace(oaHead+oaRule, "url: https://example.com", "url: example.com", 1),
			`44:10: rules[0].url: "example.com/s/{{ .data.id }}" is not a web page`},
		{"page no template opens", strings.Replace(oaHead+oaRule, "[mp, oa_msg, oa_biz]", "[oa_biz, oa_plain]", 1),
			`43:5: rules[0].page: no template of this rule opens a Mini Program page`},
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

// template: x is exactly via: [x].
func TestTemplateIsViaOfOne(t *testing.T) {
	a := mustParse(head + rule)
	b := mustParse(head + strings.Replace(rule, "template: t", "via: [t]", 1))
	ev := event("order.created", `{"buyer_id":"u-1","item":"茶叶","at":"2026-11-01T09:00:00+08:00"}`)
	ra, rb := a.Rules[0], b.Rules[0]
	if len(rb.Channels()) != 1 || rb.Channels()[0] != rb.Template || rb.Template.Name != "t" {
		t.Fatalf("via [t]: Channels %v", rb.Channels())
	}
	ma, errA := ra.Render(ev)
	mb, errB := rb.RenderFor(ev, rb.Template)
	if errA != nil || errB != nil || !reflect.DeepEqual(ma, mb) {
		t.Fatalf("template: %+v %v\nvia: %+v %v", ma, errA, mb, errB)
	}
	if ma.Channel != rules.ChannelSubscribeMessage || ma.Template != "t" || ma.URL != "" || ma.MiniProgram != nil {
		t.Errorf("rendered %+v", ma)
	}
	if pa, pb := ra.Preview(ev).Card(), rb.Preview(ev).Card(); pa != pb {
		t.Errorf("cards differ:\n%s\n%s", pa, pb)
	}
}

var statementEvent = `{"id":"S-42","user":"u-17","buyer":"Acme 有限公司","seller":"Supplier","month":"2026-10","at":"2026-11-01T09:00:00+08:00"}`

// Each channel renders what its API takes, with the keys its template has.
func TestRenderFor(t *testing.T) {
	set := mustParse(oaHead + oaRule)
	r := set.Rules[0]
	ev := event("statement.issued", statementEvent)
	tpl := set.Templates
	tests := []struct {
		tpl  string
		want rules.Rendered
	}{
		{"mp", rules.Rendered{App: "main", Template: "mp", TemplateID: "TPL_MP", Channel: rules.ChannelSubscribeMessage,
			Page: "pages/statement/detail?id=S-42",
			Data: map[string]string{"thing1": "Acme 有限公司", "character_string3": "2026-10", "time4": "2026-11-01 09:00"}}},
		{"oa_msg", rules.Rendered{App: "service", Template: "oa_msg", TemplateID: "TPL_OA_MSG", Channel: rules.ChannelTemplateMessage,
			URL: "https://example.com/s/S-42", MiniProgram: &rules.MiniProgramPage{AppID: "wx0123456789abcdef", PagePath: "pages/statement/detail?id=S-42"},
			Data: map[string]string{"thing2": "Supplier", "character_string3": "2026-10", "const4": "已出账", "time5": "2026-11-01 09:00"}}},
		{"oa_biz", rules.Rendered{App: "service", Template: "oa_biz", TemplateID: "TPL_OA_BIZ", Channel: rules.ChannelSubscriptionNotification,
			URL: "https://example.com/s/S-42", Data: map[string]string{"thing1": "Acme 有限公司"}}},
	}
	for _, tt := range tests {
		got, err := r.RenderFor(ev, tpl[tt.tpl])
		if err != nil || !reflect.DeepEqual(*got, tt.want) {
			t.Errorf("RenderFor(%s) = %+v, %v\nwant %+v", tt.tpl, got, err, tt.want)
		}
	}
	if m, err := r.Render(ev); err != nil || m.Template != "mp" {
		t.Errorf("Render renders the first channel: %+v, %v", m, err)
	}
	if _, err := r.RenderFor(ev, tpl["oa_plain"]); err == nil || !strings.Contains(err.Error(), "not one of its channels") {
		t.Errorf("a template of no channel: %v", err)
	}
	// A url that renders something other than a web page fails that
	// channel, naming url; the Mini Program's message does not use it.
	bad := mustParse(oaHead + strings.Replace(oaRule, "url: https://example.com/s/{{ .data.id }}", `url: "{{ .data.link }}"`, 1)).Rules[0]
	ev2 := event("statement.issued", strings.Replace(statementEvent, `"id":"S-42"`, `"id":"S-42","link":"javascript:alert(1)"`, 1))
	var de *rules.DataError
	if _, err := bad.RenderFor(ev2, bad.Channels()[1]); !errors.As(err, &de) || de.Keyword != "url" {
		t.Errorf("bad url: %v", err)
	}
	if _, err := bad.RenderFor(ev2, bad.Channels()[0]); err != nil {
		t.Errorf("the Mini Program channel fails on the url: %v", err)
	}
	// A value fitted for one template is fitted the same for the others
	// that take its key: thing1 is cut once, for mp and oa_biz alike.
	long := event("statement.issued", strings.Replace(statementEvent, "Acme 有限公司", strings.Repeat("长", 30), 1))
	m1, _ := r.RenderFor(long, tpl["mp"])
	m3, _ := r.RenderFor(long, tpl["oa_biz"])
	if m1.Data["thing1"] != m3.Data["thing1"] || len([]rune(m1.Data["thing1"])) != 20 {
		t.Errorf("thing1 %q and %q", m1.Data["thing1"], m3.Data["thing1"])
	}
}

// The preview shows every channel's card, in the order they are tried.
func TestPreviewShowsEveryChannel(t *testing.T) {
	set := mustParse(oaHead + oaRule)
	ev := event("statement.issued", statementEvent)
	p := set.Rules[0].Preview(ev)
	if p.Err() != nil || len(p.Channels) != 3 || p.Page != "pages/statement/detail?id=S-42" || len(p.Keywords) != 3 {
		t.Fatalf("preview: err %v, %d channels, page %q, %d keywords", p.Err(), len(p.Channels), p.Page, len(p.Keywords))
	}
	want := `1. mp (subscribe_message of main)
┌─ mp
│ thing1: Acme 有限公司
│ character_string3: 2026-10
│ time4: 2026-11-01 09:00
└─ 进入小程序查看 › pages/statement/detail?id=S-42
2. oa_msg (template_message of service)
┌─ 对账单通知
│ 对账单位: Supplier
│ 账期: 2026-10
│ 状态: 已出账
│ 出账时间: 2026-11-01 09:00
└─ 进入小程序查看 › main pages/statement/detail?id=S-42
3. oa_biz (subscription_notification of service)
┌─ oa_biz
│ thing1: Acme 有限公司
└─ 详情 › https://example.com/s/S-42
`
	if got := p.Card(); got != want {
		t.Errorf("Card() =\n%s\nwant\n%s", got, want)
	}
	// An error in one channel's keyword is the preview's error.
	bad := event("statement.issued", strings.Replace(statementEvent, `"month":"2026-10"`, `"month":"十月"`, 1))
	if err := set.Rules[0].Preview(bad).Err(); err == nil || !strings.Contains(err.Error(), "character_string3") {
		t.Errorf("Err() = %v", err)
	}
}

// const keywords: one of the approved values, at most 20 characters.
func TestFitConst(t *testing.T) {
	if v, err := rules.Fit(rules.TypeConst, " 已出账 ", nil, []string{"已出账", "已结清"}); err != nil || v != "已出账" {
		t.Errorf("Fit = %q, %v", v, err)
	}
	if _, err := rules.Fit(rules.TypeConst, "已作废", nil, []string{"已出账"}); err == nil {
		t.Error("a value not approved was accepted")
	}
	if _, err := rules.Fit(rules.TypeConst, strings.Repeat("长", 21), nil, nil); err == nil {
		t.Error("21 characters were accepted")
	}
}

// --remote compares the template list, which has no template messages.
func TestCompareTemplatesSkipsTemplateMessages(t *testing.T) {
	set := mustParse(oaHead + oaRule)
	errs := set.CompareTemplates("service", []rules.RemoteTemplate{{ID: "TPL_OA_BIZ", Kind: rules.KindOneTime,
		Keywords: []rules.RemoteKeyword{{Key: "thing1", Type: "thing"}}}})
	if len(errs) != 0 {
		t.Errorf("CompareTemplates: %v", errs)
	}
}

// The schema takes an official account file and a via rule, and refuses a
// rule with both template and via, or neither.
func TestSchemaOfficialAccount(t *testing.T) {
	raw, err := os.ReadFile("../rules.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := yaml.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	check := func(src string) []string {
		var doc any
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		v := validator{defs: schema["$defs"].(map[string]any)}
		v.check(schema, doc, "")
		return v.errs
	}
	if errs := check(oaHead + oaRule); len(errs) > 0 {
		t.Errorf("the official account file: %s", strings.Join(errs, "\n"))
	}
	both := strings.Replace(oaHead+oaRule, "    via: [mp, oa_msg, oa_biz]\n", "    template: mp\n    via: [mp, oa_msg, oa_biz]\n", 1)
	neither := strings.Replace(oaHead+oaRule, "    via: [mp, oa_msg, oa_biz]\n", "", 1)
	for name, src := range map[string]string{"both": both, "neither": neither} {
		if errs := check(src); len(errs) != 1 || !strings.Contains(errs[0], "oneOf") {
			t.Errorf("%s: %v", name, errs)
		}
	}
}
