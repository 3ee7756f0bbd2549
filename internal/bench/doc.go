// Package bench measures wxbridge the way its users load it: events
// published on NATS JetStream become WeChat sends at an emulator, and the
// numbers that matter are read from the outside.
//
// A run is a list of scenarios (steady load, WeChat latency, paced load,
// fan-out to a role, WeChat faults, the bridge SIGKILLed, NATS restarted).
// Each scenario starts its own processes from the wxbridge binary: a NATS
// server (`wxbridge nats-server`, so that it can be restarted) and the bridge
// (`wxbridge serve`, so that it can be SIGKILLed and its own memory and CPU
// measured). The WeChat emulator runs in the bench process, so it outlives
// bridge restarts and holds the authoritative record of what was sent.
//
// Every scenario checks what WeChat received against what was published:
//
//   - lost: an (event, recipient) that WeChat never received and for which
//     the bridge never reported a failed or skipped outcome;
//   - duplicate: an (event, recipient) WeChat received more than once. A
//     duplicate whose result is marked in_doubt is the documented price of
//     at_least_once delivery (the bridge died, or a call timed out, between
//     the WeChat call and its record) and is counted apart from one that is
//     not, which would be a bug;
//   - in doubt: results with in_doubt true.
//
// Scenarios with a baseline also run a minimal consumer (JetStream consume,
// HTTP POST to the emulator, ack; no rules, no state) against the same
// emulator with the same concurrency: the floor the bridge is compared with.
//
// Run is not safe for concurrent use: it owns ports, processes and
// temporary directories, and removes them all before it returns, on
// cancellation too.
package bench
