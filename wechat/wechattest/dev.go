package wechattest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

const devIndex = `WeChat emulator: endpoints for people (see the wechattest package doc)

GET  /_dev/sends[?appid=&openid=&template_id=]    accepted sends
GET  /_dev/pushes                                 finished callback pushes
GET  /_dev/calls                                  requests per path
GET  /_dev/subscriptions?appid=&openid=           a user's subscription state
POST /_dev/subscribe   {"appid","openid","results":{"TEMPLATE_ID":"accept"}}
POST /_dev/unsubscribe {"appid","openid","template_id"}
POST /_dev/code        {"appid","openid","unionid"}  -> {"code"}
POST /_dev/invalidate  {"appid"}                  invalidate the app's tokens
GET  /_dev/errors                                 error answers by errcode
GET  /_dev/faults, POST /_dev/faults {"latency":"50ms","system_error_rate":0.1,...}

Official accounts (appid: the account's):
POST /_dev/person      {"unionid","openids":{"APPID":"OPENID"}}  one person, an openid per app
POST /_dev/follow      {"appid","openid","scene","unionid"}  follow (scene: through a QR code; unionid: the person's, for user/info); pushes subscribe
POST /_dev/unfollow    {"appid","openid"}          pushes unsubscribe
POST /_dev/block       {"appid","openid"}          refuse the account's messages (failed:user block)
POST /_dev/unblock     {"appid","openid"}
GET  /_dev/followers?appid=                       the account's users and whether they follow

appid may be left out when the emulator has one app, or one Mini Program
(one official account for the official account endpoints).
`

// devFaults is Faults as JSON, with durations written like "50ms".
type devFaults struct {
	Latency              string   `json:"latency,omitempty"`
	Jitter               string   `json:"jitter,omitempty"`
	SystemErrorRate      float64  `json:"system_error_rate,omitempty"`
	HTTP500Rate          float64  `json:"http500_rate,omitempty"`
	DropRate             float64  `json:"drop_rate,omitempty"`
	LostReplyRate        float64  `json:"lost_reply_rate,omitempty"`
	TimeoutRate          float64  `json:"timeout_rate,omitempty"`
	HangFor              string   `json:"hang_for,omitempty"`
	QuotaExhausted       bool     `json:"quota_exhausted,omitempty"`
	InvalidateTokenEvery int      `json:"invalidate_token_every,omitempty"`
	TemplateJobFailRate  float64  `json:"template_job_fail_rate,omitempty"`
	Paths                []string `json:"paths,omitempty"`
	Seed                 int64    `json:"seed,omitempty"`
}

func (d devFaults) faults() (Faults, error) {
	f := Faults{SystemErrorRate: d.SystemErrorRate, HTTP500Rate: d.HTTP500Rate, DropRate: d.DropRate,
		LostReplyRate: d.LostReplyRate, TimeoutRate: d.TimeoutRate, QuotaExhausted: d.QuotaExhausted,
		InvalidateTokenEvery: d.InvalidateTokenEvery, TemplateJobFailRate: d.TemplateJobFailRate, Paths: d.Paths, Seed: d.Seed}
	for _, x := range []struct {
		name string
		s    string
		d    *time.Duration
	}{{"latency", d.Latency, &f.Latency}, {"jitter", d.Jitter, &f.Jitter}, {"hang_for", d.HangFor, &f.HangFor}} {
		if x.s == "" {
			continue
		}
		v, err := time.ParseDuration(x.s)
		if err != nil {
			return Faults{}, fmt.Errorf("%s: %w", x.name, err)
		}
		*x.d = v
	}
	return f, nil
}

func toDevFaults(f Faults) devFaults {
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	return devFaults{Latency: dur(f.Latency), Jitter: dur(f.Jitter), SystemErrorRate: f.SystemErrorRate,
		HTTP500Rate: f.HTTP500Rate, DropRate: f.DropRate, LostReplyRate: f.LostReplyRate, TimeoutRate: f.TimeoutRate,
		HangFor: dur(f.HangFor), QuotaExhausted: f.QuotaExhausted, InvalidateTokenEvery: f.InvalidateTokenEvery,
		TemplateJobFailRate: f.TemplateJobFailRate, Paths: f.Paths, Seed: f.Seed}
}

