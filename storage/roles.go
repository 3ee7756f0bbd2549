package storage

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Role names a role within a scope: ("reconciler", "buyer:42").
type Role struct {
	Role  string `json:"role"`
	Scope string `json:"scope"`
}

// RoleGrant is a role a user holds.
type RoleGrant struct {
	Role
	UserID    string    `json:"user_id"`
	GrantedAt time.Time `json:"granted_at"`
}

// UpdateRoles grants and revokes roles of one user in one transaction.
func (db *DB) UpdateRoles(ctx context.Context, userID string, grant, revoke []Role) error {
	if userID == "" {
		return fmt.Errorf("update roles: %w: user_id is required", ErrInvalid)
	}
	for _, r := range append(append([]Role(nil), grant...), revoke...) {
		if r.Role == "" {
			return fmt.Errorf("update roles of %s: %w: a role needs a name", userID, ErrInvalid)
		}
	}
	err := db.update(ctx, func(tx *bolt.Tx) error {
		roles, uroles := tx.Bucket(bucketRoles), tx.Bucket(bucketUserRoles)
		for _, r := range revoke {
			if err := roles.Delete(key(r.Role, r.Scope, userID)); err != nil {
				return err
			}
			if err := uroles.Delete(key(userID, r.Role, r.Scope)); err != nil {
				return err
			}
		}
		now := db.now().UTC()
		for _, r := range grant {
			if roles.Get(key(r.Role, r.Scope, userID)) != nil {
				continue // keep the original grant time
			}
			g := RoleGrant{Role: r, UserID: userID, GrantedAt: now}
			if err := putJSON(roles, key(r.Role, r.Scope, userID), g); err != nil {
				return err
			}
			if err := putJSON(uroles, key(userID, r.Role, r.Scope), g); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update roles of %s: %w", userID, err)
	}
	return nil
}

// RoleMembers lists the users holding role in scope, in user id order.
func (db *DB) RoleMembers(_ context.Context, role, scope string) ([]RoleGrant, error) {
	return db.scanGrants(bucketRoles, prefix(role, scope))
}

// UserRoles lists the roles a user holds.
func (db *DB) UserRoles(_ context.Context, userID string) ([]RoleGrant, error) {
	return db.scanGrants(bucketUserRoles, prefix(userID))
}

func (db *DB) scanGrants(bucket, p []byte) ([]RoleGrant, error) {
	var out []RoleGrant
	err := db.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		c := b.Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			var g RoleGrant
			if _, err := getJSON(b, k, &g); err != nil {
				return err
			}
			out = append(out, g)
		}
		return nil
	})
	return out, err
}
