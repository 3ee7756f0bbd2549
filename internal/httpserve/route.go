package httpserve

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// Limits is what one route allows a request, counted from when its handler
// starts (the headers are bounded by Config.ReadHeaderTimeout).
type Limits struct {
	// MaxBody bounds the request body in bytes. 0: the route takes no body,
	// and a request that declares one is refused.
	MaxBody int64
	// Read is how long the client has to send the whole body; 0: until
	// the answer's deadline.
	Read time.Duration
	// Write is how long the handler has to answer. 0 leaves the response
	// without a deadline: for a stream, which sets its own before each
	// write with http.ResponseController.
	Write time.Duration
}

// refuseLinger is how long the server goes on reading a refused body after
// answering, so that a client that sent it at once sees the answer rather
// than a reset connection; a trickled body is dropped when it runs out.
const refuseLinger = time.Second

// Route returns h with l in force: the deadlines set and the body checked
// before h reads anything. A body whose Content-Length is over MaxBody, or
// any body on a route that takes none, is refused with 413 and the
// connection closed; a chunked body that grows past MaxBody fails h's read
// with *http.MaxBytesError.
func (s *Server) Route(h http.Handler, l Limits) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		rc := http.NewResponseController(w)
		var answerBy time.Time // zero: no deadline
		if l.Write > 0 {
			answerBy = now.Add(l.Write)
		}
		_ = rc.SetWriteDeadline(answerBy)

		if reason := refusal(r, l.MaxBody); reason != "" {
			s.m.refused.WithLabelValues(reason).Inc()
			_ = rc.SetReadDeadline(now.Add(refuseLinger))
			w.Header().Set("Connection", "close")
			msg := "request body too large"
			if reason == "body_not_allowed" {
				msg = "this resource takes no request body"
			}
			http.Error(w, msg, http.StatusRequestEntityTooLarge)
			return
		}
		conn := connOf(r)
		// Once the body is in, the server reads on in the background to
		// notice the client leaving, and a read error there cancels the
		// request's context. The read deadline then becomes the answer's,
		// so that a handler out of time sees its context end and stops.
		if r.ContentLength == 0 {
			_ = rc.SetReadDeadline(answerBy)
			conn.handling()
			h.ServeHTTP(w, r)
			return
		}
		readBy := answerBy
		if l.Read > 0 {
			readBy = now.Add(l.Read)
		}
		_ = rc.SetReadDeadline(readBy)
		r.Body = &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, l.MaxBody), m: s.m, conn: conn, atEOF: func() {
			_ = rc.SetReadDeadline(answerBy)
			conn.handling()
		}}
		h.ServeHTTP(w, r)
	})
}

// refusal says why r's body is refused before reading it, or "".
// ContentLength is -1 for a chunked body of unknown length.
func refusal(r *http.Request, maxBody int64) string {
	switch {
	case maxBody <= 0 && r.ContentLength != 0:
		return "body_not_allowed"
	case r.ContentLength > maxBody:
		return "body_too_large"
	}
	return ""
}

// limitedBody calls atEOF once the body has been read in full, and counts a
// body found too large, or not sent in time, while reading.
type limitedBody struct {
	io.ReadCloser
	m     *metrics
	conn  *trackedConn
	atEOF func()
	done  bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.done || err == nil {
		return n, err
	}
	switch {
	case err == io.EOF:
		b.done = true
		b.atEOF()
	case errors.As(err, new(*http.MaxBytesError)):
		b.done = true
		b.m.refused.WithLabelValues("body_too_large").Inc()
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.done = true
		b.conn.tooSlow()
	}
	return n, err
}
