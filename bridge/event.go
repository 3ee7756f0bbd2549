package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	"github.com/wxbridge/wxbridge/rules"
)

// Limits on what an event may carry. They keep every key the state is
// stored under far below the backends' limits (bbolt: 32 KiB keys), and
// every message the bridge publishes about an event far below NATS'
// max_payload. README "Limits on input" lists them.
const (
	// MaxEventIDBytes bounds an event id (CloudEvents id, Nats-Msg-Id).
	MaxEventIDBytes = 256
	// MaxSourceBytes bounds a CloudEvents source.
	MaxSourceBytes = 512
	// MaxTypeBytes bounds an event type.
	MaxTypeBytes = 256
	// MaxUserIDBytes bounds a system user id (events, commands).
	MaxUserIDBytes = 128
	// MaxOpenIDBytes bounds an openid or unionid (WeChat's are 28 and 29).
	MaxOpenIDBytes = 128
	// MaxRoleBytes bounds a role name and a scope.
	MaxRoleBytes = 256
)

// badEvent is input that can never be processed. It goes to the dead-letter
// subject with its reason.
type badEvent struct{ reason string }

func (e *badEvent) Error() string { return e.reason }

func bad(format string, args ...any) *badEvent { return &badEvent{fmt.Sprintf(format, args...)} }

// rawEvent is one event as it came off the stream: what decodeEvent reads.
type rawEvent struct {
	subject   string
	header    nats.Header
	data      []byte
	streamSeq uint64
	delivered uint64
	published time.Time
}

func rawOf(d *delivery) *rawEvent {
	return &rawEvent{subject: d.msg.Subject, header: d.msg.Header, data: d.msg.Data,
		streamSeq: d.meta.Sequence.Stream, delivered: d.meta.NumDelivered, published: d.meta.Timestamp}
}

// event is a decoded event and its identity in the state.
type event struct {
	*rules.Event
	// key identifies the event in the state: the CloudEvents source and id
	// (the spec's identity) joined by keySep, or the id alone.
	key string
	raw *rawEvent
	// trace is the W3C trace context the event came with (traceparent and
	// tracestate), from a NATS header or the CloudEvents distributed
	// tracing extension.
	trace propagation.MapCarrier
}

// setTrace keeps a W3C trace context, if there is one.
func (ev *event) setTrace(traceparent, tracestate string) {
	if traceparent == "" || len(traceparent) > 128 || len(tracestate) > 512 {
		return
	}
	ev.trace = propagation.MapCarrier{"traceparent": traceparent}
	if tracestate != "" {
		ev.trace["tracestate"] = tracestate
	}
}

// keySep joins a CloudEvents source and id in an event key. Neither may
// contain it (control characters are refused in both).
const keySep = "\x1f"

// splitEventKey returns the source and id an event key was made of.
func splitEventKey(key string) (source, id string) {
	if s, i, ok := strings.Cut(key, keySep); ok {
		return s, i
	}
	return "", key
}

// header reads a header by name, case-insensitively (NATS header names are
// case-insensitive; nats.Header is a plain map). Several values that agree
// are one value; values that disagree make an event ambiguous.
func (r *rawEvent) header1(name string) (string, error) {
	var val string
	found := false
	for k, vs := range r.header {
		if !strings.EqualFold(k, name) {
			continue
		}
		for _, v := range vs {
			if found && v != val {
				return "", bad("header %s has conflicting values", name)
			}
			val, found = v, true
		}
	}
	return val, nil
}

// decodeEvent reads a delivery as a CloudEvent (structured JSON, or binary
// mode with ce-* headers) or as a plain JSON payload whose type is the
// subject without the event prefix.
//
// The event's identity is the CloudEvents source and id, else the
// Nats-Msg-Id header, else the stream sequence: all the same on every
// redelivery. Events published before LegacyIDsBefore (the day this
// version first ran on an older state) keep the id alone, as the records
// written for them then did.
func (b *Bridge) decodeEvent(r *rawEvent) (*event, error) {
	if len(r.data) > b.cfg.MaxEventBytes {
		return nil, bad("event is %d bytes, over the %d byte limit", len(r.data), b.cfg.MaxEventBytes)
	}
	ev := &event{Event: &rules.Event{Subject: r.subject, Time: r.published}, raw: r}
	body := bytes.TrimSpace(r.data)
	if len(body) == 0 {
		return nil, bad("event body is empty")
	}
	if !utf8.Valid(body) {
		// JSON is UTF-8 (RFC 8259); Go would quietly turn the bad bytes
		// into U+FFFD and send them on.
		return nil, bad("event body is not JSON: it is not UTF-8")
	}
	// The body is parsed once: it is the event's data, or a structured
	// CloudEvent whose attributes and data are read from the result.
	var body1 any
	if err := decodeJSON(&body1, body); err != nil {
		return nil, bad("event body is not JSON: %s", clip(err.Error()))
	}
	specversion, err := r.header1("ce-specversion")
	if err != nil {
		return nil, err
	}
	object, _ := body1.(map[string]any)
	_, structuredCE := object["specversion"]
	switch {
	case specversion != "":
		if err := binaryCloudEvent(ev.Event, r); err != nil {
			return nil, err
		}
		ev.Data = body1
	case structuredCE:
		if err := structuredCloudEvent(ev, object); err != nil {
			return nil, err
		}
	default:
		if !strings.HasPrefix(r.subject, b.cfg.EventPrefix) || len(r.subject) == len(b.cfg.EventPrefix) {
			return nil, bad("event on %s has no type (subject is not under %q)", clip(r.subject), b.cfg.EventPrefix)
		}
		ev.Type = strings.TrimPrefix(r.subject, b.cfg.EventPrefix)
		ev.Data = body1
	}
	if ev.Type == "" {
		return nil, bad("event has no type")
	}
	if ev.trace == nil {
		// A NATS header, or the binary-mode extension attribute. Tracing
		// never refuses an event: ambiguous headers are just not used.
		for _, name := range []string{"traceparent", "ce-traceparent"} {
			if tp, err := r.header1(name); err == nil && tp != "" {
				ts, _ := r.header1(strings.Replace(name, "parent", "state", 1))
				ev.setTrace(tp, ts)
				break
			}
		}
	}
	if ev.ID == "" {
		if ev.ID, err = r.header1(nats.MsgIdHdr); err != nil {
			return nil, err
		}
	}
	if ev.ID == "" {
		if r.streamSeq == 0 {
			return nil, bad("event has no id and no stream sequence")
		}
		ev.ID = "seq:" + strconv.FormatUint(r.streamSeq, 10)
	}
	for _, f := range []struct {
		what, v string
		max     int
	}{{"id", ev.ID, MaxEventIDBytes}, {"source", ev.Source, MaxSourceBytes}, {"type", ev.Type, MaxTypeBytes}} {
		if err := checkID(f.what, f.v, f.max); err != nil {
			return nil, err
		}
	}
	ev.key = ev.ID
	if ev.Source != "" && !r.published.Before(b.cfg.LegacyIDsBefore) {
		ev.key = ev.Source + keySep + ev.ID
	}
	return ev, nil
}

