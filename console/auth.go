package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CookieName is the console's session cookie.
const CookieName = "wxbridge_console"

// cookiePath scopes the cookie to the console.
const cookiePath = "/console"

// maxRevoked bounds the sessions remembered as logged out before they
// expire (beyond it the oldest are forgotten: a stolen cookie of a session
// logged out long ago still needs the browser's copy, which logout
// deleted).
const maxRevoked = 10_000

// sessions issues and checks session cookies: a random session id, its
// expiry, and an HMAC of both under a key derived from the admin token.
// The token itself never leaves the login form.
type sessions struct {
	key []byte
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	revoked map[string]time.Time // session id -> its expiry
}

func newSessions(token string, ttl time.Duration, now func() time.Time) *sessions {
	// Derived, not random: every bridge with the same token accepts the
	// others' cookies (one console behind a load balancer), and a new
	// token ends every session.
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("wxbridge console session key v1"))
	return &sessions{key: mac.Sum(nil), ttl: ttl, now: now, revoked: map[string]time.Time{}}
}

// checkToken compares a login attempt with the token in constant time
// (over digests, so not even the length is told).
func checkToken(got, token string) bool {
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1 && token != ""
}

// issue makes a new session cookie value and its expiry.
func (s *sessions) issue() (string, time.Time) {
	id := make([]byte, 18)
	_, _ = rand.Read(id) // crypto/rand.Read never fails
	exp := s.now().Add(s.ttl).Truncate(time.Second)
	payload := base64.RawURLEncoding.EncodeToString(id) + "." + strconv.FormatInt(exp.Unix(), 10)
	return payload + "." + s.sign(payload), exp
}

func (s *sessions) sign(payload string) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// session is a valid session: its id and when it ends.
type session struct {
	id  string
	exp time.Time
}

// check returns the session a cookie value stands for, if it is genuine,
// unexpired and not logged out.
func (s *sessions) check(value string) (session, bool) {
	id, rest, ok := strings.Cut(value, ".")
	if !ok {
		return session{}, false
	}
	expStr, sig, ok := strings.Cut(rest, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(s.sign(id+"."+expStr))) {
		return session{}, false
	}
	secs, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil {
		return session{}, false
	}
	exp := time.Unix(secs, 0)
	if !s.now().Before(exp) {
		return session{}, false
	}
	s.mu.Lock()
	_, gone := s.revoked[id]
	s.mu.Unlock()
	if gone {
		return session{}, false
	}
	return session{id: id, exp: exp}, true
}

// revoke ends a session before its expiry.
func (s *sessions) revoke(ss session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.revoked) >= maxRevoked {
		for id, exp := range s.revoked {
			if !now.Before(exp) {
				delete(s.revoked, id)
			}
		}
		for id := range s.revoked {
			if len(s.revoked) < maxRevoked {
				break
			}
			delete(s.revoked, id)
		}
	}
	s.revoked[ss.id] = ss.exp
}

// fromRequest is the session of r's cookie.
func (s *sessions) fromRequest(r *http.Request) (session, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return session{}, false
	}
	return s.check(c.Value)
}

// cookie is the session cookie to set: HttpOnly, SameSite=Strict, scoped
// to the console, Secure over TLS.
func (s *sessions) cookie(value string, exp time.Time, secure bool) *http.Cookie {
	c := &http.Cookie{Name: CookieName, Value: value, Path: cookiePath, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure}
	if exp.IsZero() {
		c.MaxAge = -1 // delete
	} else {
		c.Expires = exp.UTC()
		c.MaxAge = int(exp.Sub(s.now()).Seconds())
		if c.MaxAge <= 0 {
			c.MaxAge = 1
		}
	}
	return c
}
