package wechat

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Class sentinels. Callers branch on these with errors.Is, never on numbers
// or strings: an *APIError matches every sentinel of its errcode's class, and
// failures to get an answer at all match ErrTransient (and ErrUncertain when
// the request may have been acted on).
var (
	// ErrTokenInvalid: WeChat rejected the access token (40001, 40014, 42001)
	// and did so again after the client fetched a new one and retried once.
	ErrTokenInvalid = errors.New("wechat: access token rejected")

	// ErrTokenFetch: no access token could be obtained, so the call was not
	// made; it certainly did not reach WeChat. Alone it names a cause a quick
	// retry will not fix (wrong appid or secret 40013/40125, IP not
	// whitelisted 40164, daily quota 45009, frozen account...); together with
	// ErrTransient the cause should pass (-1, 45011, network). The client
	// hands the same error back, without fetching, until its backoff ends.
	ErrTokenFetch = errors.New("wechat: cannot fetch access token")

	// ErrTokenBackoff: an earlier token fetch failed and the client is
	// waiting before it tries again; this call made no request at all. It
	// comes with ErrTokenFetch and the earlier failure's classes. RetryAt
	// says when the next fetch may be made.
	ErrTokenBackoff = errors.New("wechat: waiting to fetch the access token again")

	// ErrTransient: try again later (-1, HTTP 5xx, timeouts, dropped
	// connections, non-JSON answers, 43108, 45009, 45011).
	ErrTransient = errors.New("wechat: transient failure")

	// ErrUncertain: the request may have reached WeChat and been acted on
	// (it was written, then the answer was lost to a timeout, a dropped
	// connection or a gateway error). It always comes with ErrTransient. A
	// failure to connect at all is transient but not uncertain.
	ErrUncertain = errors.New("wechat: outcome unknown")

	// ErrRecipient: this recipient cannot get this message (43101, 40003).
	ErrRecipient = errors.New("wechat: recipient cannot receive")

	// ErrNotSubscribed: 43101, the user has no subscription credit left or
	// refused. Comes with ErrRecipient.
	ErrNotSubscribed = errors.New("wechat: user not subscribed")

	// ErrInvalidOpenID: 40003, the openid does not belong to this app. Comes
	// with ErrRecipient.
	ErrInvalidOpenID = errors.New("wechat: invalid openid")

	// ErrNotFollowing: 43004 "require subscribe", the user does not follow
	// the official account, so a template message cannot reach them.
	// Comes with ErrRecipient. Global return codes:
	// https://developers.weixin.qq.com/doc/offiaccount/Getting_Started/Global_Return_Code.html
	ErrNotFollowing = errors.New("wechat: user does not follow the official account")

	// ErrAlreadySent: 45065, WeChat refused a template message because one
	// with the same client_msg_id went to the same user in the last 10
	// minutes: the message was sent before, not lost. SendTemplate hands
	// back the earlier msgid with it when WeChat names one.
	ErrAlreadySent = errors.New("wechat: already sent under this client_msg_id")

	// ErrConfig: the request is wrong for every recipient (40037 template id,
	// 41030 page, 43107 capability banned, 47003 data: see APIError.Field,
	// 47001 a body WeChat cannot read, 48001 an API the account may not
	// call, 40036 a template id of the wrong length, 40032 too many openids
	// in one batch, 45067 a client_msg_id too long), or the app's
	// credentials are refused outside the token endpoints. Fix the
	// configuration; retrying will not help.
	ErrConfig = errors.New("wechat: configuration error")

	// ErrData: the content was refused (45168 sensitive words).
	ErrData = errors.New("wechat: content refused")

	// ErrCode: code2session refused the login code (40029 invalid, 40226
	// blocked, 40163 already used).
	ErrCode = errors.New("wechat: login code refused")

	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("wechat: client closed")
)