// checkID refuses an identifier that could not be stored or shown safely:
// too long, not UTF-8, or with control characters.
func checkID(what, v string, limit int) error {
	switch {
	case len(v) > limit:
		return bad("event %s is %d bytes, over the %d byte limit", what, len(v), limit)
	case !utf8.ValidString(v):
		return bad("event %s is not UTF-8", what)
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return bad("event %s %s contains a control character", what, strconv.QuoteToASCII(clip(v)))
	}
	return nil
}

// clip shortens a value quoted in an error or a log line: no input is ever
// echoed back at length.
func clip(s string) string { return clipN(s, 80) }

// clipTo cuts s to about n bytes, on a rune boundary, and says how long it
// was.
func clipTo(s string, n int) string {
	marker := fmt.Sprintf("…(%d bytes)", len(s))
	cut := max(n-len(marker), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + marker
}

// decodeJSON decodes one JSON value, all of data, keeping numbers exact
// (amounts, 19-digit ids).
func decodeJSON(v *any, data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// structuredCloudEvent reads a structured-mode CloudEvent from its decoded
// object. Attributes are strings; data is any JSON, data_base64 base64 of
// JSON.
func structuredCloudEvent(ev *event, ce map[string]any) error {
	attr := func(name string) (string, error) {
		v, ok := ce[name]
		if !ok || v == nil {
			return "", nil
		}
		s, ok := v.(string)
		if !ok {
			return "", bad("CloudEvent %s is not a string", name)
		}
		return s, nil
	}
	var err error
	var tm, data64, traceparent, tracestate string
	for _, a := range []struct {
		name string
		to   *string
	}{{"id", &ev.ID}, {"source", &ev.Source}, {"type", &ev.Type}, {"time", &tm}, {"data_base64", &data64},
		{"traceparent", &traceparent}, {"tracestate", &tracestate}} {
		if *a.to, err = attr(a.name); err != nil {
			return err
		}
	}
	if ev.Type == "" {
		return bad("CloudEvent has no type")
	}
	ev.setTrace(traceparent, tracestate)
	if tm != "" {
		t, err := time.Parse(time.RFC3339Nano, tm)
		if err != nil {
			return bad("CloudEvent time %q: not RFC 3339", clip(tm))
		}
		ev.Time = t
	}
	if data64 != "" {
		raw, err := base64.StdEncoding.DecodeString(data64)
		if err != nil {
			return bad("CloudEvent data_base64: %v", err)
		}
		if !utf8.Valid(raw) {
			return bad("CloudEvent data_base64 is not JSON")
		}
		if err := decodeJSON(&ev.Data, raw); err != nil {
			return bad("CloudEvent data_base64 is not JSON")
		}
		return nil
	}
	ev.Data = ce["data"]
	return nil
}

// binaryCloudEvent reads the ce-* headers of a binary-mode CloudEvent. The
// NATS protocol binding carries attribute values percent-encoded, as the
// HTTP one does; names are matched case-insensitively.
func binaryCloudEvent(ev *rules.Event, r *rawEvent) error {
	get := func(k string) (string, error) {
		v, err := r.header1("ce-" + k)
		if err != nil || v == "" {
			return v, err
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return "", bad("CloudEvent header ce-%s: bad percent-encoding", k)
		}
		return dv, nil
	}
	var err error
	if ev.ID, err = get("id"); err != nil {
		return err
	}
	if ev.Source, err = get("source"); err != nil {
		return err
	}
	if ev.Type, err = get("type"); err != nil {
		return err
	}
	if ev.Type == "" {
		return bad("CloudEvent (binary mode) has no ce-type header")
	}
	s, err := get("time")
	if err != nil {
		return err
	}
	if s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return bad("CloudEvent ce-time %q: not RFC 3339", clip(s))
		}
		ev.Time = t
	}
	return nil
}
