package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

//go:embed web
var webFS embed.FS

// Config configures a Console.
type Config struct {
	// Token is the admin token (WXBRIDGE_ADMIN_TOKEN). Empty turns the
	// console off: every page answers 403, as the /v1/ admin API does.
	Token string
	Store Store
	Rules *Rules
	Model *Model
	// InFlight reports this bridge's work under way (see GaugesOf);
	// optional.
	InFlight func() InFlight
	// JetStream, optional, lets the overview show the event consumer's
	// backlog and the dry run pick the latest event of a type from the
	// event stream.
	JetStream jetstream.JetStream
	// EventStream (default EVENTS), Consumer (default wxbridge) and
	// EventPrefix (default "events.") are the bridge's names for them.
	EventStream, Consumer, EventPrefix string
	// SessionTTL is how long a login lasts. Default 12 h.
	SessionTTL time.Duration
	// SecureCookies marks the session cookie Secure even on plain HTTP
	// requests, for a console behind a proxy that terminates TLS. Requests
	// that come over TLS always get a Secure cookie.
	SecureCookies bool
	// TrustedOrigins are origins besides the console's own that may POST
	// to it ("https://ops.example.com"), for a proxy that rewrites Host.
	TrustedOrigins []string
	// Secrets, optional, are more values to scrub from every response
	// (access tokens, say); the admin token and the apps' appsecrets,
	// push tokens and AES keys are always scrubbed.
	Secrets func() []string
	// Location is the zone times are shown in. Default time.Local.
	Location *time.Location
	Logger   *slog.Logger
	Now      func() time.Time
}

// Console serves the operator console under /console/.
type Console struct {
	cfg      Config
	handler  http.Handler
	sessions *sessions
	pages    map[string]*template.Template
	// logins bounds wrong tokens tried: a token cannot be guessed at
	// network speed.
	logins *rate.Limiter
}

// Pages, each a template in web/ executed inside layout.html.
var pageFiles = []string{"login", "overview", "person", "event", "rules", "live", "subscriptions", "error"}

// New returns a Console. With no Token it refuses every request.
func New(cfg Config) (*Console, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.EventStream == "" {
		cfg.EventStream = "EVENTS"
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "wxbridge"
	}
	if cfg.EventPrefix == "" {
		cfg.EventPrefix = "events."
	}
	c := &Console{cfg: cfg, logins: rate.NewLimiter(rate.Limit(2), 10)}
	if cfg.Token == "" {
		c.handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the console is off: set WXBRIDGE_ADMIN_TOKEN", http.StatusForbidden)
		})
		return c, nil
	}
	if cfg.Store == nil || cfg.Model == nil || cfg.Rules == nil {
		return nil, errors.New("console: Store, Model and Rules are required")
	}
	c.sessions = newSessions(cfg.Token, cfg.SessionTTL, cfg.Now)
	if err := c.parsePages(); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(webFS, "web/static")
	mux := http.NewServeMux()
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /console/login", c.loginPage)
	mux.HandleFunc("POST /console/login", c.login)
	mux.Handle("POST /console/logout", c.authed(c.logout))
	mux.Handle("GET /console/{$}", c.authed(c.overview))
	mux.Handle("GET /console/person", c.authed(c.person))
	mux.Handle("GET /console/event", c.authed(c.event))
	mux.Handle("GET /console/rules", c.authed(c.rulesPage))
	mux.Handle("POST /console/rules", c.authed(c.dryRunPage))
	mux.Handle("GET /console/live", c.authed(c.live))
	mux.Handle("GET /console/live/events", c.authed(c.liveEvents))
	mux.Handle("GET /console/subscriptions", c.authed(c.subscriptions))
	mux.Handle("/console/", c.authed(func(w http.ResponseWriter, r *http.Request, _ session) {
		c.fail(w, r, http.StatusNotFound, "No such page.")
	}))
	cop := http.NewCrossOriginProtection()
	for _, o := range cfg.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return nil, err
		}
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusForbidden, "Refused: this form was not sent from the console's own pages.")
	}))
	c.handler = cop.Handler(mux)
	return c, nil
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Nothing is loaded from elsewhere, nothing runs inline, no page may
	// be framed, and no page is cached.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	if !strings.HasPrefix(r.URL.Path, "/console/static/") {
		h.Set("Cache-Control", "no-store")
	}
	c.handler.ServeHTTP(w, r)
}

