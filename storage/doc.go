// Package storage keeps wxbridge's state in one bbolt file: bindings between
// system users and openids, roles, the subscription ledger, send records
// (the idempotency guard of every WeChat call), the result outbox, access
// tokens and callback dedupe keys.
//
// The bridge uses it through small interfaces of its own; *DB satisfies
// them. Every operation that must be atomic is one method here: consuming a
// subscription credit and writing the pending send record happen in one
// transaction (Reserve); recording an outcome, giving a credit back and
// queueing the result for publication happen in another (Complete).
//
// Concurrent writers share transactions (group commit), so throughput grows
// with concurrency instead of being capped by fsync latency. A DB is safe for
// concurrent use.
package storage
