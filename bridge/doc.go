// Package bridge is wxbridge's pipeline. It consumes domain events from the
// EVENTS JetStream stream with a durable consumer, applies the rules to each,
// guards every WeChat call with a send record and the subscription ledger,
// sends through the WeChat client, and publishes one result per (event,
// rule, recipient) on wxbridge.results.<event type>. It also serves the
// wxbridge.cmd.* subjects (bindings, roles, subscription reports) and turns
// WeChat push callbacks into ledger changes and delivery receipts.
//
// Guarantees:
//
//   - An event is acked (and the ack confirmed by the server) only when
//     every recipient has a final outcome; otherwise it is nacked with a
//     delay and only what is left is retried on redelivery.
//   - The send record of an (event, rule, recipient) is written before the
//     WeChat call, in the transaction that consumes the subscription credit,
//     so a redelivered or republished event never sends twice. A record a
//     crash left pending is resolved by the rule's delivery policy and
//     reported with in_doubt.
//   - Results and ledger changes are written to an outbox in the same
//     transaction as the state they describe and published from there with a
//     deterministic Nats-Msg-Id, so none is lost and JetStream drops copies.
//   - Input that can never be processed goes to wxbridge.dead with the
//     reason in the Wxbridge-Error header; the bridge never crashes on input.
package bridge
