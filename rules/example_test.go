package rules_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/wxbridge/wxbridge/rules"
)

// A rules file names apps, their templates (with keyword types, so values
// can be checked before anything is sent), and rules: which event sends
// which template to whom, with which words.
func Example() {
	set, err := rules.Parse("rules.yaml", []byte(`
apps:
  main:
    appid: wx0123456789abcdef
    secret: ${MAIN_SECRET:-dev-secret}
templates:
  order_shipped:
    app: main
    id: TPL_order_shipped
    keywords: {character_string1: character_string, thing2: thing, time3: time}
rules:
  - name: order-shipped
    on: order.shipped
    template: order_shipped
    page: pages/order/detail?id={{ .data.order_id }}
    to:
      - user: "{{ .data.buyer_id }}"
    data:
      character_string1: "{{ .data.order_no }}"
      thing2: "{{ .data.item }}"
      time3: "{{ .data.shipped_at }}"
`), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := event("order.shipped", `{"order_id": 1001, "order_no": "SO-1001", "buyer_id": "u-17",
		"item": "Apple iPhone 17 Pro 256GB 深空黑色", "shipped_at": "2026-11-21T14:05:00Z"}`)
	for _, m := range set.Match(ev) {
		to, _ := m.Rule.Recipients(ev)
		msg, _ := m.Rule.Render(ev)
		fmt.Println(m.Rule.Name, "to", to)
		fmt.Println(msg.TemplateID, msg.Page)
		fmt.Println(msg.Data["character_string1"], "|", msg.Data["thing2"], "|", msg.Data["time3"])
	}
	// Output:
	// order-shipped to [user u-17]
	// TPL_order_shipped pages/order/detail?id=1001
	// SO-1001 | Apple iPhone 17 Pro… | 2026-11-21 22:05
}

// `on` takes exact types and NATS-style patterns: "*" is one token, a
// trailing ">" one or more. `when` is an expr-lang condition over id, type,
// subject, time and data. An event can match several rules; a condition
// that cannot be evaluated still returns its rule, with Err (`?.` and `??`
// keep optional fields from being errors).
func ExampleSet_Match() {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates:
  t: {app: main, id: T, keywords: {thing1: thing}}
rules:
  - {name: exact,    on: order.created,  template: t, to: [user: u], data: {thing1: x}}
  - {name: star,     on: order.*,        template: t, to: [user: u], data: {thing1: x}}
  - {name: tail,     on: order.>,        template: t, to: [user: u], data: {thing1: x}}
  - {name: big,      on: order.created,  template: t, to: [user: u], data: {thing1: x}, when: data.total >= 1000}
  - {name: vip,      on: [order.created, order.paid], when: 'data.buyer?.level in ["gold", "vip"]',
     template: t, to: [user: u], data: {thing1: x}}
`)
	show := func(typ, data string) {
		fmt.Print(typ + ":")
		for _, m := range set.Match(event(typ, data)) {
			fmt.Print(" ", m.Rule.Name)
			if m.Err != nil {
				fmt.Print("(error)")
			}
		}
		fmt.Println()
	}
	show("order.created", `{"total": 1200, "buyer": {"level": "gold"}}`)
	show("order.created", `{"total": 80}`)
	show("order.paid", `{"buyer": {"level": "vip"}}`)
	show("order.item.added", `{}`)
	show("order.created", `{"total": "a lot"}`)
	// Output:
	// order.created: exact star tail big vip
	// order.created: exact star tail
	// order.paid: star tail vip
	// order.item.added: tail
	// order.created: exact star tail big(error)
}

// Templates see .id, .type, .subject, .time and .data. A missing field is
// empty rather than an error, so `default` can stand in for it. Besides
// text/template's own functions (printf, eq, if, range...) there are a few
// for what notifications need.
func Example_functions() {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates:
  t: {app: main, id: T, keywords: {thing1: thing, thing2: thing, thing3: thing, thing4: thing, thing5: thing,
      thing6: thing, thing7: thing, thing8: thing, thing9: thing, thing10: thing, thing11: thing}}
rules:
  - name: demo
    on: demo
    template: t
    to: [user: u]
    data:
      thing1: '{{ .data.paid_at | date "1月2日 15:04" }}'
      thing2: '{{ .data.paid_at | tz "Europe/Berlin" | date "15:04 MST" }}'
      thing3: '{{ .time | date "2006-01-02" }}'
      thing4: '{{ .data.total | money }}'
      thing5: '{{ .data.amount_fen | cents }}'
      thing6: '{{ .data.note | default "无备注" }}'
      thing7: '{{ .data.title | trunc 8 }}'
      thing8: '{{ .data.tags | join "、" }}'
      thing9: '{{ choose .data.status "paid" "已支付" "refunded" "已退款" "处理中" }}'
      thing10: '{{ len .data.items }}件, {{ .data.buyer.name | upper }}'
      thing11: '{{ index .data.items 0 "sku" }}'
`)
	ev := event("demo", `{"paid_at": 1795269900, "total": 9147.5, "amount_fen": 123456,
		"title": "Quarterly supplier review", "tags": ["加急", "到付"], "status": "refunded",
		"items": [{"sku": "IP17P-256"}, {"sku": "CASE"}], "buyer": {"name": "acme"}}`)
	for _, k := range set.Rules[0].Preview(ev).Keywords {
		fmt.Printf("%s: %s\n", k.Key, k.Raw)
	}
	// Output:
	// thing1: 11月21日 22:05
	// thing2: 15:05 CET
	// thing3: 2026-11-21
	// thing4: ￥9,147.50
	// thing5: 1234.56
	// thing6: 无备注
	// thing7: Quarter…
	// thing8: 加急、到付
	// thing9: 已退款
	// thing10: 2件, ACME
	// thing11: IP17P-256
}

