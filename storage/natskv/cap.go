package natskv

import (
	"encoding/binary"
	"time"
)

// A rule's frequency cap is one key per cap key (rule and recipient)
// holding the times of the recent reservations under it, trimmed to the
// cap's period on every write and expiring a period after the newest.
// A send record names its mark in CapMark, to release it if nothing went
// out.

type capMarkOf struct {
	at  time.Time
	key string // the send key that took it
}

type capList struct {
	per   time.Duration // the cap's period, as the last reservation gave it
	marks []capMarkOf
}

// since keeps the marks made at or after t.
func (l capList) since(t time.Time) capList {
	out := capList{per: l.per}
	for _, m := range l.marks {
		if !m.at.Before(t) {
			out.marks = append(out.marks, m)
		}
	}
	return out
}

// without drops the mark of key made at.
func (l capList) without(at time.Time, key string) capList {
	out := capList{per: l.per}
	for _, m := range l.marks {
		if !(m.at.Equal(at) && m.key == key) {
			out.marks = append(out.marks, m)
		}
	}
	return out
}

func (l capList) newest() time.Time {
	var t time.Time
	for _, m := range l.marks {
		if m.at.After(t) {
			t = m.at
		}
	}
	return t
}

// encode: the period, then each mark's time and send key.
func (l capList) encode() []byte {
	b := binary.AppendVarint(nil, int64(l.per))
	for _, m := range l.marks {
		b = binary.AppendVarint(b, m.at.UnixNano())
		b = binary.AppendUvarint(b, uint64(len(m.key)))
		b = append(b, m.key...)
	}
	return b
}

func decodeCap(e entry) capList {
	var l capList
	if !e.present {
		return l
	}
	b := e.val
	per, n := binary.Varint(b)
	if n <= 0 {
		return l
	}
	l.per, b = time.Duration(per), b[n:]
	for len(b) > 0 {
		at, n := binary.Varint(b)
		if n <= 0 {
			return l
		}
		b = b[n:]
		kl, n := binary.Uvarint(b)
		if n <= 0 || kl > uint64(len(b)-n) {
			return l
		}
		l.marks = append(l.marks, capMarkOf{at: time.Unix(0, at).UTC(), key: string(b[n : n+int(kl)])})
		b = b[n+int(kl):]
	}
	return l
}

// capMark names one mark for its send record: the cap key, the time and
// the send key.
func capMark(capKey string, at time.Time, sendKey string) string {
	b := binary.AppendUvarint(nil, uint64(len(capKey)))
	b = append(b, capKey...)
	b = binary.AppendVarint(b, at.UnixNano())
	return string(append(b, sendKey...))
}

func parseCapMark(mark string) (capKey string, at time.Time, sendKey string, ok bool) {
	b := []byte(mark)
	kl, n := binary.Uvarint(b)
	if mark == "" || n <= 0 || kl > uint64(len(b)-n) {
		return "", time.Time{}, "", false
	}
	capKey, b = string(b[n:n+int(kl)]), b[n+int(kl):]
	t, n := binary.Varint(b)
	if n <= 0 {
		return "", time.Time{}, "", false
	}
	return capKey, time.Unix(0, t).UTC(), string(b[n:]), true
}
