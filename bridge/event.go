package bridge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/wxbridge/wxbridge/rules"
)

// badEvent is input that can never be processed. It goes to the dead-letter
// subject with its reason.
type badEvent struct{ reason string }

func (e *badEvent) Error() string { return e.reason }

func bad(format string, args ...any) *badEvent { return &badEvent{fmt.Sprintf(format, args...)} }

// decodeEvent reads a delivery as a CloudEvent (structured JSON, or binary
// mode with ce-* headers) or as a plain JSON payload whose type is the
// subject without the event prefix.
//
// The event id is the CloudEvents id, else the Nats-Msg-Id header, else the
// stream sequence: all three are the same on every redelivery.
func (b *Bridge) decodeEvent(msg *message.Message) (*rules.Event, error) {
	md := msg.Metadata
	if len(msg.Payload) > b.cfg.MaxEventBytes {
		return nil, bad("event is %d bytes, over the %d byte limit", len(msg.Payload), b.cfg.MaxEventBytes)
	}
	if e := md.Get(mdHeaderErr); e != "" {
		return nil, bad("bad NATS headers: %s", e)
	}
	ev := &rules.Event{Subject: md.Get(mdSubject)}
	if t, err := time.Parse(time.RFC3339Nano, md.Get(mdPublished)); err == nil {
		ev.Time = t
	}
	body := bytes.TrimSpace(msg.Payload)
	if len(body) == 0 {
		return nil, bad("event body is empty")
	}
	if !json.Valid(body) {
		return nil, bad("event body is not JSON")
	}
	binaryCE := md.Get("ce-specversion") != "" || md.Get("Ce-Specversion") != ""
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
		if err := binaryCloudEvent(ev, md, body); err != nil {
			return nil, err
		}
	case structuredCE:
		if err := structuredCloudEvent(ev, body); err != nil {
			return nil, err
		}
	default:
		if !strings.HasPrefix(ev.Subject, b.cfg.EventPrefix) || len(ev.Subject) == len(b.cfg.EventPrefix) {
			return nil, bad("event on %q has no type (subject is not under %q)", ev.Subject, b.cfg.EventPrefix)
		}
		ev.Type = strings.TrimPrefix(ev.Subject, b.cfg.EventPrefix)
		if object != nil {
			ev.Data = object
		} else if err := decodeData(ev, body); err != nil {
			return nil, err
		}
	}
	if ev.Type == "" {
		return nil, bad("event has no type")
	}
	if ev.ID == "" {
		ev.ID = md.Get(mdMsgID)
	}
	if ev.ID == "" {
		seq := md.Get(mdStreamSeq)
		if seq == "" {
			return nil, bad("event has no id and no stream sequence")
		}
		ev.ID = "seq:" + seq
	}
	if strings.ContainsRune(ev.ID, 0) {
		return nil, bad("event id contains a NUL byte")
	}
	return ev, nil
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
	Type        string          `json:"type"`
	Time        string          `json:"time"`
	Data        json.RawMessage `json:"data"`
	DataBase64  string          `json:"data_base64"`
}

func structuredCloudEvent(ev *rules.Event, body []byte) error {
	var ce cloudEvent
	if err := json.Unmarshal(body, &ce); err != nil {
		return bad("CloudEvent: %v", err)
	}
	if ce.Type == "" {
		return bad("CloudEvent has no type")
	}
	ev.ID, ev.Type = ce.ID, ce.Type
	if ce.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, ce.Time)
		if err != nil {
			return bad("CloudEvent time %q: not RFC 3339", ce.Time)
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

func binaryCloudEvent(ev *rules.Event, md message.Metadata, body []byte) error {
	get := func(k string) string {
		if v := md.Get("ce-" + k); v != "" {
			return v
		}
		return md.Get("Ce-" + strings.ToUpper(k[:1]) + k[1:])
	}
	ev.ID, ev.Type = get("id"), get("type")
	if ev.Type == "" {
		return bad("CloudEvent (binary mode) has no ce-type header")
	}
	if s := get("time"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return bad("CloudEvent ce-time %q: not RFC 3339", s)
		}
		ev.Time = t
	}
	return decodeData(ev, body)
}

// deadLetter publishes an undecodable event to the dead-letter subject with
// the original body and headers and the reason in Wxbridge-Error.
func (b *Bridge) deadLetter(ctx context.Context, msg *message.Message, reason string) error {
	m := nats.NewMsg(b.deadSubject())
	m.Data = msg.Payload
	for k, v := range msg.Metadata {
		if strings.HasPrefix(k, "wxbridge-") {
			continue
		}
		m.Header.Set(k, v)
	}
	m.Header.Set("Wxbridge-Error", reason)
	m.Header.Set("Wxbridge-Subject", msg.Metadata.Get(mdSubject))
	m.Header.Set("Wxbridge-Stream-Seq", msg.Metadata.Get(mdStreamSeq))
	// One dead letter per stream message, however often it is redelivered.
	m.Header.Set(nats.MsgIdHdr, "dead:"+b.cfg.EventStream+":"+msg.Metadata.Get(mdStreamSeq))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := b.js().PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	return nil
}
