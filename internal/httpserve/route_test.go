package httpserve_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/internal/httpserve"
)

// A body sent a byte at a time is cut off at the route's read deadline:
// the handler's read fails and the server closes the connection.
func TestTrickledBodyIsCutOff(t *testing.T) {
	readErr := make(chan error, 1)
	r := newRig(t, httpserve.Config{}, func(s *httpserve.Server, mux *http.ServeMux) {
		mux.Handle("POST /push", s.Route(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, err := io.ReadAll(r.Body)
			readErr <- err
			if err != nil {
				http.Error(w, "unreadable body", http.StatusBadRequest)
			}
		}), httpserve.Limits{MaxBody: 64 << 10, Read: 500 * time.Millisecond, Write: 2 * time.Second}))
	})
	const length = 1000 // 100 s at the pace below
	c := r.dial(fmt.Sprintf("POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", length))
	var sent atomic.Int64
	go func() {
		for i := 0; i < length; i++ {
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			sent.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	if !closedByServer(t, c) {
		t.Fatal("the server kept the trickling connection open for 30 s")
	}
	if n := sent.Load(); n >= length {
		t.Errorf("the whole body (%d bytes) was read before the connection closed", n)
	}
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("handler read %v, want a deadline error", err)
	}
	if got := r.metric("http_slow_clients_total"); got != 1 {
		t.Errorf("http_slow_clients_total = %v, want 1", got)
	}
}

// Bodies over the limit, and any body on a route that takes none, are
// refused from what the headers declare: the client sends no body byte
// and still gets its answer, and the handler never runs.
func TestBodiesRefusedBeforeReading(t *testing.T) {
	var calls atomic.Int64
	r := newRig(t, httpserve.Config{}, func(s *httpserve.Server, mux *http.ServeMux) {
		mux.Handle("/push", s.Route(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			body, err := io.ReadAll(r.Body)
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
			fmt.Fprintf(w, "got %d", len(body))
		}), httpserve.Limits{MaxBody: 1024, Read: 5 * time.Second, Write: 5 * time.Second}))
		mux.Handle("/get", s.Route(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			_, _ = io.WriteString(w, "ok")
		}), httpserve.Limits{Write: 5 * time.Second}))
	})
	chunked := func(n int) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", n, strings.Repeat("x", n)) }
	cases := []struct {
		name, head, body string
		status           int
		handled          bool
		reason           string // of the refusal counted
	}{
		{"declared over the limit", "POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", "", 413, false, "body_too_large"},
		{"declared 10 GiB", "POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n", "", 413, false, "body_too_large"},
		{"GET with a body", "GET /get HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", "", 413, false, "body_not_allowed"},
		{"chunked body where none is taken", "POST /get HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "", 413, false, "body_not_allowed"},
		{"chunked over the limit", "POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", chunked(2000), 413, true, "body_too_large"},
		{"within the limit", "POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", "hello", 200, true, ""},
		{"GET without a body", "GET /get HTTP/1.1\r\nHost: x\r\n\r\n", "", 200, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, refusedBefore := calls.Load(), r.metric("http_requests_refused_total")
			c := r.dial(tc.head + tc.body)
			resp := readResponse(t, c)
			if resp.StatusCode != tc.status {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.status)
			}
			if handled := calls.Load() > before; handled != tc.handled {
				t.Errorf("handler ran: %v, want %v", handled, tc.handled)
			}
			refused := r.metric("http_requests_refused_total") - refusedBefore
			if tc.reason == "" && refused != 0 || tc.reason != "" && refused != 1 {
				t.Errorf("%v refusals counted, want reason %q", refused, tc.reason)
			}
			if tc.status == 413 && !closedByServer(t, c) {
				t.Error("connection kept open after a refused body")
			}
		})
	}
}

