package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a dead letter.
const (
	hdrError       = "Wxbridge-Error"
	hdrSubject     = "Wxbridge-Subject"
	hdrStreamSeq   = "Wxbridge-Stream-Seq"
	hdrOriginalID  = "Wxbridge-Original-Msg-Id"
	hdrTruncated   = "Wxbridge-Truncated"
	deadHeadroom   = 1024 // bytes kept free of a dead letter's size limit
	maxErrorHeader = 1024
)

// deadLetter publishes an event that can never be processed to the
// dead-letter subject: its body and headers, the reason in Wxbridge-Error,
// where it came from in Wxbridge-Subject and Wxbridge-Stream-Seq. The
// event's own Nats-* and Wxbridge-* headers are not copied: the first would
// steer the publish (an expected-stream header makes it fail), the second
// would pose as the bridge's. A dead letter that would not fit the server's
// max_payload is cut to fit, marked in Wxbridge-Truncated; the stream
// sequence still finds the whole original in the event stream.
func (b *Bridge) deadLetter(ctx context.Context, raw *rawEvent, reason string) error {
	m := deadMessage(b.deadSubject(), b.cfg.EventStream, raw, reason, b.cfg.Conn.MaxPayload())
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.js().PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish dead letter of %s seq %d: %w", b.cfg.EventStream, raw.streamSeq, err)
	}
	return nil
}

func deadMessage(subject, stream string, raw *rawEvent, reason string, limit int64) *nats.Msg {
	m := nats.NewMsg(subject)
	seq := strconv.FormatUint(raw.streamSeq, 10)
	own := nats.Header{}
	own.Set(hdrError, clipN(reason, maxErrorHeader))
	own.Set(hdrSubject, clipN(raw.subject, 256))
	own.Set(hdrStreamSeq, seq)
	// One dead letter per stream message, however often it is redelivered
	// or whichever path finds it dead.
	own.Set(nats.MsgIdHdr, "dead:"+stream+":"+seq)
	for k, vs := range raw.header {
		lk := strings.ToLower(k)
		switch {
		case lk == strings.ToLower(nats.MsgIdHdr):
			own.Set(hdrOriginalID, clipN(vs[0], MaxEventIDBytes))
		case strings.HasPrefix(lk, "nats-"), strings.HasPrefix(lk, "wxbridge-"):
		default:
			m.Header[k] = vs
		}
	}
	budget := int(limit) - deadHeadroom
	var cut []string
	if headerSize(m.Header)+headerSize(own) > budget/2 {
		cut = append(cut, fmt.Sprintf("headers (%d bytes) dropped", headerSize(m.Header)))
		m.Header = nats.Header{}
	}
	for k, vs := range own {
		m.Header[k] = vs
	}
	m.Data = raw.data
	if room := budget - headerSize(m.Header) - 64; len(m.Data) > room {
		room = max(room, 0)
		cut = append(cut, fmt.Sprintf("body cut from %d to %d bytes", len(m.Data), room))
		m.Data = m.Data[:room]
	}
	if len(cut) > 0 {
		m.Header.Set(hdrTruncated, strings.Join(cut, "; ")+"; the original is seq "+seq+" of "+stream)
	}
	return m
}

// headerSize is what h adds to a NATS message on the wire.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// advisory is the part of JetStream's max-deliveries advisory the bridge
// reads.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// advisoryStream keeps JetStream's max-deliveries advisories of the event
// consumer, so that an event the server gave up on reaches the dead-letter
// subject even when no bridge was running at that moment.
func (b *Bridge) advisorySubject() string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + b.cfg.EventStream + "." + b.cfg.Consumer
}

// consumeAdvisories dead-letters every event the consumer stopped
// delivering because it reached MaxDeliver. It returns a function that
// stops it.
func (b *Bridge) consumeAdvisories(ctx context.Context) (stop func(), err error) {
	cons, err := b.js().Consumer(ctx, b.advisoryStream(), b.cfg.Consumer)
	if err != nil {
		return nil, fmt.Errorf("advisory consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.handleAdvisory(ctx, m.Data()); err != nil {
			b.repeats.warn(b.log, "max-deliveries advisory: will retry", "err", err)
			_ = m.NakWithDelay(5 * time.Second)
			return
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(16))
	if err != nil {
		return nil, fmt.Errorf("consume advisories: %w", err)
	}
	return cc.Drain, nil
}

func (b *Bridge) handleAdvisory(ctx context.Context, data []byte) error {
	var a advisory
	if err := json.Unmarshal(data, &a); err != nil || a.StreamSeq == 0 {
		b.log.Warn("unreadable max-deliveries advisory dropped", "bytes", len(data))
		return nil
	}
	reason := fmt.Sprintf("delivered %d times without being processed (the consumer's MaxDeliver)", a.Deliveries)
	raw := &rawEvent{streamSeq: a.StreamSeq}
	stream, err := b.js().Stream(ctx, b.cfg.EventStream)
	if err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	sm, err := stream.GetMsg(ctx, a.StreamSeq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		reason += "; the event is no longer in the stream"
	case err != nil:
		return fmt.Errorf("read event seq %d: %w", a.StreamSeq, err)
	default:
		raw.subject, raw.header, raw.data, raw.published = sm.Subject, sm.Header, sm.Data, sm.Time
	}
	b.log.Error("event given up after its deliveries ran out; dead letter", "stream_seq", a.StreamSeq, "deliveries", a.Deliveries)
	if err := b.deadLetter(ctx, raw, reason); err != nil {
		return err
	}
	b.metrics.dead.Inc()
	return nil
}

// clipN shortens s to at most n bytes (on a rune boundary) with a marker.
func clipN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return clipTo(s, n)
}
