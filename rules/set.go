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

// Pos is a position in the rules file, 1-based.
type Pos struct{ Line, Column int }

// App is a Mini Program the rules send through.
type App struct {
	Name      string
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

// Values of App.Subscriptions, App.TokenMode, App.Bind, Template.Kind,
// Policy.Delivery and QuietHours.Action.
const (
	SubscriptionsLedger = "ledger"
	SubscriptionsWeChat = "wechat"

	BindAny  = "any"
	BindCode = "code"

	TokenModeStable = "stable"
	TokenModeToken  = "token"

	KindOneTime  = "one_time"
	KindLongTerm = "long_term"

	AtLeastOnce = "at_least_once"
	AtMostOnce  = "at_most_once"

	QuietDefer = "defer"
	QuietDrop  = "drop"
)

// DefaultTimeZone is the zone of an app that names none.
const DefaultTimeZone = "Asia/Shanghai"

// Template is a subscribe-message template of an app.
type Template struct {
	Name  string
	App   string
	ID    string
	Kind  string // one_time or long_term
	Title string // what the card shows on top; optional
	// Keywords maps keys to types ("thing1" -> "thing").
	Keywords map[string]string
	// Keys are the keywords in the order the file lists them, which is the
	// order the card shows them.
	Keys []string
	// Labels are what the card shows before each value ("thing1" -> "商品名称").
	Labels map[string]string
	// Enums are the allowed values of enum keywords, when the file lists them.
	Enums map[string][]string
}

// Label is the keyword's label, or its key when the file gives none.
func (t *Template) Label(key string) string {
	if l := t.Labels[key]; l != "" {
		return l
	}
	return key
}

// Rule sends one template when an event matches.
type Rule struct {
	Name        string
	Description string // for people: what the rule is for
	On          []string
	When        string // the condition as written; empty when there is none
	Template    *Template
	App         *App
	Policy      Policy
	// Location is the zone of time and date keywords and of the templating
	// function date: the rule's time_zone, else its app's.
	Location *time.Location

	when *vm.Program
	// whenCounted says that the condition was patched to count what it
	// does, and needs a budget to run.
	whenCounted bool
	page        *pageSpec
	to          []recipientSpec
	data        []keywordSpec // in template key order
	dedup       *text
}

type keywordSpec struct {
	key, typ string
	enum     []string
	text     *text
}
