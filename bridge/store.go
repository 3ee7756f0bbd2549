package bridge

import (
	"context"
	"time"

	"github.com/wxbridge/wxbridge/storage"
)

// Store is the state the bridge keeps: everything it reads and writes, in
// one contract that every backend implements whole. The wiring assigns a
// backend to Config.Store, so the compiler checks each one; nothing is
// looked up at run time, so no capability can silently go missing.
//
// The decisions (what a reservation, an outcome, a push does) are the
// storage package's plain functions; a backend loads, calls them and saves.
// storage/storagetest is the contract's test suite.
type Store interface {
	sendStore
	directory
	ledgerStore
	scheduleStore
	outboxStore
	adminStore
	lifecycle
	// LoadToken and SaveToken keep the WeChat client's access tokens, shared
	// by every bridge on the same state (wechat.TokenStore).
	LoadToken(ctx context.Context, key string) (string, time.Time, error)
	SaveToken(ctx context.Context, key, token string, expiresAt time.Time) error
}

// sendStore guards sends: what a recipient's send starts from, its
// reservation and outcome, and events done. In the common case a recipient
// costs one Lookup and two atomic writes (Reserve, Complete or
// CompleteEvent).
type sendStore interface {
	// Lookup reads in one round trip what a recipient's send starts from:
	// whether its event is done, its send record, its binding; a backend
	// may read what Reserve will need too, and hand it over in
	// Found.Snapshot.
	Lookup(ctx context.Context, l storage.Lookup) (storage.Found, error)
	Reserve(ctx context.Context, req storage.ReserveRequest) (storage.ReserveResult, error)
	Complete(ctx context.Context, rec storage.SendRecord, effect storage.CreditEffect, build func(storage.SendRecord) []storage.OutboxMessage) (storage.SendRecord, bool, error)
	CompleteEvent(ctx context.Context, rec storage.SendRecord, effect storage.CreditEffect, build func(storage.SendRecord) []storage.OutboxMessage) (storage.SendRecord, bool, error)
	Send(ctx context.Context, key string) (storage.SendRecord, bool, error)
	EventSends(ctx context.Context, eventID string) ([]storage.SendRecord, error)
	EventDone(ctx context.Context, id string) (storage.EventRecord, bool, error)
	MarkEventDone(ctx context.Context, id, typ string, out ...storage.OutboxMessage) error
}

// directory answers who is who: bindings and roles, and their commands.
type directory interface {
	Bind(ctx context.Context, b storage.Binding) (*storage.Binding, error)
	Unbind(ctx context.Context, app, userID string) (bool, error)
	Binding(ctx context.Context, app, userID string) (storage.Binding, bool, error)
	UpdateRoles(ctx context.Context, userID string, grant, revoke []storage.Role) error
	RoleMembers(ctx context.Context, role, scope string) ([]storage.RoleGrant, error)
	// BindingsByUnionID is one person's accounts across apps.
	BindingsByUnionID(ctx context.Context, unionid string) ([]storage.Binding, error)
	// An official account's followers: a person's openid there is found
	// by their unionid; pushes (ApplyPush) and the user-info API
	// (SaveFollowers) keep them.
	SaveFollowers(ctx context.Context, chs ...storage.FollowChange) error
	Follower(ctx context.Context, app, openid string) (storage.Follower, bool, error)
	FollowerByUnionID(ctx context.Context, app, unionid string) (storage.Follower, bool, error)
}

// ledgerStore applies what users and WeChat say about subscriptions.
type ledgerStore interface {
	ApplySubscription(ctx context.Context, ch storage.SubscriptionChange) (storage.Subscription, error)
	ApplyPush(ctx context.Context, p storage.PushChanges) (storage.PushResult, error)
}

// scheduleStore keeps sends deferred to the end of quiet hours. The work
// lives in the state, so it survives restarts, and the event that caused
// it is acked: a deferred event never sits in JetStream holding one of the
// consumer's MaxAckPending slots for hours. With several bridges each due
// send is handed to one of them.
type scheduleStore interface {
	Defer(ctx context.Context, rec storage.SendRecord, due time.Time, payload []byte) (bool, error)
	// WaitDue returns up to max deferred sends that are due, waiting up to
	// wait for one to come due.
	WaitDue(ctx context.Context, max int, wait time.Duration) ([]storage.Deferred, error)
	// Settle takes a deferred send off the schedule once it has an outcome
	// (next zero), or moves it to next.
	Settle(ctx context.Context, d storage.Deferred, next time.Time) error
}

// outboxStore is the queue of messages the state changes announce, and its
// relay to NATS: any bridge may publish any entry, each with its
// deterministic Nats-Msg-Id.
type outboxStore interface {
	Enqueue(ctx context.Context, msgs ...storage.OutboxMessage) error
	// NextOutbox waits up to wait for queued messages not yet handed out and
	// returns up to max of them, oldest first.
	NextOutbox(ctx context.Context, max int, wait time.Duration) ([]storage.OutboxEntry, error)
	// Published settles what NextOutbox handed out: done is forgotten,
	// failed is handed out again.
	Published(ctx context.Context, done, failed []storage.OutboxEntry)
}

// adminStore is what the admin API and `wxbridge state` read.
type adminStore interface {
	Bindings(ctx context.Context, userID string) ([]storage.Binding, error)
	UserRoles(ctx context.Context, userID string) ([]storage.RoleGrant, error)
	Subscriptions(ctx context.Context, app, openid string) ([]storage.Subscription, error)
}

// lifecycle is the backend's own life: who this bridge is to the others,
// whether it may still start WeChat calls, and its housekeeping.
type lifecycle interface {
	// Owner names this bridge in the pending records it writes.
	Owner() string
	// Lease is nil while this bridge's liveness is current: other bridges
	// take a pending record of a bridge whose lease lapsed as in doubt, so
	// a bridge must not start a WeChat call without one.
	Lease() error
	// Expire removes records past their retention (a backend with
	// server-side expiry has nothing to do).
	Expire(ctx context.Context, r storage.Retention) (storage.ExpireStats, error)
	// Ping reports whether the state can be read.
	Ping() error
	// LegacyIDsBefore: see Config.LegacyIDsBefore.
	LegacyIDsBefore() time.Time
}