// Fit makes a value valid for its WeChat keyword type, or says why it
// cannot be. Render fits every keyword; a refusal there is a *DataError
// naming the keyword, which the bridge reports as invalid_data.
func ExampleFit() {
	loc, _ := time.LoadLocation("Asia/Shanghai")
	for _, kw := range []struct{ typ, value string }{
		{"thing", "Apple iPhone 17 Pro 256GB 深空黑色"},
		{"thing", "第一行\n第二行"},
		{"time", "2026-11-21T14:05:00Z"},
		{"time", "1795287900"},
		{"time", "2026-11-24T02:00:00Z~2026-11-24T03:30:00Z"},
		{"date", "2026-11-21T20:05:00Z"},
		{"amount", "9147.5"},
		{"amount", "￥1,234.50"},
		{"number", "1,024"},
		{"character_string", "SO-20261121-1001"},
		{"phone_number", "138 0013 8000"},
		{"car_number", "粤a·8z888"},
		{"name", "上海青木贸易有限公司采购部"},
		{"phrase", "已发货"},
		{"phrase", "Shipped"},
		{"character_string", "订单1001"},
		{"amount", "-5"},
	} {
		v, err := rules.Fit(kw.typ, kw.value, loc, nil)
		if err != nil {
			fmt.Printf("%-16s refused: %v\n", kw.typ, err)
			continue
		}
		fmt.Printf("%-16s %s\n", kw.typ, v)
	}
	// Output:
	// thing            Apple iPhone 17 Pro…
	// thing            第一行 第二行
	// time             2026-11-21 22:05
	// time             2026-11-22 03:05
	// time             2026-11-24 10:00~11:30
	// date             2026-11-22
	// amount           ￥9147.50
	// amount           ￥1234.50
	// number           1024
	// character_string SO-20261121-1001
	// phone_number     13800138000
	// car_number       粤A8Z888
	// name             上海青木贸易有限公…
	// phrase           已发货
	// phrase           refused: "Shipped" has 'S': phrase takes Chinese characters only
	// character_string refused: "订单1001" has '订': character_string takes ASCII digits, letters and symbols only
	// amount           refused: "-5" is negative: amount takes a currency sign and digits only (use a thing keyword for refunds)
}

