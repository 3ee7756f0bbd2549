package wechattest

import (
	"fmt"
	"sort"
	"strconv"
	"time"
)

// Subscription statuses, as wx.requestSubscribeMessage and the ledger name
// them.
const (
	StatusNone   = ""       // never asked
	StatusAccept = "accept" // one-time: Credits sends left; long-term: sends allowed
	StatusReject = "reject" // refused in the popup or in the service notifications
	StatusBan    = "ban"    // banned by WeChat's backend for this user
)

// Subscription is one user's state for one template.
type Subscription struct {
	TemplateID string `json:"template_id"`
	Status     string `json:"status"`
	// Credits is the sends left for a one-time template; always 0 for
	// long-term ones.
	Credits int `json:"credits"`
}

// user is one openid of an app, guarded by the app's mutex.
type user struct {
	subs map[string]*Subscription
	// busy: a send to this user is being processed; another one now is
	// 43108 "concurrent send to the same user".
	busy    bool
	blocked bool // code2session answers 40226
	// unionid is the person's id across the apps of the open platform
	// account (AddPerson), "" if unknown.
	unionid string
	// Official accounts: following, since when and through which QR scene;
	// refusing: the user set 拒收 for the account's messages, so template
	// messages fail with "failed:user block".
	following  bool
	followedAt time.Time
	followQR   string
	refusing   bool
	// code2session calls in the current minute (45011 over 100).
	codeMinute int64
	codeCalls  int
}

func (a *app) user(openid string, create bool) *user {
	u, ok := a.users[openid]
	if !ok && create {
		u = &user{subs: map[string]*Subscription{}}
		a.users[openid] = u
	}
	return u
}

func (u *user) sub(templateID string) *Subscription {
	s, ok := u.subs[templateID]
	if !ok {
		s = &Subscription{TemplateID: templateID}
		u.subs[templateID] = s
	}
	return s
}

// appTemplate returns the app, locked, and the template, or panics: the
// methods using it are for tests, where an unknown id is a setup mistake.
func (e *Emulator) appTemplate(method, appid, templateID string) (*app, *template) {
	a := e.mustApp(method, appid)
	a.mu.Lock()
	t, ok := a.template(templateID)
	if !ok {
		a.mu.Unlock()
		panic(fmt.Sprintf("wechattest: %s: app %s has no template %q (call AddTemplate first)", method, appid, templateID))
	}
	return a, t
}

// Accept records that the user accepted templateID once: one more send for
// a one-time template, sends until a reject for a long-term one. It pushes
// nothing; Subscribe is the user tapping the popup.
func (e *Emulator) Accept(appid, openid, templateID string) {
	a, t := e.appTemplate("Accept", appid, templateID)
	defer a.mu.Unlock()
	a.user(openid, true).accept(t)
}

func (u *user) accept(t *template) {
	s := u.sub(t.ID)
	if s.Status == StatusBan {
		return
	}
	if s.Status != StatusAccept {
		s.Credits = 0
	}
	s.Status = StatusAccept
	if t.Kind == OneTime {
		s.Credits++
	}
}

func (u *user) reject(templateID string) {
	s := u.sub(templateID)
	if s.Status == StatusBan {
		return
	}
	s.Status, s.Credits = StatusReject, 0
}

// Reject records that the user refused templateID: no sends until the next
// accept. It pushes nothing.
func (e *Emulator) Reject(appid, openid, templateID string) {
	a, _ := e.appTemplate("Reject", appid, templateID)
	defer a.mu.Unlock()
	a.user(openid, true).reject(templateID)
}

// Ban records that WeChat's backend banned templateID for the user: sends
// get 43101 and the popup answers "ban" from then on.
func (e *Emulator) Ban(appid, openid, templateID string) {
	a, _ := e.appTemplate("Ban", appid, templateID)
	defer a.mu.Unlock()
	s := a.user(openid, true).sub(templateID)
	s.Status, s.Credits = StatusBan, 0
}

// BanTemplate bans the template for the whole app, as WeChat does to
// templates that break its rules: sends get 43107 and the popup answers
// "ban" for it.
func (e *Emulator) BanTemplate(appid, templateID string) {
	a, t := e.appTemplate("BanTemplate", appid, templateID)
	defer a.mu.Unlock()
	t.banned = true
}

// Credits returns the one-time sends the user has left for templateID.
func (e *Emulator) Credits(appid, openid, templateID string) int {
	return e.Subscription(appid, openid, templateID).Credits
}

