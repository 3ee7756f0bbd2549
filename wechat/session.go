package wechat

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

const pathCode2Session = "/sns/jscode2session"

// Session is who a wx.login code belongs to. The session_key WeChat also
// returns is deliberately not even decoded: wxbridge never needs it, so it
// can never be stored, logged or returned.
type Session struct {
	OpenID  string
	UnionID string
}

// Code2Session exchanges a wx.login code (valid five minutes, once) for the
// user's openid and unionid. A refused code matches ErrCode. The code and
// the appsecret never appear in the error.
func (c *Client) Code2Session(ctx context.Context, app, code string) (Session, error) {
	a, err := c.app(app)
	if err != nil {
		return Session{}, err
	}
	q := url.Values{"appid": {a.app.AppID}, "secret": {a.app.Secret}, "js_code": {code}, "grant_type": {"authorization_code"}}
	data, err := c.do(ctx, request{method: http.MethodGet, path: pathCode2Session, query: q,
		secrets: []string{a.app.Secret, code}})
	if err != nil {
		return Session{}, fmt.Errorf("app %s: code2session: %w", app, err)
	}
	var out struct {
		OpenID  string `json:"openid"`
		UnionID string `json:"unionid"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return Session{}, fmt.Errorf("app %s: code2session: read answer: %w", app, err)
	}
	if out.OpenID == "" {
		return Session{}, fmt.Errorf("app %s: code2session: answer has no openid", app)
	}
	return Session{OpenID: out.OpenID, UnionID: out.UnionID}, nil
}
