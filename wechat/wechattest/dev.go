package wechattest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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
GET  /_dev/faults, POST /_dev/faults {"latency":"50ms","system_error_rate":0.1,...}

appid may be left out when the emulator has exactly one app.
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
	Paths                []string `json:"paths,omitempty"`
	Seed                 int64    `json:"seed,omitempty"`
}

func (d devFaults) faults() (Faults, error) {
	f := Faults{SystemErrorRate: d.SystemErrorRate, HTTP500Rate: d.HTTP500Rate, DropRate: d.DropRate,
		LostReplyRate: d.LostReplyRate, TimeoutRate: d.TimeoutRate, QuotaExhausted: d.QuotaExhausted,
		InvalidateTokenEvery: d.InvalidateTokenEvery, Paths: d.Paths, Seed: d.Seed}
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
		Paths: f.Paths, Seed: f.Seed}
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
		ids := e.AppIDs()
		if len(ids) != 1 {
			return nil, devErrorf(http.StatusBadRequest, "appid is required: the emulator has %d apps %v", len(ids), ids)
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
