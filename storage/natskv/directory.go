package natskv

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/wxbridge/wxbridge/storage"
)

// Bind stores b, and its openid and unionid index entries, in one batch:
// the binding and index entries it replaces are removed in the same
// batch, each binding and openid write conditional on the revision it was
// decided on, so that a user's binding and its index entries always agree.
// A unionid index entry is only ever written beside its binding's
// conditional write, which orders them: it needs no revision of its own.
func (s *Store) Bind(ctx context.Context, b storage.Binding) (*storage.Binding, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if b.App == "" || b.UserID == "" || b.OpenID == "" {
		return nil, fmt.Errorf("bind %q in app %q to %q: %w: app, user_id and openid are required", clip(b.UserID), clip(b.App), clip(b.OpenID), storage.ErrInvalid)
	}
	if b.BoundAt.IsZero() {
		b.BoundAt = s.now()
	}
	userSubj, oidSubj := s.n.binding(b.UserID, b.App), s.n.openid(b.App, b.OpenID)
	st := s.newState()
	var moved *storage.Binding
	err := s.update(ctx, st, func() (*writes, error) {
		if err := st.need(ctx, userSubj, oidSubj); err != nil {
			return nil, err
		}
		var cur, prev storage.Binding
		hasUser, err := decodeBinding(st.get(userSubj), &cur)
		if err != nil {
			return nil, err
		}
		owner := ""
		if e := st.get(oidSubj); e.present {
			owner = string(e.val)
		}
		var more []string
		if owner != "" && owner != b.UserID {
			more = append(more, s.n.binding(owner, b.App))
		}
		if hasUser && cur.OpenID != b.OpenID {
			more = append(more, s.n.openid(b.App, cur.OpenID))
		}
		if err := st.need(ctx, more...); err != nil {
			return nil, err
		}
		if owner != "" && owner != b.UserID {
			if _, err := decodeBinding(st.get(s.n.binding(owner, b.App)), &prev); err != nil {
				return nil, err
			}
		}
		d := storage.DecideBind(b, cur, hasUser, owner, prev)
		moved = d.Moved
		w := newWrites("b")
		if d.Moved != nil {
			subj := s.n.binding(d.Moved.UserID, b.App)
			w.del(subj, s.opts.MarkerTTL, true, st.get(subj).rev)
			if d.Moved.UnionID != "" {
				w.del(s.n.bindingUnion(d.Moved.UnionID, b.App, d.Moved.UserID), s.opts.MarkerTTL, false, 0)
			}
		}
		if hasUser && cur.UnionID != "" && cur.UnionID != b.UnionID {
			w.del(s.n.bindingUnion(cur.UnionID, b.App, b.UserID), s.opts.MarkerTTL, false, 0)
		}
		if b.UnionID != "" {
			// Written again on every bind: a binding saved before the index
			// existed gets its entry.
			w.put(s.n.bindingUnion(b.UnionID, b.App, b.UserID), []byte(s.n.key(userSubj)), 0)
		}
		if d.DropOpenID != "" {
			// Only the index entry that still names this user.
			subj := s.n.openid(b.App, d.DropOpenID)
			if e := st.get(subj); e.present && string(e.val) == b.UserID {
				w.del(subj, s.opts.MarkerTTL, true, e.rev)
			}
		}
		w.putAt(userSubj, storage.MarshalRecord(&b), 0, st.get(userSubj).rev)
		w.putAt(oidSubj, []byte(b.UserID), 0, st.get(oidSubj).rev)
		return w, nil
	})
	if err != nil {
		return nil, fmt.Errorf("bind %s in app %s: %w", clip(b.UserID), clip(b.App), err)
	}
	s.openids.set(b.App, b.UserID, b.OpenID)
	if moved != nil {
		s.openids.set(b.App, moved.UserID, "")
	}
	return moved, nil
}

