package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
)

// BindRequest is the body of wxbridge.cmd.bind.
type BindRequest struct {
	App     string `json:"app"`
	UserID  string `json:"user_id"`
	OpenID  string `json:"openid,omitempty"`
	UnionID string `json:"unionid,omitempty"`
	Code    string `json:"code,omitempty"`
}

// BindReply answers wxbridge.cmd.bind (and unbind).
type BindReply struct {
	OpenID string `json:"openid,omitempty"`
	// MovedFrom is the user the openid was bound to before, if another.
	MovedFrom string `json:"moved_from,omitempty"`
	Unbound   bool   `json:"unbound,omitempty"`
	Error     string `json:"error,omitempty"`
}

// RolesRequest is the body of wxbridge.cmd.roles.
type RolesRequest struct {
	UserID string         `json:"user_id"`
	Grant  []storage.Role `json:"grant,omitempty"`
	Revoke []storage.Role `json:"revoke,omitempty"`
}

// SubscriptionsRequest is the body of wxbridge.cmd.subscriptions: what
// wx.requestSubscribeMessage returned on the client.
type SubscriptionsRequest struct {
	App     string            `json:"app"`
	UserID  string            `json:"user_id,omitempty"`
	OpenID  string            `json:"openid,omitempty"`
	Results map[string]string `json:"results"`
	// At is when the user answered; default: when wxbridge got the report.
	At time.Time `json:"at,omitzero"`
}

