package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultMaxConns          = 1024
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 2 * time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 32 << 10
	DefaultSlowAfter         = 500 * time.Millisecond
)

// Config is how a Server bounds its clients. Zero fields take the defaults.
type Config struct {
	// MaxConns bounds the connections open at once; each costs a file
	// descriptor and a goroutine. Default DefaultMaxConns.
	MaxConns int
	// ReadHeaderTimeout bounds reading a request's headers, from its first
	// byte (or from the connection's acceptance). Default 5 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout and WriteTimeout bound a request no route claims (404,
	// 405); a route sets its own. WriteTimeout is long by default (2 min)
	// because net/http/pprof refuses profiles longer than it. Defaults
	// 10 s and 2 min.
	ReadTimeout, WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection with no request. It can
	// be long (default 2 min): at the bound idle connections are closed
	// first to make room.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers. Default 32 KiB.
	MaxHeaderBytes int
	// SlowAfter is how long a connection may take to send one request
	// before, at the bound, it may be closed to make room for a new one.
	// A real client sends its request with the connection, so it is
	// usually in the socket before the connection is accepted. It also
	// paces the room made under a flood: MaxConns/SlowAfter connections a
	// second, so the default (500 ms) drains a full listen backlog (4096)
	// in about 2 s at the default bound, within the 5 s WeChat waits.
	SlowAfter time.Duration
	// Registerer receives the connection and refusal metrics (optional).
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.SlowAfter, DefaultSlowAfter)
}

// Server is an http.Server on a listener that bounds its connections.
type Server struct {
	srv *http.Server
	ln  *limitListener
	m   *metrics
}

// New prepares a server for h on ln; Serve starts it. The Server owns ln
// from now on: Close and Shutdown close it.
func New(ln net.Listener, h http.Handler, cfg Config) *Server {
	cfg.setDefaults()
	m := newMetrics(cfg.Registerer)
	l := newLimitListener(ln, cfg.MaxConns, cfg.SlowAfter, m)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			connOf(r).requestIn()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ConnState:         l.connState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*trackedConn); ok {
				return context.WithValue(ctx, connKey{}, tc)
			}
			return ctx
		},
	}
	return &Server{srv: srv, ln: l, m: m}
}

// Serve accepts connections until Shutdown or Close, then returns
// http.ErrServerClosed.
func (s *Server) Serve() error { return s.srv.Serve(s.ln) }

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops accepting, waits for requests under way to finish (or ctx
// to end) and closes the connections.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	return errors.Join(err, s.ln.close())
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	err := s.srv.Close()
	return errors.Join(err, s.ln.close())
}

// connKey is the request context key of the connection a request came on.
type connKey struct{}

func connOf(r *http.Request) *trackedConn {
	tc, _ := r.Context().Value(connKey{}).(*trackedConn)
	return tc
}

// metrics are the server's Prometheus series.
type metrics struct {
	open     prometheus.Gauge
	full     prometheus.Counter
	evicted  *prometheus.CounterVec // reason: idle, slow
	timedOut prometheus.Counter
	refused  *prometheus.CounterVec // reason: body_too_large, body_not_allowed
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "http_connections_open",
			Help: "HTTP connections open now (bounded by --max-conns)."}),
		full: prometheus.NewCounter(prometheus.CounterOpts{Name: "http_connections_at_bound_total",
			Help: "Connections accepted while the connection bound was reached."}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_connections_evicted_total",
			Help: "Connections closed to make room at the bound, by reason (idle: kept alive with no request; slow: still sending its request)."}, []string{"reason"}),
		timedOut: prometheus.NewCounter(prometheus.CounterOpts{Name: "http_slow_clients_total",
			Help: "Connections whose client did not send its request (headers or body) within the deadline."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_refused_total",
			Help: "Requests refused before their body was read, by reason (body_too_large, body_not_allowed)."}, []string{"reason"}),
	}
	for _, reason := range []string{"idle", "slow"} {
		m.evicted.WithLabelValues(reason)
	}
	for _, reason := range []string{"body_too_large", "body_not_allowed"} {
		m.refused.WithLabelValues(reason)
	}
	if reg != nil {
		reg.MustRegister(m.open, m.full, m.evicted, m.timedOut, m.refused)
	}
	return m
}
