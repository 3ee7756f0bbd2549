package wechat

import (
	"errors"
	"fmt"
	"regexp"
)

// Class sentinels. An *APIError matches every sentinel of its class with
// errors.Is; transport failures (timeouts, refused connections, HTTP 5xx)
// match ErrTransient.
var (
	// ErrTokenInvalid: the access token was rejected (40001, 40014, 42001).
	// The client refreshes once and retries once before returning it.
	ErrTokenInvalid = errors.New("wechat: access token rejected")

	// ErrTokenFetch: fetching an access token failed for a reason that a retry
	// will not fix soon (wrong appid or secret, IP not whitelisted, quota).
	ErrTokenFetch = errors.New("wechat: cannot fetch access token")

	// ErrTransient: try again later (-1, HTTP 5xx, timeouts, 43108, 45009, 45011).
	ErrTransient = errors.New("wechat: transient failure")

	// ErrUncertain: the request may have reached WeChat and been acted on
	// (the answer was lost to a timeout or a dropped connection). It comes
	// with ErrTransient.
	ErrUncertain = errors.New("wechat: outcome unknown")

	// ErrRecipient: this recipient cannot get this message (43101, 40003).
	ErrRecipient = errors.New("wechat: recipient cannot receive")

	// ErrNotSubscribed: 43101, the user has no subscription credit left or refused.
	ErrNotSubscribed = errors.New("wechat: user not subscribed")

	// ErrInvalidOpenID: 40003, the openid does not belong to this app.
	ErrInvalidOpenID = errors.New("wechat: invalid openid")

	// ErrConfig: the request is wrong for every recipient (40037 template id,
	// 41030 page, 43107 capability banned, 47003 data). Fix the configuration.
	ErrConfig = errors.New("wechat: configuration error")

	// ErrData: the content was refused (45168 sensitive words).
	ErrData = errors.New("wechat: content refused")

	// ErrCode: code2session refused the login code (40029, 40226, 40163).
	ErrCode = errors.New("wechat: login code refused")
)

// APIError is an error answer from WeChat: a non-zero errcode.
type APIError struct {
	Code int
	Msg  string
	// Path is the API path that answered, without query (no token in it).
	Path string
}

func (e *APIError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("wechat %s: %d: %s", e.Path, e.Code, e.Msg)
	}
	return fmt.Sprintf("wechat %d: %s", e.Code, e.Msg)
}

// Is makes errors.Is(err, ErrTransient) and friends work on an *APIError.
func (e *APIError) Is(target error) bool {
	for _, s := range classesOf(e.Code, e.Path) {
		if s == target {
			return true
		}
	}
	return false
}

// Field returns the keyword a 47003 answer names ("data.thing23.value
// invalid" gives "thing23"), or "" when WeChat did not name one.
func (e *APIError) Field() string {
	if m := fieldInMsg.FindStringSubmatch(e.Msg); m != nil {
		return m[1]
	}
	return ""
}

var fieldInMsg = regexp.MustCompile(`data\.([A-Za-z_]+[0-9]*)(?:\.value)?`)

func classesOf(code int, path string) []error {
	switch code {
	case 40001, 40014, 42001:
		return []error{ErrTokenInvalid}
	case -1, 43108, 45011:
		return []error{ErrTransient}
	case 45009:
		if isTokenPath(path) {
			return []error{ErrTokenFetch, ErrTransient}
		}
		return []error{ErrTransient}
	case 43101:
		return []error{ErrRecipient, ErrNotSubscribed}
	case 40003:
		return []error{ErrRecipient, ErrInvalidOpenID}
	case 40037, 41030, 43107, 47003:
		return []error{ErrConfig}
	case 45168:
		return []error{ErrData}
	case 40029, 40226, 40163:
		return []error{ErrCode}
	case 40013, 40125, 40164, 40243, 41002, 41004, 40002, 50004, 50007, 61024, 89503, 89506, 89507:
		return []error{ErrTokenFetch}
	}
	return nil
}

func isTokenPath(path string) bool {
	return path == pathToken || path == pathStableToken
}

// transportError wraps a failure to get an answer at all (timeout, refused
// connection, HTTP 5xx, a body that is not JSON). It is transient; it is
// uncertain when the request may have been received.
type transportError struct {
	op        string
	err       error
	uncertain bool
}

func (e *transportError) Error() string { return e.op + ": " + e.err.Error() }
func (e *transportError) Unwrap() []error {
	if e.uncertain {
		return []error{e.err, ErrTransient, ErrUncertain}
	}
	return []error{e.err, ErrTransient}
}
