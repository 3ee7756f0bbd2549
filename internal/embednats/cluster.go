package embednats

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterOptions configure an in-process cluster of nats-servers.
type ClusterOptions struct {
	// N is the number of servers. Default 3.
	N int
	// Dir holds each server's JetStream store, in Dir/n<i>. Required.
	Dir string
	// Logger receives every server's log, tagged with its name.
	Logger *slog.Logger
	// Configure, if set, adjusts server i's options before it starts
	// (accounts, users, permissions, TLS). It is called again when a
	// stopped server starts.
	Configure func(i int, o *server.Options)
	// Account is the account whose streams LeaderOf looks at. Default the
	// global account.
	Account string
}

// Cluster is N servers on loopback joined by routes, each with JetStream
// and a store of its own: a replicated JetStream in one process, for
// tests that stop and restart a node. Safe for concurrent use.
type Cluster struct {
	opts    ClusterOptions
	client  []int // client port of each server
	routes  []int // cluster port of each server
	mu      sync.Mutex
	servers []*server.Server // nil while stopped
}

// StartCluster starts the servers and waits until JetStream has a meta
// leader that every server follows.
func StartCluster(opts ClusterOptions) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("embedded nats cluster: a store directory is required")
	}
	if opts.N <= 0 {
		opts.N = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Account == "" {
		opts.Account = server.DEFAULT_GLOBAL_ACCOUNT
	}
	ports, err := freePorts(2 * opts.N)
	if err != nil {
		return nil, fmt.Errorf("embedded nats cluster: %w", err)
	}
	c := &Cluster{opts: opts, client: ports[:opts.N], routes: ports[opts.N:], servers: make([]*server.Server, opts.N)}
	// Every server must be up before any can elect a JetStream leader:
	// start them all, then wait.
	for i := range opts.N {
		if err := c.launch(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	for i := range opts.N {
		if err := c.ready(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) name(i int) string { return fmt.Sprintf("n%d", i) }

// launch starts server i without waiting for it.
func (c *Cluster) launch(i int) error {
	var routes []string
	for j, p := range c.routes {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
		}
	}
	so := &server.Options{
		ServerName: c.name(i),
		Host:       "127.0.0.1",
		Port:       c.client[i],
		JetStream:  true,
		StoreDir:   filepath.Join(c.opts.Dir, c.name(i)),
		NoSigs:     true,
		MaxPayload: 8 << 20,
		Cluster:    server.ClusterOpts{Name: "wxbridge", Host: "127.0.0.1", Port: c.routes[i]},
		Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
	}
	if c.opts.Configure != nil {
		c.opts.Configure(i, so)
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return fmt.Errorf("embedded nats server %s: %w", c.name(i), err)
	}
	ns.SetLoggerV2(&slogLogger{log: c.opts.Logger.With("component", "nats-server", "server", c.name(i))}, false, false, false)
	ns.Start()
	c.mu.Lock()
	c.servers[i] = ns
	c.mu.Unlock()
	return nil
}

// ready waits until server i accepts clients and its JetStream follows a
// meta leader.
func (c *Cluster) ready(i int) error {
	ns := c.server(i)
	if ns == nil || !ns.ReadyForConnections(15*time.Second) {
		return fmt.Errorf("embedded nats server %s did not start (port %d in use?)", c.name(i), c.client[i])
	}
	deadline := time.Now().Add(30 * time.Second)
	for !ns.JetStreamIsCurrent() {
		if time.Now().After(deadline) {
			return fmt.Errorf("embedded nats server %s: JetStream found no meta leader within 30s", c.name(i))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (c *Cluster) server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// URLs are the client URLs of every server, running or not: a client
// given all of them reconnects to one that runs.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.client))
	for i, p := range c.client {
		out[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	return out
}

// URL is URLs joined with commas, as nats.Connect and --nats take them.
func (c *Cluster) URL() string { return strings.Join(c.URLs(), ",") }

// Stop shuts server i down and waits until it has; its store stays.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	ns := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// Start starts a stopped server i again on its ports and store, and waits
// until its JetStream follows the cluster again.
func (c *Cluster) Start(i int) error {
	if c.server(i) != nil {
		return fmt.Errorf("embedded nats server %s is running", c.name(i))
	}
	if err := c.launch(i); err != nil {
		return err
	}
	return c.ready(i)
}

// LeaderOf returns the index of the running server that leads stream, or
// -1 when none does (an election under way).
func (c *Cluster) LeaderOf(stream string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ns := range c.servers {
		if ns != nil && ns.JetStreamIsStreamLeader(c.opts.Account, stream) {
			return i
		}
	}
	return -1
}

// Shutdown stops every server.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for i := range c.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Stop(i)
		}()
	}
	wg.Wait()
}

// freePorts finds n loopback ports nothing listens on. They are held
// until all are found, so the n are distinct.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}
