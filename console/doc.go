// Package console is wxbridge's operator console: server-rendered pages
// under /console/ that answer "why did (or didn't) this person get it?",
// show what a rules change would send, and tail results as they happen.
//
// A Console is an http.Handler. It needs the admin token (no token, no
// console), a Store to read the state through (the same reads as the admin
// API, so it works on every backend), the Rules in force, and a Model: the
// read model of the output stream (results, ledger changes, dead letters)
// that Model.Follow keeps up to date from JetStream. Every bridge serves
// its own console, and every console reads the one shared output stream,
// so each shows the outcomes of all bridges.
//
// Guarantees:
//
//   - Every page but the login form needs a session cookie. The cookie is
//     an HMAC-signed random session id with an expiry, never the token;
//     its key is derived from the token, so every bridge with the same
//     token accepts it, and changing the token ends every session.
//   - POSTs are refused unless they come from the console's own origin
//     (SameSite=Strict cookie plus http.CrossOriginProtection).
//   - No page and no live message carries a secret: none is rendered, and
//     the appsecrets, push tokens, AES keys and the admin token are
//     scrubbed from every response as a last line of defence.
//   - Memory is bounded: the read model keeps counters in time buckets,
//     the last results of a bounded number of people, and the credit
//     holders up to a bound; the live tail has a bounded number of clients,
//     each with a bounded queue, and drops a client that falls behind.
//
// Console, Model and Rules are safe for concurrent use.
package console
