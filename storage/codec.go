package storage

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The records read and written for every send (send records, ledger
// entries, bindings, event records) are stored in a compact binary form:
// JSON for them was a sixth of the bridge's CPU at load. A record is a
// version byte followed by its fields in a fixed order, each a varint or a
// length-prefixed string. New fields go at the end; a decoder given an
// older, shorter record leaves them zero. Records that start with '{' are
// JSON, as the first databases were written, and are still read.

const codecV1 = 1

type binaryRecord interface {
	encode(*encoder)
	decode(*decoder)
}

type encoder struct{ b []byte }

func (e *encoder) str(s string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) int(v int) { e.b = binary.AppendVarint(e.b, int64(v)) }

func (e *encoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

// time keeps the instant (nanoseconds since the epoch, UTC); zero stays zero.
func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.b = binary.AppendVarint(e.b, 0)
		return
	}
	e.b = binary.AppendVarint(e.b, t.UnixNano())
}

type decoder struct {
	b   []byte
	err error
}

var errTruncated = errors.New("truncated record")

// more reports whether fields are left: an older record ends early.
func (d *decoder) more() bool { return d.err == nil && len(d.b) > 0 }

func (d *decoder) str() string {
	if !d.more() {
		return ""
	}
	n, w := binary.Uvarint(d.b)
	if w <= 0 || n > uint64(len(d.b)-w) {
		d.err = errTruncated
		return ""
	}
	s := string(d.b[w : w+int(n)])
	d.b = d.b[w+int(n):]
	return s
}

func (d *decoder) varint() int64 {
	if !d.more() {
		return 0
	}
	v, w := binary.Varint(d.b)
	if w <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[w:]
	return v
}

func (d *decoder) int() int { return int(d.varint()) }

func (d *decoder) bool() bool {
	if !d.more() {
		return false
	}
	v := d.b[0] != 0
	d.b = d.b[1:]
	return v
}

func (d *decoder) time() time.Time {
	n := d.varint()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func marshalRecord(r binaryRecord) []byte {
	e := encoder{b: make([]byte, 1, 256)}
	e.b[0] = codecV1
	r.encode(&e)
	return e.b
}

// Record is a record kept in the compact binary form: another backend
// stores it the same way with MarshalRecord and UnmarshalRecord.
type Record interface {
	*SendRecord | *Subscription | *Binding | *EventRecord
}

// MarshalRecord encodes r in the compact binary form.
func MarshalRecord[R Record](r R) []byte { return marshalRecord(any(r).(binaryRecord)) }

// UnmarshalRecord decodes data (binary, or JSON as the first databases
// wrote it) into r.
func UnmarshalRecord[R Record](data []byte, r R) error {
	return unmarshalRecord(data, any(r).(binaryRecord))
}

func unmarshalRecord(data []byte, r binaryRecord) error {
	switch {
	case len(data) > 0 && data[0] == '{':
		return json.Unmarshal(data, r)
	case len(data) == 0 || data[0] != codecV1:
		return errors.New("unknown record format")
	}
	d := decoder{b: data[1:]}
	r.decode(&d)
	return d.err
}

// getRecord reads a record; found is false when the key is absent.
func getRecord(b *bolt.Bucket, k []byte, r binaryRecord) (bool, error) {
	data := b.Get(k)
	if data == nil {
		return false, nil
	}
	if err := unmarshalRecord(data, r); err != nil {
		return true, fmt.Errorf("decode record %q: %w", printable(k), err)
	}
	return true, nil
}

func putRecord(b *bolt.Bucket, k []byte, r binaryRecord) error {
	return b.Put(k, marshalRecord(r))
}

func (r *SendRecord) encode(e *encoder) {
	for _, s := range []string{r.Key, r.EventID, r.EventType, r.Rule, r.App, r.TemplateID, r.UserID, r.OpenID,
		r.State, r.Reason} {
		e.str(s)
	}
	e.int(r.ErrCode)
	e.str(r.ErrMsg)
	e.str(r.MsgID)
	e.int(r.Attempts)
	e.bool(r.CreditTaken)
	e.bool(r.InDoubt)
	e.str(r.Owner)
	e.str(r.DedupeMark)
	e.str(r.CapMark)
	e.str(r.Delivery)
	e.int(r.DeliveryCode)
	e.str(r.DeliveryMsg)
	e.time(r.CreatedAt)
	e.time(r.UpdatedAt)
	e.str(r.Trace)
}

func (r *SendRecord) decode(d *decoder) {
	for _, p := range []*string{&r.Key, &r.EventID, &r.EventType, &r.Rule, &r.App, &r.TemplateID, &r.UserID, &r.OpenID,
		&r.State, &r.Reason} {
		*p = d.str()
	}
	r.ErrCode = d.int()
	r.ErrMsg = d.str()
	r.MsgID = d.str()
	r.Attempts = d.int()
	r.CreditTaken = d.bool()
	r.InDoubt = d.bool()
	r.Owner = d.str()
	r.DedupeMark = d.str()
	r.CapMark = d.str()
	r.Delivery = d.str()
	r.DeliveryCode = d.int()
	r.DeliveryMsg = d.str()
	r.CreatedAt = d.time()
	r.UpdatedAt = d.time()
	r.Trace = d.str()
}

func (s *Subscription) encode(e *encoder) {
	for _, v := range []string{s.App, s.OpenID, s.UserID, s.TemplateID, s.Status, s.Kind} {
		e.str(v)
	}
	e.int(s.Credits)
	e.str(s.Source)
	e.time(s.UpdatedAt)
	e.int(len(s.Unpaired))
	for _, m := range s.Unpaired {
		e.str(m.Source)
		e.time(m.At)
	}
	e.str(s.UnionID)
}

func (s *Subscription) decode(d *decoder) {
	for _, p := range []*string{&s.App, &s.OpenID, &s.UserID, &s.TemplateID, &s.Status, &s.Kind} {
		*p = d.str()
	}
	s.Credits = d.int()
	s.Source = d.str()
	s.UpdatedAt = d.time()
	n := d.int()
	if n < 0 || n > len(d.b) {
		d.err = errTruncated
		return
	}
	s.Unpaired = nil
	for i := 0; i < n; i++ {
		s.Unpaired = append(s.Unpaired, AcceptMark{Source: d.str(), At: d.time()})
	}
	s.UnionID = d.str()
}

func (b *Binding) encode(e *encoder) {
	for _, v := range []string{b.App, b.UserID, b.OpenID, b.UnionID} {
		e.str(v)
	}
	e.time(b.BoundAt)
}

func (b *Binding) decode(d *decoder) {
	for _, p := range []*string{&b.App, &b.UserID, &b.OpenID, &b.UnionID} {
		*p = d.str()
	}
	b.BoundAt = d.time()
}

func (r *EventRecord) encode(e *encoder) {
	e.str(r.ID)
	e.str(r.Type)
	e.time(r.DoneAt)
}

func (r *EventRecord) decode(d *decoder) {
	r.ID = d.str()
	r.Type = d.str()
	r.DoneAt = d.time()
}
