package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/wxbridge/wxbridge/internal/embednats"
)

// cmdNATSServer runs a NATS server with JetStream on TCP until SIGINT or
// SIGTERM. It is internal: `wxbridge bench` runs it as a separate process so
// that it can restart NATS under a running bridge without a nats-server
// binary on the machine.
func cmdNATSServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("nats-server", stderr, "nats-server --store DIR [--listen ADDR] [--name N --cluster-listen ADDR --routes URLS]  (internal, for bench)")
	store := f.str("store", "", "", "JetStream store directory")
	listen := f.str("listen", "", "127.0.0.1:4222", "client address")
	name := f.str("name", "", "wxbridge", "server name (unique within a cluster)")
	clusterListen := f.str("cluster-listen", "", "", "host:port to take cluster routes on; empty: no cluster")
	routes := f.str("routes", "", "", "comma-separated route URLs of the other servers (nats://host:port)")
	if pos, err := f.parse(args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	if *store == "" {
		return usagef("--store is required")
	}
	log := newLogger(stderr)
	var rs []string
	if *routes != "" {
		rs = strings.Split(*routes, ",")
	}
	ns, err := embednats.Start(embednats.Options{StoreDir: *store, Listen: *listen, Logger: log, Name: *name,
		ClusterListen: *clusterListen, Routes: rs})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "nats-server listening on %s\n", ns.ClientURL())
	<-ctx.Done()
	ns.Shutdown()
	return nil
}
