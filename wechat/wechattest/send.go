package wechattest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

type sendRequest struct {
	ToUser     string                  `json:"touser"`
	TemplateID string                  `json:"template_id"`
	Page       string                  `json:"page"`
	State      string                  `json:"miniprogram_state"`
	Lang       string                  `json:"lang"`
	Data       map[string]keywordField `json:"data"`
}

type keywordField struct {
	Value keywordValue `json:"value"`
}

// keywordValue is a data value. A string is taken as is and a number as
// its text (WeChat documents the value as "any"); anything else, or no
// value, is not ok and gets the keyword named in a 47003.
type keywordValue struct {
	s  string
	ok bool
}

func (v *keywordValue) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) >= 2 && b[0] == '"' && bytes.IndexByte(b, '\\') < 0:
		// The common case, without escapes: no second decoding pass.
		v.s, v.ok = string(b[1:len(b)-1]), true
	case len(b) > 0 && b[0] == '"':
		v.ok = json.Unmarshal(b, &v.s) == nil
	case len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9'):
		v.s, v.ok = string(b), true
	}
	return nil
}

var (
	validStates = map[string]bool{"": true, "developer": true, "trial": true, "formal": true}
	validLangs  = map[string]bool{"": true, "zh_CN": true, "en_US": true, "zh_HK": true, "zh_TW": true}
)

// send serves POST /cgi-bin/message/subscribe/send. It checks, in order:
// the token (41001, 40001, 42001), the daily quota fault (45009), the body
// (47001), the recipient (40003), the template (40037, 43107), the page
// (41030), whether another send to the recipient is in progress (43108),
// the data (47003), and the subscription (43101). WeChat does not document
// its order (unconfirmed); this one answers credentials first and the
// recipient's subscription last. The app's lock is held only for the
// lookups and state changes, never while decoding or checking data.
func (c *call) send() {
	e := c.e
	var req sendRequest
	body, readErr := c.body()
	badBody := readErr != nil || json.Unmarshal(body, &req) != nil
	a := c.authorize()
	if a == nil {
		return
	}
	if a.official {
		// An official account's token is not a Mini Program's: "不同类型的
		// 账号的 access_token 是隔离的" (reference §3.1).
		a.mu.Unlock()
		c.fail(48001, "api unauthorized")
		return
	}
	if e.quotaExhausted() {
		a.mu.Unlock()
		c.fail(45009, "reach max api daily quota limit")
		return
	}
	if badBody {
		a.mu.Unlock()
		c.fail(47001, "data format error")
		return
	}
	u := a.user(req.ToUser, e.opts.AutoUsers && req.ToUser != "")
	if u == nil {
		a.mu.Unlock()
		c.fail(40003, "invalid openid")
		return
	}
	t, ok := a.template(req.TemplateID)
	if !ok {
		a.mu.Unlock()
		c.fail(40037, "invalid template id")
		return
	}
	if t.banned {
		a.mu.Unlock()
		c.fail(43107, "subscribe message capability banned")
		return
	}
	if req.Page != "" && a.pages != nil && (req.State == "" || req.State == "formal") && !a.pages[pagePath(req.Page)] {
		// Only the released version's pages are known; developer and
		// trial builds may have others.
		a.mu.Unlock()
		c.fail(41030, "invalid page")
		return
	}
	if u.busy {
		a.mu.Unlock()
		c.fail(43108, "concurrent send message to the same user")
		return
	}
	u.busy = true
	a.mu.Unlock()
	if e.holdHook != nil {
		e.holdHook()
	}

	// Outside the lock: the template is immutable once registered, and
	// data checks are the expensive part.
	release := func() {
		a.mu.Lock()
		u.busy = false
		a.mu.Unlock()
	}
	field := t.invalidField(req.Data)
	switch {
	case field != "":
		release()
		c.fail(47003, "argument invalid! data."+field+".value invalid")
		return
	case !validStates[req.State]:
		// Unconfirmed: WeChat's wording for these two is not documented.
		release()
		c.fail(47003, "argument invalid! miniprogram_state invalid")
		return
	case !validLangs[req.Lang]:
		release()
		c.fail(47003, "argument invalid! lang invalid")
		return
	}
	c.spendDelay()

	now := e.opts.Now()
	a.mu.Lock()
	u.busy = false
	if !e.mayReceive(u, t) {
		a.mu.Unlock()
		c.fail(43101, "user refuse to accept the msg")
		return
	}
	e.spend(u, t)
	id := e.msgID.Add(1)
	if n := e.invalidateEvery(); n > 0 {
		a.sendsOK++
		if a.sendsOK%n == 0 {
			a.invalidateLocked(now)
		}
	}
	cb := a.callback
	a.mu.Unlock()

	msgid := strconv.FormatUint(id, 10)
	values := make(map[string]string, len(req.Data))
	for k, v := range req.Data {
		values[k] = v.Value.s
	}
	e.record(Sent{AppID: a.appid, Path: PathSend, MsgID: msgid, ToUser: req.ToUser, TemplateID: t.ID, Page: req.Page,
		State: req.State, Lang: req.Lang, Data: values, At: now})
	// msgid is a JSON number above 2^53, as WeChat sends it.
	b := make([]byte, 0, 64)
	b = append(b, `{"errcode":0,"errmsg":"ok","msgid":`...)
	b = append(b, msgid...)
	b = append(b, '}')
	c.reply(b)
	if cb != nil && cb.cfg.SentEvents {
		// WeChat reports delivery after answering the send, once the
		// message reached the user.
		ev := Event{Type: EventSent, OpenID: req.ToUser, List: []EventEntry{{TemplateID: t.ID, MsgID: msgid, ErrorStatus: "success"}}}
		_ = e.queueEventAfter(a, cb, ev, cb.sentDelay())
	}
}

// pagePath is a page without its query and leading slash, as app.json
// lists it.
func pagePath(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return strings.TrimPrefix(p, "/")
}