// APIError is an error answer from WeChat: a non-zero errcode.
type APIError struct {
	Code int
	// Msg is WeChat's errmsg (with its "rid: ..." request id), with any
	// secret of the request scrubbed out.
	Msg string
	// Path is the API path that answered, without query (no token in it).
	Path string
	// MsgID is the msgid an error answer carries, exact decimal, or "":
	// 45065 names the message already sent under the same id.
	MsgID string
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

// Field returns the keyword a 47003 answer names ("argument invalid!
// data.thing23.value invalid" gives "thing23"), or "" when WeChat did not
// name one.
func (e *APIError) Field() string {
	if m := fieldInMsg.FindStringSubmatch(e.Msg); m != nil {
		return m[1]
	}
	return ""
}

var fieldInMsg = regexp.MustCompile(`data\.([A-Za-z_]+[0-9]*)(?:\.value)?`)

// credentialCodes are answers about the app's appid or secret, or the
// caller's IP, rather than about one request.
var credentialCodes = map[int]bool{
	40002: true, 40013: true, 40125: true, 40164: true, 40243: true, 41002: true, 41004: true,
	50004: true, 50007: true, 61024: true, 89503: true, 89506: true, 89507: true,
}

func classesOf(code int, path string) []error {
	if isTokenPath(path) {
		// Every failure of a token endpoint means "no token". 40001 there
		// means a wrong secret, not a stale token, so it must not trigger
		// the invalidate-and-retry path. The daily quota (45009) is not
		// transient here: it lasts until midnight.
		switch code {
		case -1, 45011:
			return []error{ErrTokenFetch, ErrTransient}
		}
		return []error{ErrTokenFetch}
	}
	switch code {
	case 40001, 40014, 42001:
		return []error{ErrTokenInvalid}
	case -1, 43108, 45009, 45011:
		return []error{ErrTransient}
	case 45066:
		// "相同 clientmsgid 重试速度过快，请间隔1分钟重试" (mass-send doc, the
		// only one that lists it): wait, then the repeat is answered.
		return []error{ErrTransient}
	case 43101:
		return []error{ErrRecipient, ErrNotSubscribed}
	case 40003:
		return []error{ErrRecipient, ErrInvalidOpenID}
	case 43004:
		return []error{ErrRecipient, ErrNotFollowing}
	case 43019:
		// "需要将接收者从黑名单中移除": the account has blacklisted the user.
		return []error{ErrRecipient}
	case 45065:
		return []error{ErrAlreadySent}
	case 40032, 40036, 40037, 41030, 43107, 45067, 47001, 47003, 48001, 200100:
		return []error{ErrConfig}
	case 45168:
		return []error{ErrData}
	case 40029, 40226, 40163:
		return []error{ErrCode}
	}
	if credentialCodes[code] {
		return []error{ErrConfig}
	}
	return nil
}

func isTokenPath(path string) bool {
	return path == pathToken || path == pathStableToken
}

// transportError is a failure to get a usable answer at all: no connection,
// a timeout, a dropped connection, HTTP 5xx, a body that is not JSON. It is
// transient; it is uncertain when the request was written and so may have
// been acted on.
type transportError struct {
	op        string // "POST /cgi-bin/message/subscribe/send"
	err       error  // never carries a query string with secrets
	uncertain bool
}

func (e *transportError) Error() string {
	if e.uncertain {
		return e.op + " (may have been received): " + e.err.Error()
	}
	return e.op + ": " + e.err.Error()
}

func (e *transportError) Unwrap() []error {
	if e.uncertain {
		return []error{e.err, ErrTransient, ErrUncertain}
	}
	return []error{e.err, ErrTransient}
}

// statusError is an HTTP answer that is neither 200 nor a 5xx: WeChat
// answers 200 even for errors, so a 404 or 403 comes from a wrong base URL
// or a proxy in between. 429 is the exception: something is throttling.
type statusError struct {
	op     string
	status int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s: HTTP %d (is the WeChat API base URL right?)", e.op, e.status)
}

func (e *statusError) Is(target error) bool {
	if e.status == 429 {
		return target == ErrTransient
	}
	return target == ErrConfig
}

// tokenFetchError is what callers get while an app has no token: the cause
// of the last failed fetch and when the next one will be tried. It never
// matches ErrUncertain: whatever happened to the token request, the call
// that needed the token was not made.
type tokenFetchError struct {
	appid   string
	err     error // names the endpoint
	retryAt time.Time
}

func (e *tokenFetchError) Error() string {
	s := fmt.Sprintf("fetch access token for %s: %v", e.appid, e.err)
	var api *APIError
	if errors.As(e.err, &api) && tokenFetchHints[api.Code] != "" {
		s += " (" + tokenFetchHints[api.Code] + ")"
	}
	if !e.retryAt.IsZero() {
		s += "; next attempt after " + e.retryAt.UTC().Format(time.RFC3339)
	}
	return s
}

func (e *tokenFetchError) Unwrap() []error { return []error{ErrTokenFetch, e.err} }

// backoffError is a tokenFetchError handed back, without a request, while
// the client waits to fetch again.
type backoffError struct{ *tokenFetchError }

func (e backoffError) Unwrap() []error { return []error{ErrTokenBackoff, e.tokenFetchError} }

// RetryAt returns when the client will next try to fetch the access token,
// if err says it is waiting to (ErrTokenBackoff); zero otherwise.
func RetryAt(err error) time.Time {
	var be backoffError
	if errors.As(err, &be) {
		return be.retryAt
	}
	return time.Time{}
}

// tokenFetchHints say what an operator can do about a token endpoint's
// answer; these failures are configuration, not bugs.
var tokenFetchHints = map[int]string{
	40001: "check the appsecret",
	40013: "check the appid",
	40125: "check the appsecret",
	40164: "add this server's IP to the app's API IP whitelist",
	40243: "the AppSecret is frozen: unfreeze it on the Mini Program admin site",
	45009: "the daily token quota is used up: it resets at midnight, or use clear_quota",
	50004: "the token API is forbidden for this account",
	50007: "the account is frozen",
	89503: "an administrator must confirm this call",
	89506: "an administrator refused this IP: retry after 24 h",
	89507: "an administrator refused this IP: retry after 1 h",
}

// certain strips the "may have been received" mark from a token request's
// failure (as returned by Client.do, unwrapped), see tokenFetchError.
func certain(err error) error {
	if te, ok := err.(*transportError); ok && te.uncertain {
		c := *te
		c.uncertain = false
		return &c
	}
	return err
}

// scrub replaces every secret value that occurs in s, in case WeChat echoes
// a request parameter back in an errmsg.
func scrub(s string, secrets []string) string {
	for _, v := range secrets {
		if v != "" && strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, "REDACTED")
		}
	}
	return s
}
