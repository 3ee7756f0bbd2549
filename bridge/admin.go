package bridge

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/wxbridge/wxbridge/storage"
)

// UserState is what GET /v1/users/{id} returns.
type UserState struct {
	UserID   string         `json:"user_id"`
	Bindings []BindingState `json:"bindings"`
	Roles    []storage.Role `json:"roles"`
}

// BindingState is one app binding of a user with its subscriptions.
type BindingState struct {
	storage.Binding
	Subscriptions []SubscriptionState `json:"subscriptions"`
}

// SubscriptionState is one template's ledger entry as the admin API shows it.
type SubscriptionState struct {
	TemplateID string `json:"template_id"`
	Template   string `json:"template,omitempty"` // its name in the rules
	Status     string `json:"status"`
	Kind       string `json:"kind"`
	Credits    int    `json:"credits"`
	Source     string `json:"source"`
	UpdatedAt  string `json:"updated_at"`
}

// EventState is what GET /v1/events/{id} returns.
type EventState struct {
	EventID string   `json:"event_id"`
	Done    bool     `json:"done"`
	Results []Result `json:"results"`
}

// RoleState is what GET /v1/roles/{role}?scope= returns.
type RoleState struct {
	Role    string              `json:"role"`
	Scope   string              `json:"scope"`
	Members []storage.RoleGrant `json:"members"`
}

// AdminHandler serves the read-only admin API under /v1/. Every request
// needs "Authorization: Bearer <token>"; with no token configured the API
// is off and refuses everything. Nothing it returns is a secret: no
// appsecret, access token, session key or AES key is ever stored with
// what it reads.
func (b *Bridge) AdminHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/users/{id}", b.adminUser)
	mux.HandleFunc("GET /v1/events/{id}", b.adminEvent)
	mux.HandleFunc("GET /v1/roles/{role}", b.adminRole)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			writeError(w, http.StatusForbidden, "the admin API is off: set WXBRIDGE_ADMIN_TOKEN")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wxbridge"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (b *Bridge) adminUser(w http.ResponseWriter, r *http.Request) {
	st := b.cfg.Store
	id := r.PathValue("id")
	bindings, err := st.Bindings(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	grants, err := st.UserRoles(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := UserState{UserID: id, Bindings: []BindingState{}, Roles: []storage.Role{}}
	names := map[string]string{}
	for name, t := range b.rules.Load().Templates {
		names[t.App+"\x00"+t.ID] = name
	}
	for _, bd := range bindings {
		subs, err := st.Subscriptions(r.Context(), bd.App, bd.OpenID)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		bs := BindingState{Binding: bd, Subscriptions: []SubscriptionState{}}
		for _, s := range subs {
			bs.Subscriptions = append(bs.Subscriptions, SubscriptionState{TemplateID: s.TemplateID, Template: names[bd.App+"\x00"+s.TemplateID],
				Status: s.Status, Kind: s.Kind, Credits: s.Credits, Source: s.Source, UpdatedAt: s.UpdatedAt.Format("2006-01-02T15:04:05Z07:00")})
		}
		out.Bindings = append(out.Bindings, bs)
	}
	for _, g := range grants {
		out.Roles = append(out.Roles, g.Role)
	}
	writeJSON(w, out)
}

func (b *Bridge) adminEvent(w http.ResponseWriter, r *http.Request) {
	st := b.cfg.Store
	id := r.PathValue("id")
	if src := r.URL.Query().Get("source"); src != "" {
		// A CloudEvent is known by its source and id.
		id = src + keySep + id
	}
	recs, err := st.EventSends(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	_, done, err := st.EventDone(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := EventState{EventID: id, Done: done, Results: []Result{}}
	for _, rec := range recs {
		res := resultOf(rec)
		if !storage.Final(rec.State) {
			res.Status = rec.State // pending, retry or deferred: not an outcome yet
		}
		out.Results = append(out.Results, res)
	}
	if len(recs) == 0 && !done {
		src, eid := splitEventKey(id)
		what := "event " + eid
		if src != "" {
			what += " from " + src
		}
		writeError(w, http.StatusNotFound, "no record of "+what+" (never seen, matched no rule, or expired; a CloudEvent needs ?source=)")
		return
	}
	writeJSON(w, out)
}

func (b *Bridge) adminRole(w http.ResponseWriter, r *http.Request) {
	st := b.cfg.Store
	role, scope := r.PathValue("role"), r.URL.Query().Get("scope")
	members, err := st.RoleMembers(r.Context(), role, scope)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if members == nil {
		members = []storage.RoleGrant{}
	}
	writeJSON(w, RoleState{Role: role, Scope: scope, Members: members})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