type devError struct {
	status int
	msg    string
}

func (d *devError) Error() string { return d.msg }

func devErrorf(status int, format string, args ...any) error {
	return &devError{status, fmt.Sprintf(format, args...)}
}

func (e *Emulator) serveDev(w http.ResponseWriter, r *http.Request) {
	out, err := e.dev(r)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if err != nil {
		status := http.StatusBadRequest
		var de *devError
		if errors.As(err, &de) {
			status = de.status
		}
		w.WriteHeader(status)
		_, _ = w.Write(marshalJSON(map[string]string{"error": err.Error()}))
		return
	}
	if s, ok := out.(string); ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, s)
		return
	}
	_, _ = w.Write(marshalJSON(out))
}

func (e *Emulator) dev(r *http.Request) (any, error) {
	name := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/_dev"), "/")
	get, post := r.Method == http.MethodGet, r.Method == http.MethodPost
	q := r.URL.Query()
	var body struct {
		AppID      string            `json:"appid"`
		OpenID     string            `json:"openid"`
		UnionID    string            `json:"unionid"`
		TemplateID string            `json:"template_id"`
		Results    map[string]string `json:"results"`
		Scene      string            `json:"scene"`
		OpenIDs    map[string]string `json:"openids"`
	}
	if post && name != "faults" {
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
			return nil, devErrorf(http.StatusBadRequest, "body: %v", err)
		}
	}
	switch {
	case name == "" && get:
		return devIndex, nil
	case name == "sends" && get:
		out := []Sent{}
		for _, s := range e.Sends() {
			if matches(q.Get("appid"), s.AppID) && matches(q.Get("openid"), s.ToUser) && matches(q.Get("template_id"), s.TemplateID) {
				out = append(out, s)
			}
		}
		return out, nil
	case name == "pushes" && get:
		return append([]Push{}, e.Pushes()...), nil
	case name == "calls" && get:
		return e.Calls(), nil
	case name == "subscriptions" && get:
		a, err := e.devApp(q.Get("appid"))
		if err != nil {
			return nil, err
		}
		if q.Get("openid") == "" {
			return nil, devErrorf(http.StatusBadRequest, "openid is required")
		}
		return append([]Subscription{}, e.Subscriptions(a.appid, q.Get("openid"))...), nil
	case name == "subscribe" && post:
		a, err := e.devApp(body.AppID)
		if err != nil {
			return nil, err
		}
		if body.OpenID == "" {
			return nil, devErrorf(http.StatusBadRequest, "openid is required")
		}
		return e.Subscribe(a.appid, body.OpenID, body.Results), nil
	case name == "unsubscribe" && post:
		a, err := e.devApp(body.AppID)
		if err != nil {
			return nil, err
		}
		if err := a.hasTemplate(body.TemplateID); err != nil || body.OpenID == "" {
			return nil, devErrorf(http.StatusBadRequest, "want an openid and a template_id of app %s", a.appid)
		}
		e.Unsubscribe(a.appid, body.OpenID, body.TemplateID)
		return map[string]bool{"ok": true}, nil
	case name == "code" && post:
		a, err := e.devApp(body.AppID)
		if err != nil {
			return nil, err
		}
		if body.OpenID == "" {
			return nil, devErrorf(http.StatusBadRequest, "openid is required")
		}
		return map[string]string{"code": e.IssueCode(a.appid, body.OpenID, body.UnionID)}, nil
	case name == "invalidate" && post:
		a, err := e.devApp(body.AppID)
		if err != nil {
			return nil, err
		}
		e.InvalidateTokens(a.appid)
		return map[string]bool{"ok": true}, nil
	case name == "errors" && get:
		out := map[string]int{}
		for code, n := range e.Errors() {
			out[itoa(int64(code))] = n
		}
		return out, nil
	case name == "person" && post:
		if body.UnionID == "" || len(body.OpenIDs) == 0 {
			return nil, devErrorf(http.StatusBadRequest, "want a unionid and openids by appid")
		}
		for appid, openid := range body.OpenIDs {
			if e.app(appid) == nil || openid == "" {
				return nil, devErrorf(http.StatusBadRequest, "unknown appid %q or empty openid", appid)
			}
		}
		e.AddPerson(Person{UnionID: body.UnionID, OpenIDs: body.OpenIDs})
		return map[string]bool{"ok": true}, nil
	case (name == "follow" || name == "unfollow" || name == "block" || name == "unblock") && post:
		a, err := e.devOfficial(body.AppID)
		if err != nil {
			return nil, err
		}
		if body.OpenID == "" {
			return nil, devErrorf(http.StatusBadRequest, "openid is required")
		}
		switch name {
		case "follow":
			if body.UnionID != "" {
				e.AddPerson(Person{UnionID: body.UnionID, OpenIDs: map[string]string{a.appid: body.OpenID}})
			}
			e.FollowByQR(a.appid, body.OpenID, body.Scene)
		case "unfollow":
			e.Unfollow(a.appid, body.OpenID)
		default:
			e.RefuseMessages(a.appid, body.OpenID, name == "block")
		}
		return map[string]bool{"ok": true}, nil
	case name == "followers" && get:
		a, err := e.devOfficial(q.Get("appid"))
		if err != nil {
			return nil, err
		}
		return e.Followers(a.appid), nil
	case name == "faults" && get:
		return toDevFaults(e.Faults()), nil
	case name == "faults" && post:
		var d devFaults
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			return nil, devErrorf(http.StatusBadRequest, "faults: %v", err)
		}
		f, err := d.faults()
		if err != nil {
			return nil, devErrorf(http.StatusBadRequest, "faults: %v", err)
		}
		e.SetFaults(f)
		return toDevFaults(e.Faults()), nil
	}
	return nil, devErrorf(http.StatusNotFound, "no %s %s; GET %s lists the endpoints", r.Method, r.URL.Path, DevPrefix)
}