// A recipient is a user id, a list of user ids, a role within a scope (the
// bridge looks up its members), or an openid. Empty ids are dropped and
// duplicates removed.
func ExampleRule_Recipients() {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates:
  t: {app: main, id: T, keywords: {thing1: thing}}
rules:
  - name: statement
    on: statement.issued
    template: t
    data: {thing1: 对账单}
    to:
      - user: "{{ .data.applicant_id }}"
      - users: "{{ .data.watcher_ids }}"
      - user: "{{ .data.deputy_id }}"
      - role: reconciler
        scope: "buyer:{{ .data.buyer_id }}"
      - openid: "{{ .data.openid }}"
`)
	r := set.Rules[0]
	to, err := r.Recipients(event("statement.issued", `{"applicant_id": "u-17",
		"watcher_ids": ["u-21", "u-17", "", "u-34"], "buyer_id": 42, "openid": "o-abc"}`))
	fmt.Println(to, err)

	// A spec that names nobody for this event says so: the bridge reports
	// skipped/no_recipient for it rather than nothing at all.
	to, _ = r.Recipients(event("statement.issued", `{"applicant_id": "u-17", "buyer_id": 42}`))
	fmt.Println(to)

	// A scope with an empty placeholder would name the wrong people.
	_, err = r.Recipients(event("statement.issued", `{"applicant_id": "u-17"}`))
	var de *rules.DataError
	fmt.Println(errors.As(err, &de), de.Keyword, "-", de.Reason)
	// Output:
	// [user u-17 user u-21 user u-34 nobody (to[2].user rendered no one) role reconciler in buyer:42 openid o-abc] <nil>
	// [user u-17 nobody (to[1].user rendered no one) nobody (to[2].user rendered no one) role reconciler in buyer:42 nobody (to[4].openid rendered no one)]
	// true to[3].scope - "buyer:{{…}}": a placeholder rendered nothing for this event
}

// Render refuses what it cannot make valid, naming the keyword.
func ExampleRule_Render() {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates:
  t: {app: main, id: T, keywords: {phrase1: phrase, time2: time}}
rules:
  - name: repair
    on: repair.updated
    template: t
    to: [user: u]
    data:
      phrase1: '{{ choose .data.status "assigned" "已派单" "done" "已完成" }}'
      time2: "{{ .data.at }}"
`)
	r := set.Rules[0]
	for _, data := range []string{
		`{"status": "done", "at": 1795287900}`,
		`{"status": "lost", "at": 1795287900}`,
		`{"status": "done", "at": "soon"}`,
	} {
		msg, err := r.Render(event("repair.updated", data))
		var de *rules.DataError
		if errors.As(err, &de) {
			fmt.Printf("invalid_data: %s: %s\n", de.Keyword, de.Reason)
			continue
		}
		fmt.Println(msg.Data["phrase1"], msg.Data["time2"])
	}
	// Output:
	// 已完成 2026-11-22 03:05
	// invalid_data: phrase1: empty: {{ choose .data.status "assigned" "已派单" "done" "已完成" }} rendered nothing for this event
	// invalid_data: time2: cannot read "soon" as a time (want RFC 3339, Unix seconds or milliseconds, or 2006-01-02 15:04)
}

// Policies are parsed and checked here and enforced by the bridge: quiet
// hours (defer to the end of the window, or drop), a dedupe key and window,
// a per-user frequency cap, and the delivery guarantee.
func ExampleQuietHours_Check() {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s, time_zone: Asia/Shanghai}}
templates:
  t: {app: main, id: T, keywords: {thing1: thing}}
rules:
  - name: order-to-seller
    on: order.created
    template: t
    to: [user: u]
    data: {thing1: 新订单}
    quiet_hours: {window: "22:00-08:00", action: defer}
    dedupe: {key: "order:{{ .data.order_id }}", window: 10m}
    frequency_cap: {max: 5, per: 1d}
    delivery: at_most_once
`)
	r := set.Rules[0]
	p := r.Policy
	fmt.Println("quiet hours:", p.QuietHours)
	for _, at := range []string{"2026-11-21T13:59:00Z", "2026-11-21T14:05:00Z", "2026-11-21T23:30:00Z", "2026-11-22T00:00:00Z"} {
		t, _ := time.Parse(time.RFC3339, at)
		quiet, end := p.QuietHours.Check(t)
		fmt.Println(" ", t.In(p.QuietHours.Location).Format("01-02 15:04"), quiet, end.Format("01-02 15:04"))
	}
	key, _ := r.DedupeKey(event("order.created", `{"order_id": 1001}`))
	fmt.Println("dedupe:", key, p.Dedupe.Window)
	fmt.Println("cap:", p.Cap.Max, "per", p.Cap.Per)
	fmt.Println("delivery:", p.Delivery)
	// Output:
	// quiet hours: 22:00-08:00 Asia/Shanghai, defer
	//   11-21 21:59 false 01-01 00:00
	//   11-21 22:05 true 11-22 08:00
	//   11-22 07:30 true 11-22 08:00
	//   11-22 08:00 false 01-01 00:00
	// dedupe: order:1001 10m0s
	// cap: 5 per 24h0m0s
	// delivery: at_most_once
}

// Parse reports every problem of a file at once, each with its line,
// column and field, so an operator fixes them in one pass.
func ExampleParse_errors() {
	_, err := rules.Parse("rules.yaml", []byte(`apps:
  main:
    appid: wx0123456789abcdef
    secret: ${MAIN_SECRET}
templates:
  t:
    app: main
    id: T
    keywords: {thing1: thing, phrase2: phrase}
rules:
  - name: r
    on: order..created
    when: data.total >> 0
    template: t
    to: [{user: "{{ .data.buyer_id }}"}]
    data:
      thing1: "{{ upcase .data.item }}"
      phrase2: Shipped
      time3: "{{ .data.at }}"
    quiet_hours: 22:00-8
