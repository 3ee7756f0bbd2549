package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The client subcommands talk to a running wxbridge through NATS, so a
// person can try it without writing a client.

const defaultNATS = "nats://127.0.0.1:4222"

func dial(url string, auth *natsAuth) (*nats.Conn, error) {
	opts, err := auth.options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(opts, nats.Name("wxbridge-cli"), nats.Timeout(5*time.Second))...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s (is `wxbridge serve` running?): %w", url, err)
	}
	return nc, nil
}

// payloadFlag reads --data or --file and checks it is JSON.
func payloadFlag(data, file string) ([]byte, error) {
	switch {
	case data != "" && file != "":
		return nil, usagef("give --data or --file, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, &usageError{err}
		}
		data = string(b)
	case data == "":
		data = "{}"
	}
	if !json.Valid([]byte(data)) {
		return nil, usagef("the payload is not valid JSON")
	}
	return []byte(data), nil
}

func cmdPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("publish", stderr, "publish TYPE [--data JSON | --file FILE] [--id ID] [--nats URL]")
	data := f.str("data", "", "", "event payload (JSON)")
	file := f.str("file", "", "", "file holding the event payload")
	id := f.str("id", "", "", "event id, sent as Nats-Msg-Id (republishing the same id is a duplicate)")
	url := f.str("nats", "WXBRIDGE_NATS_URL", defaultNATS, "NATS server URL")
	var auth natsAuth
	auth.register(f)
	prefix := f.str("prefix", "WXBRIDGE_EVENT_PREFIX", "events.", "subject prefix of events")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || strings.ContainsAny(pos[0], " *>") {
		return usagef("want exactly one event TYPE, like statement.issued")
	}
	payload, err := payloadFlag(*data, *file)
	if err != nil {
		return err
	}
	nc, err := dial(*url, &auth)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	m := nats.NewMsg(*prefix + pos[0])
	m.Data = payload
	if *id != "" {
		m.Header.Set(nats.MsgIdHdr, *id)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return fmt.Errorf("publish %s: %w", m.Subject, err)
	}
	dup := ""
	if ack.Duplicate {
		dup = " (duplicate: the stream already has this id)"
	}
	fmt.Fprintf(stdout, "published %s to stream %s, sequence %d%s\n", m.Subject, ack.Stream, ack.Sequence, dup)
	return nil
}

func cmdRequest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("request", stderr, "request SUBJECT [--data JSON] [--nats URL]")
	data := f.str("data", "", "", "request body (JSON)")
	file := f.str("file", "", "", "file holding the request body")
	url := f.str("nats", "WXBRIDGE_NATS_URL", defaultNATS, "NATS server URL")
	var auth natsAuth
	auth.register(f)
	timeout := f.Duration("timeout", 10*time.Second, "how long to wait for the reply")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one SUBJECT, like wxbridge.cmd.bind")
	}
	payload, err := payloadFlag(*data, *file)
	if err != nil {
		return err
	}
	nc, err := dial(*url, &auth)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	reply, err := nc.RequestWithContext(ctx, pos[0], payload)
	if err != nil {
		return fmt.Errorf("request %s: %w", pos[0], err)
	}
	fmt.Fprintln(stdout, string(reply.Data))
	return nil
}

func cmdWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("watch", stderr, "watch [SUBJECT] [--nats URL]\n\nPrints what wxbridge published (default wxbridge.>), from the start of its stream")
	url := f.str("nats", "WXBRIDGE_NATS_URL", defaultNATS, "NATS server URL")
	var auth natsAuth
	auth.register(f)
	stream := f.str("stream", "", "WXBRIDGE", "stream holding the subject")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	subject := "wxbridge.>"
	if len(pos) == 1 {
		subject = pos[0]
	} else if len(pos) > 1 {
		return usagef("want at most one SUBJECT")
	}
	nc, err := dial(*url, &auth)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, *stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return fmt.Errorf("watch %s on stream %s: %w", subject, *stream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var out bytes.Buffer
		fmt.Fprintf(&out, "%s ", m.Subject())
		if e := m.Headers().Get("Wxbridge-Error"); e != "" {
			fmt.Fprintf(&out, "[%s] ", e)
		}
		out.Write(m.Data())
		out.WriteByte('\n')
		_, _ = stdout.Write(out.Bytes())
	})
	if err != nil {
		return err
	}
	defer cc.Stop()
	<-ctx.Done()
	return nil
}
