package wechat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Defaults of PushHandler.
const (
	DefaultPushMaxBody       = 64 << 10
	DefaultPushMaxSkew       = 5 * time.Minute
	DefaultPushHandleTimeout = 4 * time.Second
)

// More refusals of a push; see also ErrBadSignature, ErrDecrypt,
// ErrAppIDMismatch (crypto.go) and ErrMalformedPush (push_message.go).
var (
	// ErrStaleTimestamp: the signed timestamp is missing, not a number, or
	// outside the accepted window, so the request may be a replay.
	ErrStaleTimestamp = errors.New("wechat push: timestamp outside the accepted window")
	// ErrReplayedSignature: a plaintext-mode signature already vouched for a
	// different message (or for a URL verification). It covers only token,
	// timestamp and nonce, never the body, so it may vouch for one body only.
	ErrReplayedSignature = errors.New("wechat push: signature reused for another message")
	// ErrPushNotConfigured: the app lacks the token, AES key or appid this
	// push needs. Our fault, not the sender's.
	ErrPushNotConfigured = errors.New("wechat push: app not configured for this push")
	// ErrPlaintextRefused: a plaintext-mode push to an app that has an
	// EncodingAESKey and does not allow plaintext. Its only proof, the
	// three-part signature, does not cover the body, so it is refused as
	// unsigned: it also matches ErrBadSignature.
	ErrPlaintextRefused = fmt.Errorf("%w: plaintext push to an app with an EncodingAESKey", ErrBadSignature)
)

// PushConfig is one app's message-push settings.
type PushConfig struct {
	AppID          string // the appid the decrypted message must carry (for third-party platforms: the platform appid)
	Token          string // push Token
	EncodingAESKey string // 43 chars; required for compatible/safe mode bodies
	// AllowPlaintext accepts plaintext-mode pushes although EncodingAESKey
	// is set: only while the console is being switched to safe mode. An
	// app with a key otherwise takes only pushes whose msg_signature
	// covers the body, since a plaintext signature copied from any real
	// push URL can carry a forged body for as long as its timestamp is
	// accepted. An app without a key takes plaintext regardless: it has
	// nothing better.
	AllowPlaintext bool
}

// VerifyURL checks a URL-verification request (GET with signature,
// timestamp, nonce, echostr) and returns the echostr to answer with. The
// signature is the same three-part one in every mode: the Mini Program GET
// carries no encrypted echostr (WeCom's does; do not copy WeCom code).
func (c PushConfig) VerifyURL(q url.Values, now time.Time, maxSkew time.Duration) (string, error) {
	if c.Token == "" {
		return "", fmt.Errorf("verify push URL: %w: no token", ErrPushNotConfigured)
	}
	if err := verifyQuery(c.Token, q.Get("signature"), q); err != nil {
		return "", fmt.Errorf("verify push URL: %w", err)
	}
	if err := checkTimestamp(q.Get("timestamp"), now, maxSkew); err != nil {
		return "", fmt.Errorf("verify push URL: %w", err)
	}
	echo := q.Get("echostr")
	if echo == "" {
		return "", fmt.Errorf("verify push URL: %w: no echostr", ErrMalformedPush)
	}
	return echo, nil
}

// Open verifies, decrypts and parses one pushed POST: its query and body.
// Errors match ErrBadSignature, ErrStaleTimestamp, ErrDecrypt,
// ErrAppIDMismatch, ErrMalformedPush or ErrPushNotConfigured.
//
// encrypt_type=aes means compatible or safe mode: msg_signature over the
// Encrypt field is the only proof (the plain signature does not cover the
// body), and the decrypted message is the only source of truth; a
// compatible-mode plaintext copy beside it is ignored. A missing or "raw"
// encrypt_type means plaintext mode, whose signature covers only token,
// timestamp and nonce: accepted from an app without an EncodingAESKey, and
// from one with a key only if AllowPlaintext is set; otherwise it is
// ErrPlaintextRefused, before anything else is looked at.
func (c PushConfig) Open(q url.Values, body []byte, now time.Time, maxSkew time.Duration) (*Push, error) {
	p, _, err := c.open(q, body, now, maxSkew)
	return p, err
}

