package natskv

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Ids are arbitrary UTF-8 (NUL, dots, spaces, wildcards, emoji), and a KV
// key allows only [-/_=.a-zA-Z0-9] in dot-separated tokens. Each id part is
// one token: its base64url form (no padding), "=" for the empty string,
// and, for a part longer than maxRawToken bytes, "=" and the base64url
// SHA-256 of it. "=" never occurs in a base64url encoding, so the three
// forms cannot collide; hashing long parts keeps every subject far below
// the protocol's control-line limit, so no id is refused for its length.
const maxRawToken = 192

var b64 = base64.RawURLEncoding

// token is one id part as a subject token.
func token(s string) string {
	switch {
	case s == "":
		return "="
	case len(s) > maxRawToken:
		h := sha256.Sum256([]byte(s))
		return "=" + b64.EncodeToString(h[:])
	}
	return b64.EncodeToString([]byte(s))
}

// parseToken is the inverse of token; ok is false for a hashed part (or a
// token token never makes).
func parseToken(t string) (string, bool) {
	switch {
	case t == "=":
		return "", true
	case strings.HasPrefix(t, "="):
		return "", false
	}
	b, err := b64.DecodeString(t)
	if err != nil || len(b) > maxRawToken || len(b) == 0 {
		return "", false
	}
	return string(b), true
}

// tokens joins the parts of a compound id (storage.Key joins them with
// NUL) as one token each, so that a prefix of parts is a subject prefix.
func tokens(key string) string {
	parts := strings.Split(key, "\x00")
	for i, p := range parts {
		parts[i] = token(p)
	}
	return strings.Join(parts, ".")
}

// names are the subjects of one store: KV keys under $KV.<bucket>., and
// the outbox and the schedule under the store's prefix, all in the
// bucket's stream so that one atomic batch can write any of them.
type names struct {
	kv     string // "$KV.<bucket>."
	prefix string // "<prefix>."
}

func newNames(bucket, prefix string) names {
	return names{kv: "$KV." + bucket + ".", prefix: prefix + "."}
}

// key is the KV key (without the bucket's prefix) of a subject.
func (n names) key(subject string) string { return strings.TrimPrefix(subject, n.kv) }

func (n names) send(key string) string         { return n.kv + "send." + tokens(key) }
func (n names) eventSends(event string) string { return n.kv + "send." + tokens(event) + ".>" }
func (n names) event(id string) string         { return n.kv + "event." + token(id) }
func (n names) msgid(id string) string         { return n.kv + "msgid." + token(id) }
func (n names) orphan(msgid string) string     { return n.kv + "orphan." + token(msgid) }
func (n names) binding(user, app string) string {
	return n.kv + "bind." + token(user) + "." + token(app)
}
func (n names) bindings(user string) string { return n.kv + "bind." + token(user) + ".*" }
func (n names) openid(app, openid string) string {
	return n.kv + "oid." + token(app) + "." + token(openid)
}
func (n names) subs(app, openid string) string {
	return n.kv + "sub." + token(app) + "." + token(openid) + ".*"
}
func (n names) role(role, scope string) string {
	return n.kv + "role." + token(role) + "." + token(scope)
}
func (n names) follower(app, openid string) string {
	return n.kv + "follower." + token(app) + "." + token(openid)
}

// followerUnion is the index entry naming the openid of unionid in the
// official account app.
func (n names) followerUnion(app, unionid string) string {
	return n.kv + "uid.follower." + token(app) + "." + token(unionid)
}

// bindingUnion is the index entry of user's binding in app that carries
// unionid; bindingsUnion matches every binding that carries it.
func (n names) bindingUnion(unionid, app, user string) string {
	return n.kv + "uid.bind." + token(unionid) + "." + token(app) + "." + token(user)
}
func (n names) bindingsUnion(unionid string) string {
	return n.kv + "uid.bind." + token(unionid) + ".>"
}
func (n names) userRoles(user string) string  { return n.kv + "uroles." + token(user) }
func (n names) push(key string) string        { return n.kv + "push." + tokens(key) }
func (n names) dedupe(key string) string      { return n.kv + "dedupe." + tokens(key) }
func (n names) capKey(key string) string      { return n.kv + "cap." + tokens(key) }
func (n names) accessToken(key string) string { return n.kv + "token." + tokens(key) }
func (n names) lease(owner string) string     { return n.kv + "lease." + token(owner) }
func (n names) outbox(id string) string       { return n.prefix + "outbox." + id }
func (n names) outboxAll() string             { return n.prefix + "outbox.>" }
func (n names) sched(key string) string       { return n.prefix + "sched." + tokens(key) }
func (n names) due(key string) string         { return n.prefix + "due." + tokens(key) }
func (n names) dueAll() string                { return n.prefix + "due.>" }
func (n names) schedAll() string              { return n.prefix + "sched.>" }
func (n names) sub(app, openid, tpl string) string {
	return n.kv + "sub." + token(app) + "." + token(openid) + "." + token(tpl)
}