`), func(string) (string, bool) { return "", false })
	fmt.Println(err)
	// Output:
	// rules.yaml:4:13: apps.main.secret: environment variable MAIN_SECRET is not set (write ${MAIN_SECRET:-default} for a default)
	// rules.yaml:12:9: rules[0].on: "order..created" has an empty token (a leading, trailing or double dot): it can never match
	// rules.yaml:13:23: rules[0].when: unexpected token Operator(">")
	// rules.yaml:17:19: rules[0].data.thing1: unknown function "upcase" (see docs/rules.md for the functions templates have)
	// rules.yaml:18:16: rules[0].data.phrase2: "Shipped" has 'S': phrase takes Chinese characters only
	// rules.yaml:19:7: rules[0].data.time3: keyword time3 is not in template t (it has thing1, phrase2)
	// rules.yaml:20:18: rules[0].quiet_hours: "22:00-8" is not a window: want HH:MM-HH:MM, like 22:00-08:00
}

// Preview is everything a rule would do with an event, with every problem
// rather than the first; Card draws the message as WeChat shows it.
func ExampleRule_Preview() {
	set := mustParse(`
apps: {main: {appid: wx0123456789abcdef, secret: s}}
templates:
  meeting:
    app: main
    id: TPL_meeting
    title: 会议室预约成功通知
    keywords:
      thing1: {label: 会议主题}
      thing2: {label: 会议室}
      time3: {label: 会议时间}
      name4: {label: 预约人}
rules:
  - name: meeting-booked
    on: meeting.booked
    template: meeting
    page: {path: pages/meeting/detail, query: {id: "{{ .data.booking_id }}"}}
    to: [user: "{{ .data.applicant_id }}"]
    data:
      thing1: "{{ .data.subject }}"
      thing2: "{{ .data.room }}"
      time3: "{{ .data.start }}~{{ .data.end }}"
      name4: "{{ .data.applicant_name }}"
`)
	p := set.Rules[0].Preview(event("meeting.booked", `{"booking_id": "7781", "applicant_id": "u-17",
		"subject": "Q4 供应商对账复盘会", "room": "3F 望江厅", "start": "2026-11-24T02:00:00Z",
		"end": "2026-11-24T03:30:00Z", "applicant_name": "王小明"}`))
	fmt.Print(p.Card())
	// Output:
	// ┌─ 会议室预约成功通知
	// │ 会议主题: Q4 供应商对账复盘会
	// │ 会议室: 3F 望江厅
	// │ 会议时间: 2026-11-24 10:00~11:30
	// │ 预约人: 王小明
	// └─ 进入小程序查看 › pages/meeting/detail?id=7781
}

// A rule may list templates with via: the bridge tries them in order for
// each recipient, and renders the rule for the one that can reach them.
// Here a statement goes as a Mini Program subscribe message, else as a
// template message of the official account, whose card opens the same
// Mini Program page.
func ExampleRule_RenderFor() {
	set, err := rules.Parse("rules.yaml", []byte(`
apps:
  main:
    appid: wx0123456789abcdef
    secret: dev-secret
  service:
    kind: official_account
    appid: wx0a0a0a0a0a0a0a0a
    secret: dev-secret
templates:
  statement:
    app: main
    id: TPL_statement
    keywords: {thing1: thing, time2: time}
  statement_oa:
    app: service
    kind: template_message
    id: TPL_statement_oa
    opens: main
    keywords: {thing1: thing, amount3: amount}
rules:
  - name: statement
    on: statement.issued
    via: [statement, statement_oa]
    page: pages/statement?id={{ .data.id }}
    to:
      - user: "{{ .data.user_id }}"
    data:
      thing1: "{{ .data.buyer }}"
      time2: "{{ .data.at }}"
      amount3: "{{ .data.total }}"
`), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := event("statement.issued", `{"id": "S-42", "user_id": "u-17", "buyer": "Acme", "at": "2026-11-01T01:00:00Z", "total": 1280.5}`)
	r := set.Rules[0]
	for _, tpl := range r.Channels() {
		msg, _ := r.RenderFor(ev, tpl)
		fmt.Println(msg.Channel, msg.App, msg.TemplateID, msg.Data)
		if msg.MiniProgram != nil {
			fmt.Println("  opens", msg.MiniProgram.AppID, msg.MiniProgram.PagePath)
		} else {
			fmt.Println("  page", msg.Page)
		}
	}
	// Output:
	// subscribe_message main TPL_statement map[thing1:Acme time2:2026-11-01 09:00]
	//   page pages/statement?id=S-42
	// template_message service TPL_statement_oa map[amount3:￥1280.50 thing1:Acme]
	//   opens wx0123456789abcdef pages/statement?id=S-42
}