// open also returns the compatible-mode envelope, for the handler to warn
// about a plaintext copy that disagrees.
func (c PushConfig) open(q url.Values, body []byte, now time.Time, maxSkew time.Duration) (*Push, pushEnvelope, error) {
	var env pushEnvelope
	if c.Token == "" {
		return nil, env, fmt.Errorf("open push: %w: no token", ErrPushNotConfigured)
	}
	switch et := q.Get("encrypt_type"); et {
	case "", "raw":
		if c.EncodingAESKey != "" && !c.AllowPlaintext {
			return nil, env, fmt.Errorf("open plaintext push: %w: its signature does not cover the body; "+
				"set the console's push to safe mode, or allow plaintext for this app while migrating", ErrPlaintextRefused)
		}
		if err := verifyQuery(c.Token, q.Get("signature"), q); err != nil {
			return nil, env, fmt.Errorf("open plaintext push: %w", err)
		}
		if err := checkTimestamp(q.Get("timestamp"), now, maxSkew); err != nil {
			return nil, env, fmt.Errorf("open plaintext push: %w", err)
		}
		p, err := ParsePush(body, "")
		if err != nil {
			return nil, env, fmt.Errorf("open plaintext push: %w", err)
		}
		p.Mode = ModePlaintext
		return p, env, nil
	case "aes":
	default:
		return nil, env, fmt.Errorf("open push: %w: unknown encrypt_type %q", ErrMalformedPush, et)
	}

	msgSig := q.Get("msg_signature")
	if msgSig == "" {
		// Checked before the body is parsed: no proof, no further work.
		return nil, env, fmt.Errorf("open encrypted push: %w: no msg_signature", ErrBadSignature)
	}
	env, _, err := parseEnvelope(body)
	if err != nil {
		return nil, env, fmt.Errorf("open encrypted push: %w", err)
	}
	if err := VerifySignature(msgSig, c.Token, q.Get("timestamp"), q.Get("nonce"), env.Encrypt); err != nil {
		return nil, env, fmt.Errorf("open encrypted push: msg_signature: %w", err)
	}
	if err := checkTimestamp(q.Get("timestamp"), now, maxSkew); err != nil {
		return nil, env, fmt.Errorf("open encrypted push: %w", err)
	}
	if c.AppID == "" || c.EncodingAESKey == "" {
		return nil, env, fmt.Errorf("open encrypted push: %w: appid or EncodingAESKey missing", ErrPushNotConfigured)
	}
	key, err := AESKey(c.EncodingAESKey)
	if err != nil {
		// The key error says only its length; never the key itself.
		return nil, env, fmt.Errorf("open encrypted push: %w: %w", ErrPushNotConfigured, err)
	}
	msg, appid, err := Decrypt(key, env.Encrypt)
	if err != nil {
		return nil, env, fmt.Errorf("open encrypted push: %w", err)
	}
	if appid != c.AppID {
		return nil, env, fmt.Errorf("open encrypted push: %w: for %q, want %q", ErrAppIDMismatch, appid, c.AppID)
	}
	p, err := ParsePush(msg, "")
	if err != nil {
		return nil, env, fmt.Errorf("open encrypted push: decrypted message: %w", err)
	}
	p.Mode = ModeSafe
	if env.hasPlaintextCopy() {
		p.Mode = ModeCompatible
	}
	return p, env, nil
}

// verifyQuery checks the three-part signature (token, timestamp, nonce) of
// a URL verification or a plaintext-mode push.
func verifyQuery(token, sig string, q url.Values) error {
	if sig == "" {
		return fmt.Errorf("%w: no signature", ErrBadSignature)
	}
	if err := VerifySignature(sig, token, q.Get("timestamp"), q.Get("nonce")); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	return nil
}

// checkTimestamp bounds replays: a captured request stays valid only while
// its signed timestamp is within maxSkew of now (either side, since clocks
// drift both ways). maxSkew <= 0 means DefaultPushMaxSkew.
func checkTimestamp(ts string, now time.Time, maxSkew time.Duration) error {
	if maxSkew <= 0 {
		maxSkew = DefaultPushMaxSkew
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q is not a number", ErrStaleTimestamp, ts)
	}
	skew := int64(maxSkew / time.Second)
	// Compared in seconds so that no huge timestamp can overflow.
	if n := now.Unix(); t < n-skew || t > n+skew {
		return fmt.Errorf("%w: timestamp %d is %ds from now", ErrStaleTimestamp, t, n-t)
	}
	return nil
}