// Subscription returns the user's state for templateID.
func (e *Emulator) Subscription(appid, openid, templateID string) Subscription {
	a := e.mustApp("Subscription", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	if u := a.user(openid, false); u != nil {
		if s, ok := u.subs[templateID]; ok {
			return *s
		}
	}
	return Subscription{TemplateID: templateID}
}

// Subscriptions returns the user's state for every template they were
// asked about, ordered by template id.
func (e *Emulator) Subscriptions(appid, openid string) []Subscription {
	a := e.mustApp("Subscriptions", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Subscription
	if u := a.user(openid, false); u != nil {
		for _, s := range u.subs {
			out = append(out, *s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TemplateID < out[j].TemplateID })
	return out
}

// What the user may answer in the popup (wx.requestSubscribeMessage's
// statuses besides "ban" and "filter", which WeChat decides).
var userChoices = map[string]bool{
	"accept": true, "reject": true,
	"acceptWithAlert": true, "acceptWithAudio": true, "acceptWithForcePush": true,
}

// maxPerRequest: templates one wx.requestSubscribeMessage may ask for. The
// typings since base library 3.12.1 say 5 (older docs: 3).
const maxPerRequest = 5

// Subscribe is the user answering a wx.requestSubscribeMessage popup with
// results (template id -> "accept", "reject", "acceptWithAlert"...). It
// updates the subscription state, pushes a subscribe_msg_popup_event with
// the accepted and rejected templates when the app has a callback, and
// returns what the mini program's success callback receives:
// {"errMsg":"requestSubscribeMessage:ok", templateID: status...}, where a
// template banned for the app or user is "ban" and one with the same title
// as an earlier (by id) template in the request is "filter". A request the
// client API refuses returns errMsg "requestSubscribeMessage:fail ..." and
// errCode, and changes nothing.
func (e *Emulator) Subscribe(appid, openid string, results map[string]string) map[string]string {
	a := e.mustApp("Subscribe", appid)
	fail := func(code int, msg string) map[string]string {
		m := map[string]string{"errMsg": "requestSubscribeMessage:fail " + msg}
		if code != 0 {
			m["errCode"] = strconv.Itoa(code)
		}
		return m
	}
	if len(results) == 0 {
		return fail(10001, "TmplIds can't be empty")
	}
	if len(results) > maxPerRequest {
		return fail(20003, "Templates count out of max bounds")
	}
	ids := make([]string, 0, len(results))
	for id, choice := range results {
		if !userChoices[choice] {
			// Not something a user can answer: a mistake in the caller.
			return fail(0, fmt.Sprintf("emulator: %q is not a user's choice for %s (want accept, reject, acceptWithAlert...)", choice, id))
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)

	a.mu.Lock()
	kinds := map[Kind]bool{}
	for _, id := range ids {
		t, ok := a.template(id)
		if !ok || t.Kind == TemplateMessage {
			a.mu.Unlock()
			return fail(20001, "No template data return, verify the template id exist")
		}
		kinds[t.Kind] = true
	}
	if len(kinds) > 1 {
		a.mu.Unlock()
		return fail(20002, "Templates type must be same")
	}
	u := a.user(openid, true)
	// PopupScene: "0" is a Mini Program page; an official account's popups
	// come from an H5 page ("1") or an article ("2"), and the emulator's
	// users subscribe from a web page
	// (https://developers.weixin.qq.com/doc/service/guide/product/subscription_messages/push.html).
	scene := "0"
	if a.official {
		scene = "1"
	}
	out := map[string]string{"errMsg": "requestSubscribeMessage:ok"}
	titles := map[string]bool{}
	var entries []EventEntry
	for _, id := range ids {
		t := a.templates[id]
		switch {
		case t.banned || u.sub(id).Status == StatusBan:
			out[id] = StatusBan
			continue
		case t.Title != "" && titles[t.Title]:
			out[id] = "filter"
			continue
		}
		titles[t.Title] = true
		choice := results[id]
		out[id] = choice
		// The event only knows accept and reject; acceptWithAlert and its
		// kin are accepts with a reminder switched on (unconfirmed: the
		// docs name no other SubscribeStatusString).
		status := StatusAccept
		if choice == "reject" {
			status = StatusReject
			u.reject(id)
		} else {
			u.accept(t)
		}
		entries = append(entries, EventEntry{TemplateID: id, Status: status, PopupScene: scene})
	}
	cb := a.callback
	a.mu.Unlock()
	if cb != nil && len(entries) > 0 {
		e.queueEvent(a, cb, Event{Type: EventPopup, OpenID: openid, List: entries})
	}
	return out
}

// Unsubscribe is the user setting 拒收 (reject) for templateID in the
// service notifications: the state becomes reject and, when the app has a
// callback, a subscribe_msg_change_event is pushed.
func (e *Emulator) Unsubscribe(appid, openid, templateID string) {
	a, _ := e.appTemplate("Unsubscribe", appid, templateID)
	a.user(openid, true).reject(templateID)
	cb := a.callback
	a.mu.Unlock()
	if cb != nil {
		e.queueEvent(a, cb, Event{Type: EventChange, OpenID: openid,
			List: []EventEntry{{TemplateID: templateID, Status: StatusReject}}})
	}
}

// mayReceive reports whether a send of t to u is allowed, and spends
// nothing: the credit goes only when the send succeeds.
func (e *Emulator) mayReceive(u *user, t *template) bool {
	s := u.subs[t.ID]
	if e.opts.AutoSubscribe {
		return s == nil || (s.Status != StatusReject && s.Status != StatusBan)
	}
	if s == nil || s.Status != StatusAccept {
		return false
	}
	return t.Kind == LongTerm || s.Credits > 0
}

func (e *Emulator) spend(u *user, t *template) {
	if s := u.subs[t.ID]; s != nil && t.Kind == OneTime && s.Credits > 0 {
		s.Credits--
	}
}

// timeMinute is the 45011 window of code2session.
func timeMinute(t time.Time) int64 { return t.Unix() / 60 }
