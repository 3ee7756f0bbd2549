package wechat

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

const pathCode2Session = "/sns/jscode2session"

// Session is who a wx.login code belongs to. The session_key WeChat also
// returns is deliberately dropped: wxbridge never needs it, so it can never
// be stored or logged.
type Session struct {
	OpenID  string
	UnionID string
}

// Code2Session exchanges a wx.login code (valid five minutes, once) for the
// user's openid and unionid.
func (c *Client) Code2Session(ctx context.Context, app, code string) (Session, error) {
	a, err := c.app(app)
	if err != nil {
		return Session{}, err
	}
	q := url.Values{"appid": {a.app.AppID}, "secret": {a.app.Secret}, "js_code": {code}, "grant_type": {"authorization_code"}}
	var out struct {
		apiStatus
		OpenID  string `json:"openid"`
		UnionID string `json:"unionid"`
	}
	err = c.do(ctx, http.MethodGet, pathCode2Session, q, nil, &out)
	if err == nil {
		err = out.err(pathCode2Session)
	}
	if err != nil {
		return Session{}, fmt.Errorf("app %s: code2session: %w", app, err)
	}
	if out.OpenID == "" {
		return Session{}, fmt.Errorf("app %s: code2session: answer has no openid", app)
	}
	return Session{OpenID: out.OpenID, UnionID: out.UnionID}, nil
}