// PushHandler serves GET/POST /wechat/callback/{app}; the app name comes
// from r.PathValue("app"). Set the fields, then use it by pointer; it is safe
// for concurrent use and must not be copied after first use.
//
// Answers, chosen so that WeChat retries only what a retry can fix and a
// forger learns nothing useful:
//
//	200 "success"  accepted and handled, or a retry of a push already handled
//	400            signed (or unauthenticatable) but malformed: not XML/JSON, no
//	               Encrypt, wrong value types, unknown encrypt_type, no echostr
//	401            signature or msg_signature missing or wrong; a plaintext
//	               push to an app with a key that does not allow plaintext
//	               (its signature does not cover the body)
//	403            timestamp outside the window; decryption failure or appid
//	               mismatch of a correctly signed body; a plaintext signature
//	               reused for another body. All decryption refusals share one
//	               answer so that it cannot serve as a padding oracle.
//	404            unknown app
//	405            not GET or POST
//	413            body over MaxBody (refused by Content-Length before reading)
//	500            Handle failed or overran its deadline (WeChat retries), or
//	               the app lacks the token/key this push needs
//
// Refused requests never reach Handle. Bodies of refusals are the bare
// status text: the reasons go to the log, not to the caller.
type PushHandler struct {
	Config func(app string) (PushConfig, bool) // unknown app → 404
	// Handle is called for each verified POST, except retries and replays of
	// a push this handler already handled successfully (same app and
	// DedupeKey within a few times MaxSkew, in this process). It must be
	// idempotent on DedupeKey all the same: restarts and other instances
	// do not share that memory. An error → HTTP 500 so that WeChat retries.
	Handle func(ctx context.Context, app string, p *Push) error
	// MaxBody bounds a POST body; default DefaultPushMaxBody (64 KiB).
	MaxBody int64
	// MaxSkew is the accepted |now - timestamp|; default DefaultPushMaxSkew
	// (WeChat retries within ~15 s).
	MaxSkew time.Duration
	// HandleTimeout is Handle's deadline; default DefaultPushHandleTimeout,
	// inside WeChat's 5 s. Handle should finish well within it (one local
	// transaction); if it does not, the request is answered 500 so that
	// WeChat retries, and Handle keeps running in the background with an
	// expired context. Should it still succeed, the retry finds it done (or
	// waits for it while it is in flight) and is answered success without a
	// second call. Answering "" instead would stop WeChat's retries and lose
	// the push if Handle then failed.
	HandleTimeout time.Duration
	Now           func() time.Time
	Logger        *slog.Logger

	mu   sync.Mutex
	seen *pushMemory
	// warned is when each app was last warned about taking plaintext
	// pushes despite its key.
	warned map[string]time.Time
	// running counts Handle calls, which may outlive their request (see
	// HandleTimeout): Wait waits for them.
	running sync.WaitGroup
}

// plaintextWarnEvery spaces the warnings about plaintext pushes accepted
// under AllowPlaintext: loud enough to be noticed, not one per push.
const plaintextWarnEvery = 10 * time.Minute

// Wait waits for every Handle call under way, including those whose
// request was already answered: call it after the HTTP server stopped and
// before closing what Handle writes to.
func (h *PushHandler) Wait() { h.running.Wait() }

// ServeHTTP answers WeChat's URL verification (GET) and pushes (POST).
func (h *PushHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	log := h.logger().With("app", app, "remote", r.RemoteAddr)
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		refuse(w, log, http.StatusMethodNotAllowed, fmt.Errorf("method %s", r.Method))
		return
	}
	var (
		cfg PushConfig
		ok  bool
	)
	if h.Config != nil && app != "" {
		cfg, ok = h.Config(app)
	}
	if !ok {
		refuse(w, log, http.StatusNotFound, errors.New("unknown app"))
		return
	}
	if r.Method == http.MethodGet {
		h.serveVerify(w, r, log, app, cfg)
		return
	}
	h.servePush(w, r, log, app, cfg)
}

func (h *PushHandler) serveVerify(w http.ResponseWriter, r *http.Request, log *slog.Logger, app string, cfg PushConfig) {
	q := r.URL.Query()
	echo, err := cfg.VerifyURL(q, h.now(), h.maxSkew())
	if err != nil {
		refuse(w, log, pushStatus(err), err)
		return
	}
	// The three-part signature of a GET is exactly that of a plaintext POST;
	// remembering it stops a captured verification URL from being reused to
	// vouch for a forged plaintext body.
	h.memory().bindSignature(app, q, "\x00GET", h.now())
	log.Info("push URL verified")
	// echostr is not covered by the signature: never let it be sniffed as HTML.
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = io.WriteString(w, echo)
}