// SubscriptionsReply answers wxbridge.cmd.subscriptions.
type SubscriptionsReply struct {
	Subscriptions []SubscriptionChange `json:"subscriptions,omitempty"`
	// Ignored lists templates whose result changes nothing (filter, unknown).
	Ignored map[string]string `json:"ignored,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// OKReply answers commands that return nothing else.
type OKReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// serveCommands subscribes to the command subjects. Several bridges share
// them through a queue group. The returned function stops taking commands
// and waits for the ones being handled.
func (b *Bridge) serveCommands() (stop func(), err error) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var subs []*nats.Subscription
	handle := func(subject string, fn func(ctx context.Context, data []byte) any) error {
		sub, err := b.cfg.Conn.QueueSubscribe(b.subject("cmd."+subject), b.cfg.Consumer, func(m *nats.Msg) {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				reply := fn(ctx, m.Data)
				if m.Reply == "" {
					return
				}
				data, _ := json.Marshal(reply)
				if err := m.Respond(data); err != nil {
					b.log.Warn("reply to command", "subject", m.Subject, "err", err)
				}
			}()
		})
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		subs = append(subs, sub)
		return nil
	}
	stop = func() {
		// Drain: commands already delivered to this process are handled
		// (their callbacks registered in wg) before the wait, and none
		// arrives after it.
		for _, s := range subs {
			_ = s.Drain()
		}
		deadline := time.Now().Add(5 * time.Second)
		for _, s := range subs {
			for s.IsValid() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		wg.Wait()
	}
	for _, c := range []struct {
		subject string
		fn      func(context.Context, []byte) any
	}{
		{"bind", b.cmdBind},
		{"unbind", b.cmdUnbind},
		{"roles", b.cmdRoles},
		{"subscriptions", b.cmdSubscriptions},
	} {
		if err := handle(c.subject, c.fn); err != nil {
			stop()
			return nil, err
		}
	}
	// Make sure the server has the subscriptions before we say we are ready.
	if err := b.cfg.Conn.Flush(); err != nil {
		stop()
		return nil, fmt.Errorf("subscribe commands: %w", err)
	}
	return stop, nil
}

func (b *Bridge) cmdBind(ctx context.Context, data []byte) any {
	var req BindRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return BindReply{Error: "bind: body is not a JSON object: " + err.Error()}
	}
	if err := b.knownApp(req.App); err != nil {
		return BindReply{Error: "bind: " + err.Error()}
	}
	if req.UserID == "" {
		return BindReply{Error: "bind: user_id is required"}
	}
	if err := checkFields(field{"user_id", req.UserID, MaxUserIDBytes}, field{"openid", req.OpenID, MaxOpenIDBytes},
		field{"unionid", req.UnionID, MaxOpenIDBytes}, field{"code", req.Code, maxCodeBytes}); err != nil {
		return BindReply{Error: "bind: " + err.Error()}
	}
	switch {
	case req.Code != "" && req.OpenID != "":
		return BindReply{Error: "bind: give a code or an openid, not both"}
	case req.OpenID != "" && b.bindsByCodeOnly(req.App):
		// A bare openid proves only that the sender may publish here; a
		// code proves the user holds the account.
		b.log.Warn("openid bind refused: the app binds by login code only", "app", req.App, "user", req.UserID)
		return BindReply{Error: fmt.Sprintf("bind %s: app %s binds by login code only (bind: code in the rules): "+
			"send the code from wx.login instead of an openid; to import openids (wxbridge import bindings), "+
			"set bind: any for the app during the import", req.UserID, req.App)}
	case req.Code != "":
		sess, err := b.cfg.WeChat.Code2Session(ctx, req.App, req.Code)
		if err != nil {
			return BindReply{Error: "bind " + req.UserID + ": " + loginProblem(err)}
		}
		req.OpenID, req.UnionID = sess.OpenID, sess.UnionID
	case req.OpenID == "":
		return BindReply{Error: "bind: a code (from wx.login) or an openid is required"}
	}
	moved, err := b.cfg.Store.Bind(ctx, storage.Binding{App: req.App, UserID: req.UserID, OpenID: req.OpenID, UnionID: req.UnionID})
	if err != nil {
		return BindReply{Error: err.Error()}
	}
	reply := BindReply{OpenID: req.OpenID}
	if moved != nil {
		reply.MovedFrom = moved.UserID
		b.log.Info("openid re-bound to another user", "app", req.App, "from_user", moved.UserID, "to_user", req.UserID)
	}
	return reply
}

// loginProblem explains a code2session failure to whoever sent the code.
func loginProblem(err error) string {
	var api *wechat.APIError
	if errors.As(err, &api) {
		switch api.Code {
		case 40029, 40163:
			return fmt.Sprintf("WeChat refused the login code (%d): it is wrong, used already or older than five minutes; call wx.login again", api.Code)
		case 40226:
			return "WeChat blocked this login (40226): the user is rated high-risk"
		case 45011:
			return "too many logins for this user (45011): WeChat allows about 100 a minute; try again in a minute"
		case -1:
			return "WeChat is busy (-1); try again"
		}
	}
	return err.Error()
}

func (b *Bridge) cmdUnbind(ctx context.Context, data []byte) any {
	var req BindRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return BindReply{Error: "unbind: body is not a JSON object: " + err.Error()}
	}
	if req.App == "" || req.UserID == "" {
		return BindReply{Error: "unbind: app and user_id are required"}
	}
	if err := checkFields(field{"user_id", req.UserID, MaxUserIDBytes}); err != nil {
		return BindReply{Error: "unbind: " + err.Error()}
	}
	found, err := b.cfg.Store.Unbind(ctx, req.App, req.UserID)
	if err != nil {
		return BindReply{Error: err.Error()}
	}
	return BindReply{Unbound: found}
}

func (b *Bridge) cmdRoles(ctx context.Context, data []byte) any {
	var req RolesRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return OKReply{Error: "roles: body is not a JSON object: " + err.Error()}
	}
	if n := len(req.Grant) + len(req.Revoke); n > maxRoleChanges {
		return OKReply{Error: fmt.Sprintf("roles: %d grants and revokes, over the %d a command may carry", n, maxRoleChanges)}
	}
	fields := []field{{"user_id", req.UserID, MaxUserIDBytes}}
	for _, r := range append(append([]storage.Role(nil), req.Grant...), req.Revoke...) {
		fields = append(fields, field{"role", r.Role, MaxRoleBytes}, field{"scope", r.Scope, MaxRoleBytes})
	}
	if err := checkFields(fields...); err != nil {
		return OKReply{Error: "roles: " + err.Error()}
	}
	if err := b.cfg.Store.UpdateRoles(ctx, req.UserID, req.Grant, req.Revoke); err != nil {
		return OKReply{Error: err.Error()}
	}
	return OKReply{OK: true}
}

// clientStatus maps what wx.requestSubscribeMessage returns to a ledger
// status. filter (a template with the same title as another) changes
// nothing.
func clientStatus(s string) (string, bool) {
	switch s {
	case "accept", "acceptWithAlert", "acceptWithAudio", "acceptWithForcePush":
		return storage.StatusAccept, true
	case "reject":
		return storage.StatusReject, true
	case "ban":
		return storage.StatusBan, true
	}
	return "", false
}

func (b *Bridge) cmdSubscriptions(ctx context.Context, data []byte) any {
	var req SubscriptionsRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return SubscriptionsReply{Error: "subscriptions: body is not a JSON object: " + err.Error()}
	}
	if err := b.knownApp(req.App); err != nil {
		return SubscriptionsReply{Error: "subscriptions: " + err.Error()}
	}
	if len(req.Results) > maxSubscriptionResults {
		return SubscriptionsReply{Error: fmt.Sprintf("subscriptions: %d results, over the %d a report may carry", len(req.Results), maxSubscriptionResults)}
	}
	fields := []field{{"user_id", req.UserID, MaxUserIDBytes}, {"openid", req.OpenID, MaxOpenIDBytes}}
	for id, v := range req.Results {
		fields = append(fields, field{"template id", id, maxTemplateIDBytes}, field{"result", v, 64})
	}
	if err := checkFields(fields...); err != nil {
		return SubscriptionsReply{Error: "subscriptions: " + err.Error()}
	}
	openid := req.OpenID
	if openid == "" {
		if req.UserID == "" {
			return SubscriptionsReply{Error: "subscriptions: user_id or openid is required"}
		}
		bnd, ok, err := b.cfg.Store.Binding(ctx, req.App, req.UserID)
		if err != nil {
			return SubscriptionsReply{Error: err.Error()}
		}
		if !ok {
			return SubscriptionsReply{Error: fmt.Sprintf("subscriptions: user %s is not bound in app %s", req.UserID, req.App)}
		}
		openid = bnd.OpenID
	}
	at := req.At
	if at.IsZero() {
		at = b.cfg.Now()
	}
	reply := SubscriptionsReply{}
	ids := make([]string, 0, len(req.Results))
	for id := range req.Results {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		status, ok := clientStatus(req.Results[id])
		if !ok {
			if reply.Ignored == nil {
				reply.Ignored = map[string]string{}
			}
			reply.Ignored[id] = req.Results[id]
			continue
		}
		sub, err := b.cfg.Store.ApplySubscription(ctx, storage.SubscriptionChange{App: req.App, OpenID: openid, TemplateID: id,
			Status: status, Kind: b.templateKind(req.App, id), Source: storage.SourceClient, At: at})
		if err != nil {
			return SubscriptionsReply{Error: err.Error()}
		}
		reply.Subscriptions = append(reply.Subscriptions, subscriptionChange(sub))
	}
	return reply
}

// bindsByCodeOnly reports whether the rules refuse openid binds for app.
func (b *Bridge) bindsByCodeOnly(app string) bool {
	a, ok := b.rules.Load().Apps[app]
	return ok && a.Bind == rules.BindCode
}

func (b *Bridge) knownApp(app string) error {
	if app == "" {
		return errors.New("app is required")
	}
	if _, ok := b.rules.Load().Apps[app]; !ok {
		return fmt.Errorf("app %q is not in the rules", clip(app))
	}
	return nil
}

// templateKind is the kind the rules give a template id in app; one_time
// when the rules do not know it.
func (b *Bridge) templateKind(app, templateID string) string {
	for _, t := range b.rules.Load().Templates {
		if t.App == app && t.ID == templateID {
			return t.Kind
		}
	}
	return rules.KindOneTime
}
