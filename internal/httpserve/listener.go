package httpserve

import (
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener bounds the connections open at once.
//
// At the bound, closing the newest connection would refuse exactly the
// clients that are quick, and waiting alone would let clients that send
// nothing (or a byte a second) decide how long everyone else waits. So a
// new connection takes the place of one that can spare it: an idle
// keep-alive connection (clients must expect those to close), else the one
// that has been sending its request for longest, if that is longer than
// slowAfter. Only when every connection is busy being answered does Accept
// wait; new connections then queue in the kernel's listen backlog, which
// costs the process no descriptor. At most one accepted connection waits
// for a slot, so the process holds at most max+1 connections.
type limitListener struct {
	net.Listener
	slots     chan struct{} // one token per open connection
	slowAfter time.Duration
	m         *metrics

	mu    sync.Mutex
	conns map[*trackedConn]struct{}

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func newLimitListener(ln net.Listener, max int, slowAfter time.Duration, m *metrics) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), slowAfter: slowAfter, m: m,
		conns: map[*trackedConn]struct{}{}, done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if err := l.acquire(); err != nil {
		_ = c.Close()
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	tc.set(reading)
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	l.m.open.Inc()
	return tc, nil
}

// acquire takes a slot for a connection just accepted, making room at the
// bound or waiting for it.
func (l *limitListener) acquire() error {
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	l.m.full.Inc()
	// While waiting, look again now and then: a connection that was
	// quick a moment ago may have become slow.
	recheck := time.NewTicker(min(l.slowAfter/4, 250*time.Millisecond))
	defer recheck.Stop()
	for {
		if victim, reason := l.victim(time.Now()); victim != nil {
			l.m.evicted.WithLabelValues(reason).Inc()
			_ = victim.Close() // frees its slot at once
		}
		select {
		case l.slots <- struct{}{}:
			return nil
		case <-recheck.C:
		case <-l.done:
			return net.ErrClosed
		}
	}
}

// victim is the connection that can best spare its slot, if any.
func (l *limitListener) victim(now time.Time) (*trackedConn, string) {
	slowSince := now.Add(-l.slowAfter).UnixNano()
	var idleC, slowC *trackedConn
	var idleAt, slowAt int64
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		at := c.since.Load()
		switch connState(c.state.Load()) {
		case idle:
			if idleC == nil || at < idleAt {
				idleC, idleAt = c, at
			}
		case reading:
			if at <= slowSince && (slowC == nil || at < slowAt) {
				slowC, slowAt = c, at
			}
		}
	}
	if idleC != nil {
		return idleC, "idle"
	}
	if slowC != nil {
		return slowC, "slow"
	}
	return nil, ""
}

// connState follows a connection through the server's HTTP/1 loop.
func (l *limitListener) connState(c net.Conn, s http.ConnState) {
	if tc, ok := c.(*trackedConn); ok && s == http.StateIdle {
		tc.set(idle)
		tc.requested.Store(false)
	}
}

func (l *limitListener) close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.Listener.Close()
		if errors.Is(l.closeErr, net.ErrClosed) {
			l.closeErr = nil // http.Server closed it first
		}
	})
	return l.closeErr
}

// Close stops Accept, including one waiting for a slot.
func (l *limitListener) Close() error { return l.close() }

// connState is what a connection is doing, as far as making room goes.
type connState int32

const (
	reading  connState = iota // accepted, or a request begun and not read in full
	handling                  // the request is read; its handler answers
	idle                      // kept alive between requests
)

// trackedConn is a connection holding a slot until it is closed.
type trackedConn struct {
	net.Conn
	l         *limitListener
	state     atomic.Int32
	since     atomic.Int64 // UnixNano of the last change of state
	requested atomic.Bool  // the current request's headers are in
	timedOut  atomic.Bool
	once      sync.Once
	err       error
}

func (c *trackedConn) set(s connState) {
	c.state.Store(int32(s))
	c.since.Store(time.Now().UnixNano())
}

// The methods below are safe on a nil receiver: a request that did not
// come through a Server's listener.

// requestIn notes that a request's headers are in: a read deadline passing
// from now on is the body's (counted by the route) or the server's own
// (ending its watch for the client leaving), not the headers'.
func (c *trackedConn) requestIn() {
	if c != nil {
		c.requested.Store(true)
	}
}

// handling marks the request read: the connection is no longer waiting on
// its client.
func (c *trackedConn) handling() {
	if c != nil {
		c.set(handling)
	}
}

// tooSlow counts the connection's client as too slow, once.
func (c *trackedConn) tooSlow() {
	if c != nil && c.timedOut.CompareAndSwap(false, true) {
		c.l.m.timedOut.Inc()
	}
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.state.CompareAndSwap(int32(idle), int32(reading)) {
		// A kept-alive connection's next request has begun.
		c.since.Store(time.Now().UnixNano())
	}
	if err != nil && !c.requested.Load() && connState(c.state.Load()) == reading && errors.Is(err, os.ErrDeadlineExceeded) {
		c.tooSlow() // headers not in by ReadHeaderTimeout
	}
	return n, err
}

// Close closes the connection and frees its slot, once.
func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.err = c.Conn.Close()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.m.open.Dec()
		<-c.l.slots
	})
	return c.err
}
