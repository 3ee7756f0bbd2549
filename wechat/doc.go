// Package wechat is the only code in wxbridge that talks to WeChat.
//
// A Client holds the credentials of one or more Mini Programs ("apps"), keeps
// one access token per app (fetched from /cgi-bin/stable_token by default,
// cached in a TokenStore so a restart does not fetch again) and calls the
// subscribe-message, code2session and template-list APIs with it. Every call
// takes a context and runs with a timeout on one shared, pooled http.Client.
//
// Errors from WeChat are *APIError values. They match the class sentinels
// (ErrTokenInvalid, ErrTransient, ErrRecipient, ErrConfig, ErrData...) with
// errors.Is, so callers branch on the class, not on numbers or strings.
//
// Secrets (appsecret, access token, session_key, EncodingAESKey) never appear
// in errors or logs: URLs carried by errors have the access token redacted.
//
// A Client is safe for concurrent use.
package wechat
