// Package httpserve serves HTTP on a public listener that slow or hostile
// clients cannot hold open: every connection is bounded in number and every
// request in time and size.
//
//   - Server bounds the connections open at once (Config.MaxConns). At the
//     bound it makes room by closing the connection that can best spare it,
//     an idle keep-alive connection first, then the one that has spent the
//     longest reading one request (a trickled body); only when every
//     connection is busy answering does Accept wait, leaving new
//     connections in the kernel's backlog, where they hold no descriptor of
//     the process.
//   - Server.Route gives each route its own deadlines and body limit
//     (Limits): how long the client has to send the body, how long the
//     handler has to answer, and how large a body may be, refused with 413
//     from Content-Length before a byte of it is read. Routes that take no
//     body refuse any.
//   - Server-wide timeouts (ReadHeaderTimeout, ReadTimeout, WriteTimeout,
//     IdleTimeout, MaxHeaderBytes) bound what no route claims.
//
// A long-lived stream (Server-Sent Events) opts out of the write deadline
// with Limits.Write = 0 and sets its own per write through
// http.ResponseController.
//
// Server and the handlers Route returns are safe for concurrent use.
package httpserve
