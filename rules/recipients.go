package rules

import (
	"fmt"
	"strings"
)

// Recipient is one recipient spec after rendering: a user id, a role
// within a scope (the bridge looks up its members), or an openid. At most
// one of UserID, Role and OpenID is set; Scope goes with Role and may be
// empty for a role that has no scope. Field names the spec ("to[1].users").
//
// A spec that named nobody for an event (users: "{{ .data.watchers }}"
// with no watchers) is a Recipient with only Field set: the event still
// owes its audience a word about it (see Nobody).
type Recipient struct {
	UserID string
	Role   string
	Scope  string
	OpenID string
	Field  string
}

// Nobody reports a spec that rendered no recipient for the event.
func (r Recipient) Nobody() bool { return r.UserID == "" && r.Role == "" && r.OpenID == "" }

// String is the spec as `rules render` shows it: "user u-17",
// "role reconciler in buyer:42", "openid o-abc".
func (r Recipient) String() string {
	switch {
	case r.UserID != "":
		return "user " + r.UserID
	case r.OpenID != "":
		return "openid " + r.OpenID
	case r.Role == "":
		return "nobody (" + r.Field + " rendered no one)"
	case r.Scope != "":
		return "role " + r.Role + " in " + r.Scope
	default:
		return "role " + r.Role
	}
}

type recipientSpec struct {
	field                     string // "to[1]", for errors
	user, role, scope, openid *text
}

// Recipients renders the rule's recipient specs for ev. A field that
// prints a list (users: "{{ .data.watcher_ids }}", "{{ list .data.a
// .data.b }}") yields one recipient per item; empty ids are dropped and
// duplicates removed, in the order the specs list them.
//
// A placeholder that is empty inside other text ("buyer:{{ .data.buyer_id
// }}" without a buyer_id) is an error rather than a lookup of the wrong
// scope, and so is a scope that renders empty: a role without its scope is
// a different, wider set of people.
func (r *Rule) Recipients(ev *Event) ([]Recipient, error) {
	vars := ev.vars()
	var out []Recipient
	seen := map[Recipient]bool{}
	add := func(rc Recipient) {
		id := rc
		id.Field = ""
		if !seen[id] {
			seen[id] = true
			out = append(out, rc)
		}
	}
	for _, spec := range r.to {
		named := 0 // ids the spec rendered, before removing repeats
		field := spec.field
		switch {
		case spec.user != nil:
			field += ".user"
			ids, err := r.items(spec.user, vars, field)
			if err != nil {
				return nil, err
			}
			named = len(ids)
			for _, id := range ids {
				add(Recipient{UserID: id, Field: field})
			}
		case spec.openid != nil:
			field += ".openid"
			ids, err := r.items(spec.openid, vars, field)
			if err != nil {
				return nil, err
			}
			named = len(ids)
			for _, id := range ids {
				add(Recipient{OpenID: id, Field: field})
			}
		case spec.role != nil:
			field += ".role"
			roles, err := r.items(spec.role, vars, field)
			if err != nil {
				return nil, err
			}
			scopes := []string{""}
			if spec.scope != nil {
				if scopes, err = r.items(spec.scope, vars, spec.field+".scope"); err != nil {
					return nil, err
				}
				if len(scopes) == 0 && len(roles) > 0 {
					return nil, &DataError{Rule: r.Name, Keyword: spec.field + ".scope", Reason: "empty: the scope rendered nothing for this event"}
				}
			}
			named = len(roles) * len(scopes)
			for _, role := range roles {
				for _, scope := range scopes {
					add(Recipient{Role: role, Scope: scope, Field: field})
				}
			}
		}
		if named == 0 {
			out = append(out, Recipient{Field: field})
		}
	}
	return out, nil
}

func (r *Rule) items(x *text, vars map[string]any, field string) ([]string, error) {
	s, err := x.exec(vars)
	if err != nil {
		return nil, &DataError{Rule: r.Name, Keyword: field, Reason: err.Error(), Err: err}
	}
	var out []string
	for _, it := range strings.Split(s, listSep) {
		if strings.Trim(it, emptyMarker+" \t\r\n") == "" {
			continue
		}
		if strings.Contains(it, emptyMarker) {
			shown := strings.ReplaceAll(it, emptyMarker, "{{…}}")
			return nil, &DataError{Rule: r.Name, Keyword: field, Reason: fmt.Sprintf("%s: a placeholder rendered nothing for this event", quote(shown))}
		}
		if it = clean(it); it != "" {
			out = append(out, it)
		}
	}
	return out, nil
}
