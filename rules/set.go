package rules

import (
	"time"

	"github.com/expr-lang/expr/vm"
)

// Set is a parsed, checked rules file. It is immutable once returned by
// Parse and safe for concurrent use.
type Set struct {
	File      string
	Apps      map[string]*App
	Templates map[string]*Template
	Rules     []*Rule

	index matchIndex
	// pos maps field paths ("rules[2].data.thing1") to where they are, so
	// checks done outside Parse (the remote template comparison) can point
	// at the right line.
	pos map[string]Pos
}

// TemplateOf finds the template an app knows by id, nil if none.
func (s *Set) TemplateOf(app, id string) *Template {
	for _, t := range s.Templates {
		if t.App == app && t.ID == id {
			return t
		}
	}
	return nil
}

// Pos is a position in the rules file, 1-based.
type Pos struct{ Line, Column int }

// App is a Mini Program or an official account (服务号) the rules send
// through.
type App struct {
	Name string
	// Kind is AppMiniProgram (default) or AppOfficialAccount.
	Kind      string
	AppID     string
	Secret    string
	PushToken string
	AESKey    string
	State     string // miniprogram_state: developer, trial or formal
	Lang      string
	// TokenMode is "stable" (default) or "token".
	TokenMode string
	// Subscriptions says who decides whether a user may get a message:
	// "ledger" (default) checks and spends the credits wxbridge keeps;
	// "wechat" sends and lets WeChat answer 43101.
	Subscriptions string
	// TimeZone is the IANA zone time and date keywords are shown in and
	// quiet hours are read in, unless a rule says otherwise. Default
	// Asia/Shanghai: WeChat users read Beijing time.
	TimeZone string
	Location *time.Location
	// AllowPlaintextPush accepts plaintext-mode pushes although AESKey is
	// set, for the time it takes to switch the console to safe mode. Off,
	// an app with a key takes only pushes whose msg_signature covers the
	// body: a plaintext signature does not, and one copied from any real
	// push URL carries a forged body while its timestamp is accepted.
	AllowPlaintextPush bool
	// Bind says how wxbridge.cmd.bind may bind a user: "any" (default)
	// takes a login code or a bare openid; "code" only a login code, which
	// proves the user holds the WeChat account. A bare openid proves only
	// that the sender may publish on the bind subject.
	Bind string
}

// Values of App.Kind, App.Subscriptions, App.TokenMode, App.Bind,
// Template.Kind, Policy.Delivery and QuietHours.Action.
const (
	AppMiniProgram     = "mini_program"
	AppOfficialAccount = "official_account"

	SubscriptionsLedger = "ledger"
	SubscriptionsWeChat = "wechat"

	BindAny  = "any"
	BindCode = "code"

	TokenModeStable = "stable"
	TokenModeToken  = "token"

	KindOneTime  = "one_time"
	KindLongTerm = "long_term"
	// KindTemplateMessage: an official account's template message (模板消息),
	// sent to its followers without a subscription.
	KindTemplateMessage = "template_message"

	AtLeastOnce = "at_least_once"
	AtMostOnce  = "at_most_once"

	QuietDefer = "defer"
	QuietDrop  = "drop"
)

// DefaultTimeZone is the zone of an app that names none.
const DefaultTimeZone = "Asia/Shanghai"

// Channels: how a template reaches a person, by the kind of its app and
// its own kind (Template.Channel).
const (
	// ChannelSubscribeMessage: a Mini Program subscribe message
	// (/cgi-bin/message/subscribe/send), with a credit.
	ChannelSubscribeMessage = "subscribe_message"
	// ChannelSubscriptionNotification: an official account's subscription
	// notification (/cgi-bin/message/subscribe/bizsend), with a credit.
	ChannelSubscriptionNotification = "subscription_notification"
	// ChannelTemplateMessage: an official account's template message
	// (/cgi-bin/message/template/send), to a follower.
	ChannelTemplateMessage = "template_message"
)

// Template is a template of an app: a Mini Program's subscribe message, or
// an official account's subscription notification or template message.
type Template struct {
	Name string
	App  string
	ID   string
	// Kind is one_time or long_term (subscribe messages and subscription
	// notifications), or template_message (official accounts only).
	Kind  string
	Title string // what the card shows on top; optional
	// Opens names the Mini Program app (under apps) whose page the cards
	// of an official account template open; "" opens none.
	Opens string
	// Keywords maps keys to types ("thing1" -> "thing").
	Keywords map[string]string
	// Keys are the keywords in the order the file lists them, which is the
	// order the card shows them.
	Keys []string
	// Labels are what the card shows before each value ("thing1" -> "商品名称").
	Labels map[string]string
	// Enums are the allowed values of enum and const keywords, when the
	// file lists them.
	Enums map[string][]string

	app   *App // the app the template belongs to
	opens *App // the app Opens names
}

// Channel says how the template reaches a person: ChannelSubscribeMessage,
// ChannelSubscriptionNotification or ChannelTemplateMessage.
func (t *Template) Channel() string {
	switch {
	case t.Kind == KindTemplateMessage:
		return ChannelTemplateMessage
	case t.app != nil && t.app.Kind == AppOfficialAccount:
		return ChannelSubscriptionNotification
	}
	return ChannelSubscribeMessage
}

// Application is the app the template belongs to, the one App names; nil
// for a template that was not loaded from a rules file.
func (t *Template) Application() *App { return t.app }

// Label is the keyword's label, or its key when the file gives none.
func (t *Template) Label(key string) string {
	if l := t.Labels[key]; l != "" {
		return l
	}
	return key
}

// Rule sends a message when an event matches: one template, or the first of
// several (via) that can reach each recipient.
type Rule struct {
	Name        string
	Description string // for people: what the rule is for
	On          []string
	When        string // the condition as written; empty when there is none
	// Template is the rule's template, or the first of its via list;
	// Channels lists them all.
	Template *Template
	// App is Template's app.
	App    *App
	Policy Policy
	// Location is the zone of time and date keywords and of the templating
	// function date: the rule's time_zone, else its app's.
	Location *time.Location

	when *vm.Program
	// whenCounted says that the condition was patched to count what it
	// does, and needs a budget to run.
	whenCounted bool
	page        *pageSpec
	url         *text // the web page official account cards open
	to          []recipientSpec
	data        []keywordSpec // Template's, in its key order
	channels    []channel     // in the order they are tried
	dedup       *text
}

// channel is one template of a rule with the keyword data it takes: the
// rule's data values for its keys, fitted to its types.
type channel struct {
	tpl  *Template
	app  *App
	data []keywordSpec // in the template's key order
}

// Channels lists the templates the rule sends through, in the order they
// are tried: its via list, or its one template. Each recipient gets the
// first that can reach them.
func (r *Rule) Channels() []*Template {
	out := make([]*Template, len(r.channels))
	for i, c := range r.channels {
		out[i] = c.tpl
	}
	return out
}

type keywordSpec struct {
	key, typ string
	enum     []string
	text     *text
}
