// Package natskv keeps wxbridge's state in one JetStream KV bucket, shared
// by every bridge on a NATS cluster (R3) or on one server (R1). Store is
// the bridge's whole state contract (bridge.Store), like storage.DB; the
// decisions are storage's plain functions, this package loads, calls them
// and saves.
//
// Layout: KV keys under $KV.<bucket>. (send records, events, bindings,
// the ledger, official-account followers, unionid indexes, roles, marks,
// tokens, leases), every id part base64url, and
// two subject spaces in the same stream: the outbox (<prefix>.outbox.>)
// and the quiet-hours schedule (<prefix>.sched.> and .due.>).
//
// Guarantees:
//   - A change that spans keys is one atomic batch (ADR-50): each key it
//     rewrites is conditional on the revision (subject sequence) it was
//     decided on, and it is decided again on a conflict. Reserve and
//     Complete are one batch each; Lookup is one direct batch get
//     (ADR-31), so a recipient costs three round trips in the common case.
//   - A batch sent again after its acknowledgement was lost carries the
//     same Nats-Msg-Id: the server answers that it has it, nothing is
//     written twice.
//   - Leases: each Store keeps a liveness key with a server-side TTL and
//     renews it; a pending record of another bridge is busy while that
//     key exists and is taken over, by exactly one bridge, once it is gone.
//     Lease reads only this machine's monotonic clock.
//   - Expiry is the server's (per-message TTLs with markers), not a sweep;
//     unfinished sends never expire.
//
// A Store is safe for concurrent use; Close stops its goroutine and waits
// for it.
package natskv