// Unbind removes a user's binding in app and its openid's index entry.
func (s *Store) Unbind(ctx context.Context, app, userID string) (bool, error) {
	if err := s.check(); err != nil {
		return false, err
	}
	userSubj := s.n.binding(userID, app)
	st := s.newState()
	var found bool
	err := s.update(ctx, st, func() (*writes, error) {
		if err := st.need(ctx, userSubj); err != nil {
			return nil, err
		}
		var cur storage.Binding
		var err error
		if found, err = decodeBinding(st.get(userSubj), &cur); err != nil || !found {
			return nil, err
		}
		oidSubj := s.n.openid(app, cur.OpenID)
		if err := st.need(ctx, oidSubj); err != nil {
			return nil, err
		}
		w := newWrites("u")
		w.del(userSubj, s.opts.MarkerTTL, true, st.get(userSubj).rev)
		if e := st.get(oidSubj); e.present && string(e.val) == userID {
			w.del(oidSubj, s.opts.MarkerTTL, true, e.rev)
		}
		if cur.UnionID != "" {
			w.del(s.n.bindingUnion(cur.UnionID, app, userID), s.opts.MarkerTTL, false, 0)
		}
		return w, nil
	})
	if err != nil {
		return false, fmt.Errorf("unbind %s in app %s: %w", clip(userID), clip(app), err)
	}
	s.openids.set(app, userID, "")
	return found, nil
}

// Binding returns a user's binding in app.
func (s *Store) Binding(ctx context.Context, app, userID string) (storage.Binding, bool, error) {
	if err := s.check(); err != nil {
		return storage.Binding{}, false, err
	}
	subj := s.n.binding(userID, app)
	got, err := s.read(ctx, subj)
	if err == nil {
		err = s.confirm(ctx, got, subj)
	}
	if err != nil {
		return storage.Binding{}, false, fmt.Errorf("read binding of %s in app %s: %w", clip(userID), clip(app), err)
	}
	var b storage.Binding
	found, err := decodeBinding(got[subj], &b)
	return b, found, err
}

// UserByOpenID returns the user bound to openid in app.
func (s *Store) UserByOpenID(ctx context.Context, app, openid string) (string, bool, error) {
	if err := s.check(); err != nil {
		return "", false, err
	}
	subj := s.n.openid(app, openid)
	got, err := s.read(ctx, subj)
	if err != nil {
		return "", false, fmt.Errorf("read the user of %s in app %s: %w", clip(openid), clip(app), err)
	}
	e := got[subj]
	return string(e.val), e.present, nil
}

// Bindings lists a user's bindings in every app.
func (s *Store) Bindings(ctx context.Context, userID string) ([]storage.Binding, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	got, err := s.list(ctx, s.n.bindings(userID))
	if err != nil {
		return nil, fmt.Errorf("list bindings of %s: %w", clip(userID), err)
	}
	var out []storage.Binding
	for _, e := range got {
		var b storage.Binding
		found, err := decodeBinding(e, &b)
		if err != nil {
			return nil, fmt.Errorf("list bindings of %s: %w", clip(userID), err)
		}
		if found {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b storage.Binding) int { return strings.Compare(a.App, b.App) })
	return out, nil
}

// BindingsByUnionID lists the bindings, in every app, that carry unionid
// (one person's accounts), by app and user: the index entries name them,
// one more get reads them, and only those that still carry it count.
func (s *Store) BindingsByUnionID(ctx context.Context, unionid string) ([]storage.Binding, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if unionid == "" {
		return nil, nil
	}
	idx, err := s.list(ctx, s.n.bindingsUnion(unionid))
	if err != nil {
		return nil, fmt.Errorf("list bindings of unionid %s: %w", clip(unionid), err)
	}
	var subjects []string
	for _, e := range idx {
		if e.present {
			subjects = append(subjects, s.n.kv+string(e.val))
		}
	}
	if len(subjects) == 0 {
		return nil, nil
	}
	got, err := s.read(ctx, subjects...)
	if err != nil {
		return nil, fmt.Errorf("read bindings of unionid %s: %w", clip(unionid), err)
	}
	var out []storage.Binding
	for _, e := range got {
		var b storage.Binding
		found, err := decodeBinding(e, &b)
		if err != nil {
			return nil, fmt.Errorf("read bindings of unionid %s: %w", clip(unionid), err)
		}
		if found && b.UnionID == unionid {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b storage.Binding) int {
		return cmp.Or(strings.Compare(a.App, b.App), strings.Compare(a.UserID, b.UserID))
	})
	return out, nil
}