// authed runs h for requests with a valid session and sends the others to
// the login form, which brings them back.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss, ok := c.sessions.fromRequest(r)
		if !ok {
			next := r.URL.Path
			if r.Method == http.MethodGet && r.URL.RawQuery != "" {
				next += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, "/console/login?next="+url.QueryEscape(next), http.StatusSeeOther)
			return
		}
		h(w, r, ss)
	})
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.sessions.fromRequest(r); ok {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", page{Title: "Log in", Data: loginView{Next: safeNext(r.URL.Query().Get("next"))}})
}

type loginView struct {
	Next  string
	Error string
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostFormValue("next"))
	// Only wrong tokens use up the allowance, but once it is used up no
	// token is compared: a guess must not learn anything by its answer.
	if c.logins.Tokens() < 1 {
		c.render(w, r, http.StatusTooManyRequests, "login", page{Title: "Log in",
			Data: loginView{Next: next, Error: "Too many attempts. Wait a minute and try again."}})
		return
	}
	if !checkToken(r.PostFormValue("token"), c.cfg.Token) {
		c.logins.Allow()
		c.cfg.Logger.Warn("console login refused", "remote", r.RemoteAddr)
		c.render(w, r, http.StatusUnauthorized, "login", page{Title: "Log in",
			Data: loginView{Next: next, Error: "Wrong token."}})
		return
	}
	value, exp := c.sessions.issue()
	http.SetCookie(w, c.sessions.cookie(value, exp, c.secure(r)))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, ss session) {
	c.sessions.revoke(ss)
	http.SetCookie(w, c.sessions.cookie("", time.Time{}, c.secure(r)))
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

func (c *Console) secure(r *http.Request) bool { return r.TLS != nil || c.cfg.SecureCookies }

// safeNext keeps a post-login redirect inside the console.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/console/") ||
		strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/console/"
	}
	return u.RequestURI()
}

// page is what layout.html renders around a page's content.
type page struct {
	Title  string
	Active string // the nav entry to highlight
	Data   any
}

// render executes a page into a buffer, scrubs it of secrets, and sends it.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.cfg.Logger.Error("console page", "page", name, "err", err)
		http.Error(w, "the page could not be drawn; see the log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(c.redact(buf.Bytes()))
}

// fail answers with a page that says what went wrong.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error", page{Title: http.StatusText(status), Data: msg})
}

// minSecret is the shortest value scrubbed: shorter ones would mangle
// ordinary words, and no real secret is that short.
const minSecret = 8

// Redacted replaces a secret that reached a response.
const Redacted = "[redacted]"

// redact replaces every known secret in out. Nothing the console renders
// should hold one; this is the last line of defence.
func (c *Console) redact(out []byte) []byte {
	var pairs []string
	add := func(s string) {
		if len(s) < minSecret {
			return
		}
		pairs = append(pairs, s, Redacted)
		if e := template.HTMLEscapeString(s); e != s {
			pairs = append(pairs, e, Redacted)
		}
	}
	add(c.cfg.Token)
	if set := c.cfg.Rules.State().Set; set != nil {
		for _, a := range set.Apps {
			add(a.Secret)
			add(a.PushToken)
			add(a.AESKey)
		}
	}
	if c.cfg.Secrets != nil {
		for _, s := range c.cfg.Secrets() {
			add(s)
		}
	}
	if len(pairs) == 0 {
		return out
	}
	return []byte(strings.NewReplacer(pairs...).Replace(string(out)))
}

// backlog is the event consumer's state, shared by all bridges.
type backlog struct {
	Pending     uint64 // events in the stream not yet delivered
	AckPending  int    // delivered, not yet done
	Redelivered int
	Err         string
}

func (c *Console) backlog(ctx context.Context) *backlog {
	if c.cfg.JetStream == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cons, err := c.cfg.JetStream.Consumer(ctx, c.cfg.EventStream, c.cfg.Consumer)
	if err != nil {
		return &backlog{Err: err.Error()}
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return &backlog{Err: err.Error()}
	}
	return &backlog{Pending: info.NumPending, AckPending: info.NumAckPending, Redelivered: info.NumRedelivered}
}
