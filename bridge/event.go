package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

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
	if !json.Valid(body) {
		return nil, bad("event body is not JSON")
	}
	if !utf8.Valid(body) {
		// JSON is UTF-8 (RFC 8259); Go would quietly turn the bad bytes
		// into U+FFFD and send them on.
		return nil, bad("event body is not JSON: it is not UTF-8")
	}
	specversion, err := r.header1("ce-specversion")
	if err != nil {
		return nil, err
	}
	binaryCE := specversion != ""
	// An object body is decoded once: it either is a structured CloudEvent
	// or becomes the event's data.
	var object any
	structuredCE := false
	if !binaryCE && body[0] == '{' {
		if err := decodeJSON(&object, body); err != nil {
			return nil, bad("event data: %v", err)
		}
		m, _ := object.(map[string]any)
		_, structuredCE = m["specversion"]
	}
	switch {
	case binaryCE:
		if err := binaryCloudEvent(ev.Event, r, body); err != nil {
			return nil, err
		}
	case structuredCE:
		if err := structuredCloudEvent(ev.Event, body); err != nil {
			return nil, err
		}
	default:
		if !strings.HasPrefix(r.subject, b.cfg.EventPrefix) || len(r.subject) == len(b.cfg.EventPrefix) {
			return nil, bad("event on %s has no type (subject is not under %q)", clip(r.subject), b.cfg.EventPrefix)
		}
		ev.Type = strings.TrimPrefix(r.subject, b.cfg.EventPrefix)
		if object != nil {
			ev.Data = object
		} else if err := decodeData(ev.Event, body); err != nil {
			return nil, err
		}
	}
	if ev.Type == "" {
		return nil, bad("event has no type")
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

func decodeData(ev *rules.Event, data []byte) error {
	if err := decodeJSON(&ev.Data, data); err != nil {
		return bad("event data: %v", err)
	}
	return nil
}

func decodeJSON(v *any, data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep amounts and 19-digit ids exact
	return dec.Decode(v)
}

type cloudEvent struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	Time        string          `json:"time"`
	Data        json.RawMessage `json:"data"`
	DataBase64  string          `json:"data_base64"`
}

func structuredCloudEvent(ev *rules.Event, body []byte) error {
	var ce cloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		return bad("CloudEvent: %s", clip(err.Error()))
	}
	if ce.Type == "" {
		return bad("CloudEvent has no type")
	}
	ev.ID, ev.Source, ev.Type = ce.ID, ce.Source, ce.Type
	if ce.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, ce.Time)
		if err != nil {
			return bad("CloudEvent time %q: not RFC 3339", clip(ce.Time))
		}
		ev.Time = t
	}
	data := []byte(ce.Data)
	if ce.DataBase64 != "" {
		raw, err := base64.StdEncoding.DecodeString(ce.DataBase64)
		if err != nil {
			return bad("CloudEvent data_base64: %v", err)
		}
		if !json.Valid(raw) {
			return bad("CloudEvent data_base64 is not JSON")
		}
		data = raw
	}
	if len(data) == 0 {
		return nil
	}
	return decodeData(ev, data)
}

// binaryCloudEvent reads the ce-* headers of a binary-mode CloudEvent. The
// NATS protocol binding carries attribute values percent-encoded, as the
// HTTP one does; names are matched case-insensitively.
func binaryCloudEvent(ev *rules.Event, r *rawEvent, body []byte) error {
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
	return decodeData(ev, body)
}