func (h *PushHandler) servePush(w http.ResponseWriter, r *http.Request, log *slog.Logger, app string, cfg PushConfig) {
	maxBody := h.MaxBody
	if maxBody <= 0 {
		maxBody = DefaultPushMaxBody
	}
	if r.ContentLength > maxBody {
		refuse(w, log, http.StatusRequestEntityTooLarge, fmt.Errorf("Content-Length %d over %d", r.ContentLength, maxBody))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			refuse(w, log, http.StatusRequestEntityTooLarge, fmt.Errorf("body over %d bytes", maxBody))
			return
		}
		refuse(w, log, http.StatusBadRequest, fmt.Errorf("read push body: %w", err))
		return
	}
	q := r.URL.Query()
	p, env, err := cfg.open(q, body, h.now(), h.maxSkew())
	if err != nil {
		refuse(w, log, pushStatus(err), err)
		return
	}
	log = log.With("mode", p.Mode, "format", p.Format, "msg_type", p.MsgType, "event", p.Event)
	if p.Mode == ModeCompatible && env.disagrees(p) {
		log.Warn("compatible-mode plaintext copy disagrees with the encrypted message; using the encrypted one")
	}
	key := p.DedupeKey()
	if p.Mode == ModePlaintext && !h.memory().bindSignature(app, q, key, h.now()) {
		refuse(w, log, http.StatusForbidden, ErrReplayedSignature)
		return
	}
	if p.Mode == ModePlaintext && cfg.EncodingAESKey != "" && h.dueWarning(app) {
		log.Warn("accepted a plaintext push for an app with an EncodingAESKey (aes_key) because plaintext is allowed for it: " +
			"its signature does not cover the body, so a captured push URL can carry a forged body for minutes; " +
			"switch the console to safe mode and stop allowing plaintext")
	}
	if err := h.deliver(app, key, p); err != nil {
		log.Error("push not handled; WeChat will retry", "err", err)
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "success")
}

// errPushDeadline: Handle did not return within HandleTimeout.
var errPushDeadline = errors.New("handle push: deadline exceeded")

// deliver calls Handle once for a push and its concurrent retries: a retry
// that arrives while the first is in flight waits for its outcome instead
// of running Handle again, and one that arrives after a success is answered
// at once.
func (h *PushHandler) deliver(app, key string, p *Push) error {
	if h.Handle == nil {
		return errors.New("handle push: no Handle function")
	}
	timeout := h.HandleTimeout
	if timeout <= 0 {
		timeout = DefaultPushHandleTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	mem := h.memory()
	for {
		f, leader := mem.claim(app, key, h.now())
		if f == nil {
			return nil // handled before
		}
		if !leader {
			select {
			case <-f.done:
				if f.err == nil {
					return nil
				}
				continue // it failed: this retry gets its own go
			case <-deadline.C:
				return errPushDeadline
			}
		}
		// Detached from the request: WeChat hanging up must not abort a
		// transaction halfway; the deadline still bounds it.
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		h.running.Add(1)
		go func() {
			defer h.running.Done()
			defer cancel()
			err := h.callHandle(ctx, app, p)
			mem.finish(app, key, f, err, h.now())
		}()
		select {
		case <-f.done:
			return f.err
		case <-deadline.C:
			return errPushDeadline
		}
	}
}

// callHandle turns a panic in Handle into an error: it runs on its own
// goroutine, where net/http's recovery would not catch it and the whole
// process would die.
func (h *PushHandler) callHandle(ctx context.Context, app string, p *Push) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("handle push: panic: %v", v)
		}
	}()
	if err := h.Handle(ctx, app, p); err != nil {
		return fmt.Errorf("handle push: %w", err)
	}
	return nil
}

// pushStatus maps a refusal to its HTTP status; see PushHandler.
func pushStatus(err error) int {
	switch {
	case errors.Is(err, ErrPushNotConfigured):
		return http.StatusInternalServerError
	case errors.Is(err, ErrBadSignature):
		return http.StatusUnauthorized
	case errors.Is(err, ErrStaleTimestamp), errors.Is(err, ErrDecrypt),
		errors.Is(err, ErrAppIDMismatch), errors.Is(err, ErrReplayedSignature):
		return http.StatusForbidden
	case errors.Is(err, ErrMalformedPush):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func refuse(w http.ResponseWriter, log *slog.Logger, status int, err error) {
	level := slog.LevelWarn
	if status >= 500 {
		level = slog.LevelError
	}
	log.Log(context.Background(), level, "push refused", "status", status, "err", err)
	http.Error(w, http.StatusText(status), status)
}

func (h *PushHandler) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (h *PushHandler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *PushHandler) maxSkew() time.Duration {
	if h.MaxSkew > 0 {
		return h.MaxSkew
	}
	return DefaultPushMaxSkew
}

// dueWarning reports whether app is due a warning about plaintext pushes,
// and if so marks it warned.
func (h *PushHandler) dueWarning(app string) bool {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if last, ok := h.warned[app]; ok && now.Sub(last) < plaintextWarnEvery {
		return false
	}
	if h.warned == nil {
		h.warned = map[string]time.Time{}
	}
	h.warned[app] = now
	return true
}

func (h *PushHandler) memory() *pushMemory {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen == nil {
		// Twice the skew covers every moment a captured request's timestamp
		// stays acceptable; the extra minute absorbs WeChat's clock.
		h.seen = newPushMemory(2*h.maxSkew()+time.Minute, defaultPushMemoryEntries)
	}
	return h.seen
}
