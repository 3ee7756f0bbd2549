package natskv_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
)

// A KV key token allows only these, and never a dot (it separates tokens).
var validToken = regexp.MustCompile(`^[-_=a-zA-Z0-9]+$`)

var hostile = []string{"", ".", "..", "*", ">", "a.b", "a.*", "$KV", "a b", "\x00", "a\x00b", "\r\n", "ü", "订单-7", "🎉",
	"=", "==", "-", "_", "/", strings.Repeat("x", 192), strings.Repeat("é", 96), "\xff\xfe"}

func TestTokenRoundTrips(t *testing.T) {
	for _, id := range hostile {
		tok := natskv.Token(id)
		if !validToken.MatchString(tok) {
			t.Errorf("%q encodes to %q, not a key token", id, tok)
		}
		if got, ok := natskv.ParseToken(tok); !ok || got != id {
			t.Errorf("%q round trips to %q (%v)", id, got, ok)
		}
	}
}

// A part longer than a token holds becomes a hash: bounded, distinct, a
// valid token, never taken for a short part.
func TestLongPartsAreHashed(t *testing.T) {
	a, b := strings.Repeat("x", 10000), strings.Repeat("x", 9999)+"y"
	ta, tb := natskv.Token(a), natskv.Token(b)
	if ta == tb || len(ta) > 64 || !validToken.MatchString(ta) {
		t.Fatalf("hashed tokens %q %q", ta, tb)
	}
	if _, ok := natskv.ParseToken(ta); ok {
		t.Fatal("a hashed token parsed as an id")
	}
}

func FuzzToken(f *testing.F) {
	for _, id := range hostile {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tok := natskv.Token(id)
		if !validToken.MatchString(tok) {
			t.Fatalf("%q encodes to %q", id, tok)
		}
		got, ok := natskv.ParseToken(tok)
		if len(id) <= 192 && (!ok || got != id) {
			t.Fatalf("%q round trips to %q (%v)", id, got, ok)
		}
		if len(id) > 192 && ok {
			t.Fatalf("long %q parsed back", id)
		}
	})
}

// Hostile ids go in and come out whole, a prefix listing never matches a
// longer id, and the keys are ordinary KV keys the nats.go KV API reads.
func TestHostileIDs(t *testing.T) {
	bucket := newBucket()
	nc := connect(t, srv.Connect)
	s := open(t, nc, natskv.Options{Bucket: bucket})
	for i, id := range hostile {
		if id == "" {
			continue
		}
		b := storage.Binding{App: id, UserID: id + "!", OpenID: "o" + id}
		if _, err := s.Bind(ctx, b); err != nil {
			t.Fatalf("bind %q: %v", id, err)
		}
		got, ok, err := s.Binding(ctx, id, id+"!")
		if err != nil || !ok || got.OpenID != b.OpenID {
			t.Fatalf("binding of %q: %+v %v %v", id, got, ok, err)
		}
		key := storage.SendKey(id, "r", "u:"+id)
		rec := storage.SendRecord{Key: key, EventID: id, Rule: "r", App: "a", TemplateID: "T", UserID: id, State: storage.StateSkipped}
		if _, _, err := s.Complete(ctx, rec, storage.KeepCredit, nil); err != nil {
			t.Fatalf("record %q: %v", id, err)
		}
		if i%3 == 0 {
			// Another event whose id starts with this one.
			other := rec
			other.EventID = id + ".x"
			other.Key = storage.SendKey(other.EventID, "r", "u:"+id)
			if _, _, err := s.Complete(ctx, other, storage.KeepCredit, nil); err != nil {
				t.Fatal(err)
			}
		}
		recs, err := s.EventSends(ctx, id)
		if err != nil || len(recs) != 1 || recs[0].Key != key {
			t.Fatalf("sends of event %q: %+v %v", id, recs, err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "bind."+natskv.Token("a b!")+"."+natskv.Token("a b"))
	if err != nil {
		t.Fatalf("the KV API cannot read a binding: %v", err)
	}
	var b storage.Binding
	if err := storage.UnmarshalRecord(e.Value(), &b); err != nil || b.OpenID != "oa b" {
		t.Fatalf("binding read through the KV API: %+v %v", b, err)
	}
}