// UpdateRoles grants and revokes roles of one user in one batch: each
// role's member list and the user's role list, conditional on the
// revisions they were read at.
func (s *Store) UpdateRoles(ctx context.Context, userID string, grant, revoke []storage.Role) error {
	if err := s.check(); err != nil {
		return err
	}
	if userID == "" {
		return fmt.Errorf("update roles: %w: user_id is required", storage.ErrInvalid)
	}
	for _, r := range append(append([]storage.Role(nil), grant...), revoke...) {
		if r.Role == "" {
			return fmt.Errorf("update roles of %s: %w: a role needs a name", clip(userID), storage.ErrInvalid)
		}
	}
	userSubj := s.n.userRoles(userID)
	st := s.newState()
	err := s.update(ctx, st, func() (*writes, error) {
		subjects := []string{userSubj}
		for _, r := range append(append([]storage.Role(nil), grant...), revoke...) {
			subjects = append(subjects, s.n.role(r.Role, r.Scope))
		}
		if err := st.need(ctx, subjects...); err != nil {
			return nil, err
		}
		held, err := decodeGrants(st.get(userSubj))
		if err != nil {
			return nil, err
		}
		members := map[storage.Role][]storage.RoleGrant{}
		load := func(r storage.Role) error {
			if _, ok := members[r]; ok {
				return nil
			}
			m, err := decodeGrants(st.get(s.n.role(r.Role, r.Scope)))
			members[r] = m
			return err
		}
		var touched []storage.Role
		touch := func(r storage.Role) {
			if !slices.Contains(touched, r) {
				touched = append(touched, r)
			}
		}
		for _, r := range revoke {
			if err := load(r); err != nil {
				return nil, err
			}
			members[r] = slices.DeleteFunc(members[r], func(g storage.RoleGrant) bool { return g.UserID == userID })
			held = slices.DeleteFunc(held, func(g storage.RoleGrant) bool { return g.Role == r })
			touch(r)
		}
		roles := make([]storage.Role, len(held))
		for i, g := range held {
			roles[i] = g.Role
		}
		now := s.now()
		for _, r := range storage.GrantsToAdd(roles, grant) {
			if err := load(r); err != nil {
				return nil, err
			}
			g := storage.RoleGrant{Role: r, UserID: userID, GrantedAt: now}
			members[r] = append(slices.DeleteFunc(members[r], func(g storage.RoleGrant) bool { return g.UserID == userID }), g)
			held = append(held, g)
			touch(r)
		}
		if len(touched) == 0 {
			return nil, nil
		}
		w := newWrites("g")
		for _, r := range touched {
			subj := s.n.role(r.Role, r.Scope)
			m := members[r]
			if len(m) == 0 {
				w.del(subj, s.opts.MarkerTTL, true, st.get(subj).rev)
				continue
			}
			slices.SortFunc(m, func(a, b storage.RoleGrant) int { return strings.Compare(a.UserID, b.UserID) })
			w.putAt(subj, encodeGrants(m), 0, st.get(subj).rev)
		}
		if len(held) == 0 {
			w.del(userSubj, s.opts.MarkerTTL, true, st.get(userSubj).rev)
		} else {
			slices.SortFunc(held, func(a, b storage.RoleGrant) int {
				return cmp.Or(strings.Compare(a.Role.Role, b.Role.Role), strings.Compare(a.Scope, b.Scope))
			})
			w.putAt(userSubj, encodeGrants(held), 0, st.get(userSubj).rev)
		}
		return w, nil
	})
	if err != nil {
		return fmt.Errorf("update roles of %s: %w", clip(userID), err)
	}
	return nil
}

// RoleMembers lists the users holding role in scope, in user id order.
func (s *Store) RoleMembers(ctx context.Context, role, scope string) ([]storage.RoleGrant, error) {
	return s.grants(ctx, s.n.role(role, scope), "members of "+clip(role))
}

// UserRoles lists the roles a user holds.
func (s *Store) UserRoles(ctx context.Context, userID string) ([]storage.RoleGrant, error) {
	return s.grants(ctx, s.n.userRoles(userID), "roles of "+clip(userID))
}

func (s *Store) grants(ctx context.Context, subj, what string) ([]storage.RoleGrant, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	got, err := s.read(ctx, subj)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	g, err := decodeGrants(got[subj])
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return g, nil
}

func encodeGrants(g []storage.RoleGrant) []byte {
	b, _ := json.Marshal(g)
	return b
}

func decodeGrants(e entry) ([]storage.RoleGrant, error) {
	if !e.present {
		return nil, nil
	}
	var g []storage.RoleGrant
	if err := json.Unmarshal(e.val, &g); err != nil {
		return nil, fmt.Errorf("decode role grants: %w", err)
	}
	return g, nil
}
