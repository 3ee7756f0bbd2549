package httpserve_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/internal/httpserve"
)

// mountBound serves GET /quick, GET /block (blocks until release closes)
// and POST /push (reads the body within 30 s, so that only the bound
// frees a slow one).
func mountBound(release <-chan struct{}, entered chan<- struct{}) func(*httpserve.Server, *http.ServeMux) {
	return func(s *httpserve.Server, mux *http.ServeMux) {
		mux.Handle("GET /quick", s.Route(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}), httpserve.Limits{Write: 5 * time.Second}))
		mux.Handle("GET /block", s.Route(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			entered <- struct{}{}
			<-release
		}), httpserve.Limits{Write: time.Minute}))
		mux.Handle("POST /push", s.Route(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body)
		}), httpserve.Limits{MaxBody: 1 << 10, Read: 30 * time.Second, Write: 30 * time.Second}))
	}
}

const slowHead = "POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx"

// Connections busy answering are never closed to make room: a new one
// waits (holding at most one descriptor beyond the bound) and is served
// when a slot frees.
func TestBoundWaitsForBusyConnections(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 3)
	r := newRig(t, httpserve.Config{MaxConns: 3, SlowAfter: 100 * time.Millisecond}, mountBound(release, entered))
	var busy sync.WaitGroup
	for i := 0; i < 3; i++ {
		busy.Add(1)
		go func() {
			defer busy.Done()
			if status, err := r.get("/block"); err != nil || status != 200 {
				t.Errorf("blocked request: %d %v", status, err)
			}
		}()
		<-entered
	}
	quick := make(chan error, 1)
	go func() {
		status, err := r.get("/quick")
		if err == nil && status != 200 {
			err = fmt.Errorf("status %d", status)
		}
		quick <- err
	}()
	eventually(t, "the 4th connection reached the bound", func() bool { return r.metric("http_connections_at_bound_total") == 1 })
	select {
	case err := <-quick:
		t.Fatalf("4th request answered while 3 of 3 connections were busy: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if open, _ := r.held.counts(); open > 4 {
		t.Errorf("%d connections held, want at most 3 + the one waiting", open)
	}
	close(release)
	if err := <-quick; err != nil {
		t.Errorf("4th request after a slot freed: %v", err)
	}
	busy.Wait()
	if _, peak := r.held.counts(); peak > 4 {
		t.Errorf("peak %d connections held, want at most 4", peak)
	}
	if n := r.metric("http_connections_evicted_total"); n != 0 {
		t.Errorf("%v busy connections evicted", n)
	}
}

// At the bound, an idle keep-alive connection makes room first, then the
// connection that has spent longest sending its request.
func TestBoundEvictsIdleThenSlow(t *testing.T) {
	r := newRig(t, httpserve.Config{MaxConns: 3, SlowAfter: 100 * time.Millisecond}, mountBound(nil, nil))
	// One idle keep-alive connection...
	keep := &http.Client{Timeout: 30 * time.Second}
	resp, err := keep.Get("http://" + r.addr + "/quick")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// ...and two slow ones, the first slower.
	slow := []net.Conn{r.dial(slowHead)}
	eventually(t, "2 connections open", func() bool { return r.metric("http_connections_open") == 2 })
	slow = append(slow, r.dial(slowHead))
	eventually(t, "3 connections open", func() bool { return r.metric("http_connections_open") == 3 })

	if status, err := r.get("/quick"); err != nil || status != 200 {
		t.Fatalf("request at the bound: %d %v", status, err)
	}
	if n := r.metric("http_connections_evicted_total", "reason", "idle"); n != 1 {
		t.Errorf("%v idle connections evicted, want 1", n)
	}
	if n := r.metric("http_connections_evicted_total", "reason", "slow"); n != 0 {
		t.Errorf("%v slow connections evicted while an idle one could go", n)
	}

	// Full again with slow connections only.
	eventually(t, "the request's connection closed", func() bool { return r.metric("http_connections_open") == 2 })
	slow = append(slow, r.dial(slowHead))
	eventually(t, "3 connections open", func() bool { return r.metric("http_connections_open") == 3 })
	if status, err := r.get("/quick"); err != nil || status != 200 {
		t.Fatalf("request at the bound: %d %v", status, err)
	}
	if n := r.metric("http_connections_evicted_total", "reason", "slow"); n != 1 {
		t.Errorf("%v slow connections evicted, want 1", n)
	}
	if !closedByServer(t, slow[0]) {
		t.Error("the slowest connection was not the one closed")
	}
	for _, c := range slow[1:] {
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Errorf("a younger slow connection was closed too: %v", err)
		}
	}
}

func TestBoundHoldsUnderSlowFlood(t *testing.T) {
	const bound, flood = 8, 60
	r := newRig(t, httpserve.Config{MaxConns: bound, SlowAfter: 100 * time.Millisecond}, func(s *httpserve.Server, mux *http.ServeMux) {
		mountBound(nil, nil)(s, mux)
		mux.Handle("POST /callback", s.Route(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body)
		}), httpserve.Limits{MaxBody: 1 << 10, Read: 500 * time.Millisecond, Write: time.Second}))
	})
	var wg sync.WaitGroup
	closed := make(chan bool, flood)
	for i := 0; i < flood; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Errorf("dial: %v", err)
				closed <- false
				return
			}
			defer c.Close()
			_, _ = io.WriteString(c, "POST /callback HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
			go func() { // a byte every 50 ms until the server hangs up
				for {
					if _, err := c.Write([]byte{'x'}); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			closed <- closedByServer(t, c)
		}()
	}
	for i := 0; i < 5; i++ {
		if status, err := r.get("/quick"); err != nil || status != 200 {
			t.Errorf("quick request during the flood: %d %v", status, err)
		}
	}
	wg.Wait()
	for i := 0; i < flood; i++ {
		if !<-closed {
			t.Fatal("a slow connection was left open for 30 s")
		}
	}
	if status, err := r.get("/quick"); err != nil || status != 200 {
		t.Errorf("after the flood: %d %v", status, err)
	}
	eventually(t, "no connection left open", func() bool { return r.metric("http_connections_open") == 0 })
	_, peak := r.held.counts()
	t.Logf("peak %d connections held, bound %d; %v evicted as slow, %v timed out", peak, bound,
		r.metric("http_connections_evicted_total", "reason", "slow"), r.metric("http_slow_clients_total"))
	if peak > bound+1 {
		t.Errorf("peak %d connections held, want at most the bound %d + the one waiting", peak, bound)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
