package wechattest

import (
	"encoding/base64"
	"time"
)

// A wx.login code is valid five minutes and once.
const codeTTL = 5 * time.Minute

// code2session allows 100 calls per user per minute.
const codeCallsPerMinute = 100

type loginCode struct {
	openid, unionid string
	expires         time.Time
	used            bool
}

// IssueCode is wx.login in the mini program: it returns a code that
// /sns/jscode2session exchanges once, within five minutes, for openid and
// unionid. unionid "" gives the one AddPerson declared for openid, if any,
// and otherwise leaves unionid out of the answer. openid becomes a user of
// the app.
func (e *Emulator) IssueCode(appid, openid, unionid string) string {
	a := e.mustApp("IssueCode", appid)
	now := e.opts.Now()
	code := "0" + randomString(31, alnum)
	a.mu.Lock()
	defer a.mu.Unlock()
	for c, lc := range a.codes {
		if now.Sub(lc.expires) > codeTTL {
			delete(a.codes, c)
		}
	}
	if u := a.user(openid, true); unionid == "" {
		unionid = u.unionid
	}
	a.codes[code] = &loginCode{openid: openid, unionid: unionid, expires: now.Add(codeTTL)}
	return code
}

// Block marks the user as high-risk: code2session with their codes answers
// 40226 "code blocked".
func (e *Emulator) Block(appid, openid string) {
	a := e.mustApp("Block", appid)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.user(openid, true).blocked = true
}

// code2Session serves GET /sns/jscode2session.
func (c *call) code2Session() {
	q := c.r.URL.Query()
	appid, secret, code := q.Get("appid"), q.Get("secret"), q.Get("js_code")
	switch {
	case appid == "":
		c.fail(41002, "appid missing")
		return
	case secret == "":
		c.fail(41004, "appsecret missing")
		return
	case code == "":
		c.fail(41008, "missing code")
		return
	case q.Get("grant_type") != "authorization_code":
		c.fail(40002, "invalid grant_type")
		return
	}
	a := c.e.app(appid)
	if a == nil {
		c.fail(40013, "invalid appid")
		return
	}
	now := c.e.opts.Now()
	a.mu.Lock()
	if secret != a.secret {
		a.mu.Unlock()
		c.fail(40125, "invalid appsecret")
		return
	}
	lc, ok := a.codes[code]
	if !ok {
		a.mu.Unlock()
		c.fail(40029, "invalid code")
		return
	}
	// The rate limit is per user, so it counts every call with a code the
	// user was given, spent or not.
	u := a.user(lc.openid, true)
	if m := timeMinute(now); m != u.codeMinute {
		u.codeMinute, u.codeCalls = m, 0
	}
	u.codeCalls++
	switch {
	case u.codeCalls > codeCallsPerMinute:
		a.mu.Unlock()
		c.fail(45011, "api minute-quota reach limit  mustslower  retry next minute")
		return
	case lc.used || !now.Before(lc.expires):
		a.mu.Unlock()
		c.fail(40029, "invalid code")
		return
	case u.blocked:
		a.mu.Unlock()
		c.fail(40226, "code blocked")
		return
	}
	lc.used = true
	a.mu.Unlock()
	out := struct {
		SessionKey string `json:"session_key"`
		OpenID     string `json:"openid"`
		UnionID    string `json:"unionid,omitempty"`
	}{sessionKey(), lc.openid, lc.unionid}
	c.replyJSON(out)
}

func sessionKey() string {
	return base64.StdEncoding.EncodeToString([]byte(randomString(16, alnum)))
}
