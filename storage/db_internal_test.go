package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A write that fails inside a shared transaction rolls the group back; the
// others are retried on their own and commit, and only the failing caller
// sees its error.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "x.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	boom := errors.New("boom")
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.update(ctx, func(tx *bolt.Tx) error {
				if i%30 == 0 {
					return boom
				}
				return tx.Bucket(bucketTokens).Put([]byte(fmt.Sprint(i)), []byte("v"))
			})
			if i%30 == 0 && !errors.Is(err, boom) {
				t.Errorf("write %d: %v, want boom", i, err)
			}
			if i%30 != 0 && err != nil {
				t.Errorf("write %d failed with its neighbour: %v", i, err)
			}
		}()
	}
	wg.Wait()
	_ = db.view(func(tx *bolt.Tx) error {
		for i := 0; i < 300; i++ {
			v := tx.Bucket(bucketTokens).Get([]byte(fmt.Sprint(i)))
			if (i%30 == 0) != (v == nil) {
				t.Errorf("key %d: %q", i, v)
			}
		}
		return nil
	})
}

func TestOutboxEncodingRoundTrip(t *testing.T) {
	for _, m := range []OutboxMessage{
		{Subject: "wxbridge.results.a", MsgID: "r:1", Payload: []byte(`{"x":1}`)},
		{Subject: "wxbridge.dead", Header: map[string]string{"Wxbridge-Error": "not JSON", "k": ""}, Payload: []byte{0, 1, 2}},
		{},
	} {
		got, err := decodeOutbox(m.encode())
		if err != nil {
			t.Fatal(err)
		}
		if got.Subject != m.Subject || got.MsgID != m.MsgID || string(got.Payload) != string(m.Payload) || len(got.Header) != len(m.Header) {
			t.Fatalf("round trip of %+v gave %+v", m, got)
		}
		for k, v := range m.Header {
			if got.Header[k] != v {
				t.Fatalf("header %s: %q", k, got.Header[k])
			}
		}
	}
}

func FuzzDecodeOutbox(f *testing.F) {
	f.Add(OutboxMessage{Subject: "s", MsgID: "m", Header: map[string]string{"a": "b"}, Payload: []byte("p")}.encode())
	f.Add([]byte{1, 200, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeOutbox(b)
		if err == nil {
			if again, err := decodeOutbox(m.encode()); err != nil || again.Subject != m.Subject || string(again.Payload) != string(m.Payload) {
				t.Fatalf("re-encoding %+v: %v", m, err)
			}
		}
	})
}

func TestRecordCodecRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 123, time.UTC)
	recs := []binaryRecord{
		&SendRecord{Key: "e\x00r\x00u:1", EventID: "e", EventType: "t", Rule: "r", App: "main", TemplateID: "T", UserID: "u1",
			OpenID: "o1", State: StateSent, Reason: "x", ErrCode: -1, ErrMsg: "m", MsgID: "1864323726461255681", Attempts: 3,
			CreditTaken: true, InDoubt: true, Owner: "own", DedupeMark: "d", CapMark: "c\x00\x01", Delivery: "delivered",
			DeliveryCode: 7, DeliveryMsg: "ok", CreatedAt: now, UpdatedAt: now.Add(time.Second)},
		&SendRecord{},
		&Subscription{App: "main", OpenID: "o", UserID: "u", TemplateID: "T", Status: StatusAccept, Kind: KindOneTime, Credits: 4,
			Source: SourcePopup, UpdatedAt: now, Unpaired: []AcceptMark{{Source: SourceClient, At: now}, {Source: SourcePopup, At: now}}},
		&Binding{App: "a", UserID: "u", OpenID: "o", UnionID: "x", BoundAt: now},
		&EventRecord{ID: "e", Type: "t", DoneAt: now},
	}
	for _, r := range recs {
		data := marshalRecord(r)
		got := reflect.New(reflect.TypeOf(r).Elem()).Interface().(binaryRecord)
		if err := unmarshalRecord(data, got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
		}
		// Records written as JSON by the first versions still read.
		js, _ := json.Marshal(r)
		legacy := reflect.New(reflect.TypeOf(r).Elem()).Interface().(binaryRecord)
		if err := unmarshalRecord(js, legacy); err != nil || !reflect.DeepEqual(legacy, r) {
			t.Fatalf("JSON record: %v\n got %+v\nwant %+v", err, legacy, r)
		}
	}
}

func FuzzRecordDecode(f *testing.F) {
	f.Add(marshalRecord(&SendRecord{Key: "k", Attempts: 2}))
	f.Add(marshalRecord(&Subscription{Unpaired: []AcceptMark{{Source: "x"}}}))
	f.Add([]byte{1, 255, 255, 255, 255, 15})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r SendRecord
		_ = unmarshalRecord(b, &r)
		var s Subscription
		_ = unmarshalRecord(b, &s)
	})
}