// A stream (Write 0) outlives the server-wide read and write timeouts, and
// a handler that answers slowly within its own deadline keeps its context:
// the read deadline, which the server's watch for a departing client obeys,
// follows the answer's once the body is in.
func TestRouteDeadlinesReplaceServerTimeouts(t *testing.T) {
	const ticks = 6
	tick := func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for i := 0; i < ticks; i++ {
			if _, err := fmt.Fprintf(w, "tick %d\n", i); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		fmt.Fprintf(w, "context: %v\n", r.Context().Err())
	}
	slow := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		time.Sleep(600 * time.Millisecond)
		fmt.Fprintf(w, "context: %v\n", r.Context().Err())
	}
	r := newRig(t, httpserve.Config{ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond},
		func(s *httpserve.Server, mux *http.ServeMux) {
			mux.Handle("GET /stream", s.Route(http.HandlerFunc(tick), httpserve.Limits{}))
			mux.Handle("GET /short", s.Route(http.HandlerFunc(tick), httpserve.Limits{Write: 200 * time.Millisecond}))
			mux.Handle("GET /slow", s.Route(http.HandlerFunc(slow), httpserve.Limits{Write: 10 * time.Second}))
			mux.Handle("POST /slow", s.Route(http.HandlerFunc(slow), httpserve.Limits{MaxBody: 100, Read: 200 * time.Millisecond, Write: 10 * time.Second}))
		})
	cases := []struct {
		name, head string
		want       []string // lines
	}{
		{"stream", "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", []string{"tick 0", "tick 1", "tick 2", "tick 3", "tick 4", "tick 5", "context: <nil>"}},
		{"slow answer", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", []string{"context: <nil>"}},
		{"slow answer after a body", "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", []string{"context: <nil>"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := readResponse(t, r.dial(tc.head))
			if got := readLines(resp.Body); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("the write deadline holds", func(t *testing.T) {
		c := r.dial("GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, _ := io.ReadAll(c) // the stream breaks off: no complete response
		if n := strings.Count(string(got), "tick"); n >= ticks {
			t.Errorf("all %d ticks written past a 200 ms write deadline", n)
		}
	})
}

func readLines(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// A handler still working when its time to answer is up sees its context
// end, with or without a body, so that it stops; a stream's does not.
func TestRequestContextEndsAtTheAnswerDeadline(t *testing.T) {
	ended := make(chan string, 1)
	wait := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
			ended <- "ended"
		case <-time.After(3 * time.Second):
			ended <- "still running after 3 s"
		}
	})
	r := newRig(t, httpserve.Config{}, func(s *httpserve.Server, mux *http.ServeMux) {
		mux.Handle("GET /wait", s.Route(wait, httpserve.Limits{Write: 200 * time.Millisecond}))
		mux.Handle("POST /wait", s.Route(wait, httpserve.Limits{MaxBody: 100, Read: 10 * time.Second, Write: 200 * time.Millisecond}))
		mux.Handle("GET /stream", s.Route(wait, httpserve.Limits{}))
	})
	cases := []struct{ name, head, want string }{
		{"no body", "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n", "ended"},
		{"after a body", "POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "ended"},
		{"stream", "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", "still running after 3 s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r.dial(tc.head)
			if got := <-ended; got != tc.want {
				t.Errorf("handler's context: %s, want %s", got, tc.want)
			}
		})
	}
}

// Clients that do not send their headers in time are counted as slow;
// requests that are answered are not, whatever route or none they hit.
func TestSlowClientsCounted(t *testing.T) {
	r := newRig(t, httpserve.Config{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}, func(s *httpserve.Server, mux *http.ServeMux) {
		mux.Handle("GET /get", s.Route(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), httpserve.Limits{Write: 5 * time.Second}))
		mux.Handle("POST /push", s.Route(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.ReadAll(r.Body) }),
			httpserve.Limits{MaxBody: 100, Read: 5 * time.Second, Write: 5 * time.Second}))
	})
	cases := []struct {
		name, head string
		slow       float64
	}{
		{"answered", "GET /get HTTP/1.1\r\nHost: x\r\n\r\n", 0},
		{"answered after a body", "POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 0},
		{"no route, with a body", "POST /none HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 0},
		{"wrong method, with a body", "POST /get HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 0},
		{"headers never finished", "GET /get HTTP/1.1\r\nHost: x\r\n", 1},
		{"nothing sent", "", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := r.metric("http_slow_clients_total")
			if !closedByServer(t, r.dial(tc.head)) {
				t.Fatal("connection still open after 30 s")
			}
			eventually(t, "the connection closed", func() bool { return r.metric("http_connections_open") == 0 })
			if got := r.metric("http_slow_clients_total") - before; got != tc.slow {
				t.Errorf("%v slow clients counted, want %v", got, tc.slow)
			}
		})
	}
}
