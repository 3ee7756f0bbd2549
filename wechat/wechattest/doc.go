// Package wechattest is an in-process WeChat emulator for tests, benchmarks
// and `wxbridge emulate`. The real API cannot be reached from tests, so the
// emulator behaves like it wherever wxbridge could tell the difference:
// tests that pass against it should mean something.
//
// An Emulator is an http.Handler serving, with WeChat's paths, methods,
// JSON shapes and errcodes (every error is HTTP 200 with an errmsg ending
// in " rid: ..."):
//
//   - GET /cgi-bin/token: every fetch issues a new token; the previous ones
//     keep working 5 minutes, then answer 40001. Expired tokens answer 42001.
//   - POST /cgi-bin/stable_token: the same token while it has more than 5
//     minutes left, a new one after that (both valid meanwhile);
//     force_refresh revokes the old one at once, at most 20 times a day and
//     30 s apart, else it answers as normal mode. The two families of
//     tokens do not affect each other.
//   - POST /cgi-bin/message/subscribe/send: checks the token, the openid
//     (40003), the template (40037), the page (41030, once SetPages was
//     called), concurrent sends to one openid (43108), every keyword value
//     against its type's limits (47003 naming the field), and the user's
//     subscription (43101); answers a 19-digit msgid as a JSON number.
//   - GET /sns/jscode2session: codes from IssueCode work once, for 5 minutes
//     (else 40029); Block makes them 40226; 45011 over 100 calls a minute
//     per user.
//   - GET /wxaapi/newtmpl/gettemplate: the registered templates.
//
// An app may be an official account (服务号, AddOfficialAccount): the same
// token endpoints, and its own paths (official.go cites the pages each
// behaviour was checked against):
//
//   - POST /cgi-bin/message/template/send: a template message to a follower:
//     40003 for an openid not of the account, 40037 for a template that is
//     not one of its template-message templates, 43004 "require subscribe"
//     for a user who does not follow, 40013 for a miniprogram appid that is
//     not one of the emulator's Mini Programs (an empty miniprogram object
//     opens none, as third-party SDKs send it), 47003 naming the field
//     ("is empty" or "invalid"; category-template keyword types, const and
//     12-digit amounts included), 45067 for a client_msg_id over 64 bytes
//     and 45065 "clientmsgid exist" with the first msgid for a repeat of
//     one within 10 minutes; then a msgid and a TEMPLATESENDJOBFINISH push
//     ("success", "failed:user block" after RefuseMessages, "failed: system
//     failed" at Faults.TemplateJobFailRate).
//   - POST /cgi-bin/message/subscribe/bizsend: a subscription notification,
//     with the credits of subscribe messages (43101 without one) and its
//     popup, change and sent events on the account's callback.
//   - GET /cgi-bin/user/info and POST /cgi-bin/user/info/batchget (1 to
//     100 openids, else 40032): subscribe, unionid and the documented
//     fields for followers, subscribe 0 for others, 40003 for openids the
//     account never saw.
//   - GET /cgi-bin/user/get: the followers' openids in pages of
//     Options.FollowerPage (default 10,000), next_openid "" after the last.
//
// A Mini Program's token on these paths, and an official account's on
// subscribe/send, get 48001 "api unauthorized". A Person (AddPerson) is
// one unionid with an openid per app: code2session answers the unionid,
// user/info too while they follow. Follow, FollowByQR and Unfollow act as
// the user and push subscribe and unsubscribe events; AddFollower is a
// follower from before, without a push.
//
// Subscription state is kept per app, openid and template: each one-time
// accept (Accept, Subscribe) is worth one send and accepts add up; a send
// spends a credit only when it succeeds; a reject (Reject, Subscribe,
// Unsubscribe) ends it; long-term templates need one accept. Subscribe and
// Unsubscribe act as the user does and push subscribe_msg_popup_event and
// subscribe_msg_change_event to the app's callback (SetCallback), signed
// and, in compatible and safe mode, encrypted, as JSON or XML;
// Callback.SentEvents adds a subscribe_msg_sent_event for every accepted
// send, shortly after answering it. Pushes are tried three times with the
// same query and body (so the same CreateTime) when the receiver does not
// answer 2xx within the timeout; Pushes shows what was pushed and how it
// was answered, FlushPushes waits for the pushes under way. PushEvent,
// PushMessage and PushRaw push what a test makes; VerifyCallback does the
// GET echostr check WeChat makes when the URL is configured.
//
// Options.AutoApps and AutoTemplates make every appid an app (with one
// secret and one callback) and every template id a one-time template whose
// keys are checked by their names, for `wxbridge emulate` without a rules
// file.
//
// SetFaults injects latency, -1 answers, HTTP 500s, dropped connections,
// lost replies, hung requests, quota exhaustion (45009) and token
// invalidation. Calls counts the requests per path; Errors counts the
// error answers by errcode; Sends lists every accepted send, on each path,
// so a test can assert on exactly what was sent (client_msg_id included).
//
// # Endpoints for people
//
// Under /_dev/ (no WeChat path starts with an underscore), for whoever runs
// `wxbridge emulate` or `wxbridge serve --emulator` (there under
// /emulator/_dev/) and drives it from a shell:
//
//	GET  /_dev/                 this list
//	GET  /_dev/sends            accepted sends; ?appid= &openid= &template_id= filter
//	GET  /_dev/pushes           finished callback pushes and their answers
//	GET  /_dev/calls            requests per path
//	GET  /_dev/subscriptions?appid=&openid=   a user's subscription state
//	POST /_dev/subscribe        {"appid","openid","results":{"TEMPLATE_ID":"accept"}}
//	                            -> what wx.requestSubscribeMessage returns; pushes the popup event
//	POST /_dev/unsubscribe      {"appid","openid","template_id"}: the user sets 拒收; pushes the change event
//	POST /_dev/code             {"appid","openid","unionid"} -> {"code"}: wx.login
//	POST /_dev/invalidate       {"appid"}: the app's tokens stop working
//	GET  /_dev/errors           error answers by errcode
//	POST /_dev/person           {"unionid","openids":{"APPID":"OPENID"}}: one person across apps
//	POST /_dev/follow           {"appid","openid","scene"}: follow an official account (through a QR code with scene)
//	POST /_dev/unfollow         {"appid","openid"}: unfollow it
//	POST /_dev/block            {"appid","openid"}: refuse its messages; /_dev/unblock takes it back
//	GET  /_dev/followers?appid= the account's users and whether they follow
//	GET  /_dev/faults           the faults in force
//	POST /_dev/faults           {"latency":"50ms","jitter":"10ms","system_error_rate":0.1,
//	                             "http500_rate":0,"drop_rate":0,"lost_reply_rate":0,"timeout_rate":0,
//	                             "hang_for":"1m","quota_exhausted":false,"invalidate_token_every":0,
//	                             "paths":["/cgi-bin/message/subscribe/send"],"seed":1}; {} turns them off
//
// appid may be left out when the emulator has one app. Errors are 4xx with
// {"error":"..."}.
//
// Where WeChat's behaviour is not documented, the emulator picks the most
// plausible reading and says so in a comment next to the code.
//
// An Emulator is safe for concurrent use; every method may be called while
// it serves requests. Its per-app state has a lock of its own, and keyword
// checks run outside any lock. Call Close to stop the goroutines that
// deliver pushes.
package wechattest
