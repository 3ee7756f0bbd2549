package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Binding ties a system user to their openid in one app.
type Binding struct {
	App     string    `json:"app"`
	UserID  string    `json:"user_id"`
	OpenID  string    `json:"openid"`
	UnionID string    `json:"unionid,omitempty"`
	BoundAt time.Time `json:"bound_at"`
}

// ErrInvalid is wrapped by errors about input that can never be stored.
var ErrInvalid = errors.New("invalid input")

// Bind stores b. An openid belongs to one user per app: if it was bound to
// another user, that binding is removed and returned as moved. A user's
// earlier openid in the same app is replaced.
func (db *DB) Bind(ctx context.Context, b Binding) (moved *Binding, err error) {
	if b.App == "" || b.UserID == "" || b.OpenID == "" {
		return nil, fmt.Errorf("bind %q in app %q to %q: %w: app, user_id and openid are required", b.UserID, b.App, b.OpenID, ErrInvalid)
	}
	if b.BoundAt.IsZero() {
		b.BoundAt = db.now().UTC()
	}
	err = db.update(ctx, func(tx *bolt.Tx) error {
		bindings, openids := tx.Bucket(bucketBindings), tx.Bucket(bucketOpenIDs)
		okey := key(b.App, b.OpenID)
		var cur, prev Binding
		hasUser, err := getRecord(bindings, key(b.UserID, b.App), &cur)
		if err != nil {
			return err
		}
		owner := string(openids.Get(okey))
		if owner != "" && owner != b.UserID {
			if _, err := getRecord(bindings, key(owner, b.App), &prev); err != nil {
				return err
			}
		}
		d := DecideBind(b, cur, hasUser, owner, prev)
		moved = d.Moved
		unions := tx.Bucket(bucketUnionIDs)
		if d.Moved != nil {
			if err := bindings.Delete(key(d.Moved.UserID, b.App)); err != nil {
				return err
			}
			if err := unions.Delete(key("b", d.Moved.UnionID, b.App, d.Moved.UserID)); err != nil {
				return err
			}
		}
		if hasUser && cur.UnionID != b.UnionID {
			if err := unions.Delete(key("b", cur.UnionID, b.App, b.UserID)); err != nil {
				return err
			}
		}
		if b.UnionID != "" {
			if err := unions.Put(key("b", b.UnionID, b.App, b.UserID), key(b.UserID, b.App)); err != nil {
				return err
			}
		}
		if d.DropOpenID != "" {
			if err := openids.Delete(key(b.App, d.DropOpenID)); err != nil {
				return err
			}
		}
		if err := putRecord(bindings, key(b.UserID, b.App), &b); err != nil {
			return err
		}
		return openids.Put(okey, []byte(b.UserID))
	})
	if err != nil {
		return nil, fmt.Errorf("bind %s in app %s: %w", b.UserID, b.App, err)
	}
	return moved, nil
}

// Unbind removes a user's binding in app. It reports whether there was one.
func (db *DB) Unbind(ctx context.Context, app, userID string) (bool, error) {
	var found bool
	err := db.update(ctx, func(tx *bolt.Tx) error {
		bindings := tx.Bucket(bucketBindings)
		var cur Binding
		var err error
		found, err = getRecord(bindings, key(userID, app), &cur)
		if err != nil || !found {
			return err
		}
		if err := tx.Bucket(bucketOpenIDs).Delete(key(app, cur.OpenID)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUnionIDs).Delete(key("b", cur.UnionID, app, userID)); err != nil {
			return err
		}
		return bindings.Delete(key(userID, app))
	})
	if err != nil {
		return false, fmt.Errorf("unbind %s in app %s: %w", userID, app, err)
	}
	return found, nil
}

// Binding returns a user's binding in app.
func (db *DB) Binding(_ context.Context, app, userID string) (Binding, bool, error) {
	var b Binding
	var found bool
	err := db.view(func(tx *bolt.Tx) error {
		var err error
		found, err = getRecord(tx.Bucket(bucketBindings), key(userID, app), &b)
		return err
	})
	return b, found, err
}

// UserByOpenID returns the user bound to openid in app.
func (db *DB) UserByOpenID(_ context.Context, app, openid string) (string, bool, error) {
	var user string
	err := db.view(func(tx *bolt.Tx) error {
		user = string(tx.Bucket(bucketOpenIDs).Get(key(app, openid)))
		return nil
	})
	return user, user != "", err
}

// Bindings lists a user's bindings in every app.
func (db *DB) Bindings(_ context.Context, userID string) ([]Binding, error) {
	var out []Binding
	err := db.view(func(tx *bolt.Tx) error {
		p := prefix(userID)
		c := tx.Bucket(bucketBindings).Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			var b Binding
			if _, err := getRecord(tx.Bucket(bucketBindings), k, &b); err != nil {
				return err
			}
			out = append(out, b)
		}
		return nil
	})
	return out, err
}
