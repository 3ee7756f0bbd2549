// Package embednats runs a nats-server with JetStream inside the wxbridge
// process, for `serve` without --nats, for tests and for benchmarks.
//
// The server never installs signal handlers (the embedding program owns
// SIGINT/SIGTERM), logs through slog, and fails loudly when JetStream does
// not start instead of exiting or failing silently.
package embednats

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configure an embedded server.
type Options struct {
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// Listen is a host:port for clients outside the process, "" for none
	// (in-process connections only), or "127.0.0.1:0" for a free port.
	Listen string
	// SyncAlways fsyncs every JetStream write. Off by default: the
	// filestore syncs every two minutes and on clean shutdown, so only a
	// machine crash (not a process crash) can lose recent messages.
	SyncAlways bool
	Logger     *slog.Logger
	// Name is the server's name (default "wxbridge"); servers of one
	// cluster need different names.
	Name string
	// ClusterListen, if set, is the host:port this server takes routes
	// on, and Routes the other servers' route URLs: a cluster of separate
	// processes (`wxbridge nats-server`, for bench).
	ClusterListen string
	Routes        []string
}

// Server is a running embedded nats-server.
type Server struct {
	ns *server.Server
}

// Start starts a server and waits until it accepts connections with
// JetStream enabled.
func Start(opts Options) (*Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("embedded nats: a store directory is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	name := opts.Name
	if name == "" {
		name = "wxbridge"
	}
	so := &server.Options{
		ServerName: name,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoSigs:     true,
		SyncAlways: opts.SyncAlways,
		DontListen: opts.Listen == "",
		// 8 MiB payloads are far above what the bridge accepts; the server
		// default (1 MiB) would refuse an oversized event before the bridge
		// could dead-letter it with a reason.
		MaxPayload: 8 << 20,
	}
	if opts.Listen != "" {
		host, port, err := net.SplitHostPort(opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen address %q: %w", opts.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen address %q: bad port", opts.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		so.Host, so.Port = host, p
	}
	if opts.ClusterListen != "" {
		host, port, err := net.SplitHostPort(opts.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats cluster address %q: %w", opts.ClusterListen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded nats cluster address %q: bad port", opts.ClusterListen)
		}
		so.Cluster = server.ClusterOpts{Name: "wxbridge", Host: host, Port: p}
		so.Routes = server.RoutesFromStr(strings.Join(opts.Routes, ","))
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.SetLoggerV2(&slogLogger{log: opts.Logger.With("component", "nats-server")}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		if opts.Listen != "" {
			return nil, fmt.Errorf("embedded nats did not start (is %s already in use?)", opts.Listen)
		}
		return nil, errors.New("embedded nats did not start")
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats: JetStream did not start (store %s)", opts.StoreDir)
	}
	return &Server{ns: ns}, nil
}

// Connect opens a client connection: in-process, with no TCP in between.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(s.ns), nats.Name("wxbridge")}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// ClientURL is the TCP URL of the server, or "" if it does not listen.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// Shutdown stops the server and waits until it has.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// slogLogger adapts nats-server logging to slog. Fatalf does not exit: the
// embedding program decides what a failure means.
type slogLogger struct{ log *slog.Logger }

func (l *slogLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *slogLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