func matches(want, got string) bool { return want == "" || want == got }

// devApp finds the app a dev request names, or the only app when it names
// none.
func (e *Emulator) devApp(appid string) (*app, error) {
	if appid == "" {
		// The one app, or else the one Mini Program: an official account
		// beside it has its own endpoints (devOfficial).
		ids := e.AppIDs()
		if len(ids) > 1 {
			ids = slices.DeleteFunc(ids, func(id string) bool { a := e.app(id); return a == nil || a.isOfficial() })
		}
		if len(ids) != 1 {
			all := e.AppIDs()
			return nil, devErrorf(http.StatusBadRequest, "appid is required: the emulator has %d apps %v", len(all), all)
		}
		appid = ids[0]
	}
	a := e.app(appid)
	if a == nil {
		return nil, devErrorf(http.StatusNotFound, "unknown appid %q", appid)
	}
	return a, nil
}

func (a *app) hasTemplate(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.template(id); !ok {
		return fmt.Errorf("no template %q", id)
	}
	return nil
}

// devOfficial is devApp for the official account endpoints: appid may be
// left out when the emulator has exactly one official account.
func (e *Emulator) devOfficial(appid string) (*app, error) {
	if appid == "" {
		var ids []string
		for _, id := range e.AppIDs() {
			if a := e.app(id); a != nil && a.isOfficial() {
				ids = append(ids, id)
			}
		}
		if len(ids) != 1 {
			return nil, devErrorf(http.StatusBadRequest, "appid is required: the emulator has %d official accounts %v", len(ids), ids)
		}
		appid = ids[0]
	}
	a, err := e.devApp(appid)
	if err != nil {
		return nil, err
	}
	if !a.isOfficial() {
		return nil, devErrorf(http.StatusBadRequest, "%s is a Mini Program, not an official account", appid)
	}
	return a, nil
}

func (a *app) isOfficial() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.official
}
