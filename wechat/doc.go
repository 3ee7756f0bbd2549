// Package wechat is the only code in wxbridge that talks to WeChat: the
// server API of Mini Programs (access tokens, subscribeMessage.send,
// code2session, the template list), of official accounts (服务号: template
// messages, subscription notifications, user info; official.go) and the
// message-push callback protocol, with the official account's events
// (follow, unfollow, TEMPLATESENDJOBFINISH) typed on Push.
//
// # Client
//
// A Client holds the credentials of one or more Mini Programs and official
// accounts ("apps", registered with SetApp; both kinds get their tokens the
// same way) and calls the API with one shared, pooled
// http.Client. Every call takes a context and runs with Config.Timeout.
//
// Each app has its own access token, taken from POST /cgi-bin/stable_token
// in normal mode (TokenStable, safe when several processes share an app) or
// from GET /cgi-bin/token (TokenLegacy). The token life cycle:
//
//   - It is kept in a TokenStore (storage.DB in wxbridge) under a key that
//     names the appid and the endpoint, so a restart reuses a token that has
//     not expired instead of fetching again.
//   - At most one fetch per app runs at a time, on a goroutine the Client
//     owns; callers without a usable token wait for it (or for their own
//     context), they never start their own.
//   - It is replaced in the background Config.RefreshBefore ahead of expiry
//     (never earlier than half its life, never more often than every 30 s,
//     so short-lived tokens cannot cause a fetch loop); callers keep using
//     the current token meanwhile.
//   - When an API answers 40001, 40014 or 42001, the token is dropped only if
//     it is still the one that failed, one new token is fetched for all the
//     callers that saw it fail, and each call is retried once. force_refresh
//     is used only when stable_token hands back the very token WeChat just
//     rejected, and at most 20 times per UTC day and 30 s apart per app
//     (the budget is kept in the TokenStore too).
//   - A failed fetch is logged once (and reported to
//     Config.TokenFetchFailed, for metrics) and handed back to callers,
//     without fetching again, for a backoff that grows from 2 s to 1 min.
//
// Close cancels running fetches and waits for the goroutines that ran them.
//
// # Errors
//
// Errors from WeChat are *APIError values. They, and failures to get an
// answer at all, match the class sentinels (ErrTokenInvalid, ErrTokenFetch,
// ErrTransient, ErrUncertain, ErrRecipient, ErrConfig, ErrData, ErrCode...)
// with errors.Is through any wrapping, so callers branch on the class, not on
// numbers or strings. ErrUncertain marks a request that was written and may
// have been acted on although no answer came back.
//
// Secrets (appsecret, access token, js_code, session_key, EncodingAESKey)
// never appear in errors or logs: URLs carried by errors have them
// redacted, errmsgs are scrubbed of them, and session_key is not even
// decoded.
//
// A Client is safe for concurrent use.
package wechat
