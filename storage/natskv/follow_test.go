package natskv_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/natskv"
)

// bucketKV opens the store's bucket through the nats.go KV API, to look
// at the layout as an operator's `nats kv` would.
func bucketKV(t *testing.T, nc *nats.Conn, bucket string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// index lists the index entries under filter as "key=value", sorted.
func index(t *testing.T, kv jetstream.KeyValue, filter string) []string {
	t.Helper()
	kl, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range kl.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k+"="+string(e.Value()))
	}
	slices.Sort(out)
	return out
}

func tk(parts ...string) string {
	for i, p := range parts {
		parts[i] = natskv.Token(p)
	}
	return strings.Join(parts, ".")
}

func followerEntry(app, unionid, openid string) string {
	return "uid.follower." + tk(app, unionid) + "=" + openid
}

func bindingEntry(unionid, app, user string) string {
	return "uid.bind." + tk(unionid, app, user) + "=bind." + tk(user, app)
}

func apps(bs []storage.Binding) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.App+"/"+b.UserID)
	}
	return out
}

// Hostile unionids are whole key tokens: each finds its own bindings and
// follower and nothing of a unionid that extends it (a prefix listing
// never matches a longer one), long ones included (hashed), and the
// entries are ordinary KV keys.
func TestHostileUnionIDs(t *testing.T) {
	bucket := newBucket()
	nc := connect(t, srv.Connect)
	s := open(t, nc, natskv.Options{Bucket: bucket})
	ids := append(slices.Clone(hostile), strings.Repeat("x", 193), strings.Repeat("x", 10000))
	for i, u := range ids {
		if u == "" {
			continue
		}
		user := fmt.Sprint("u", i)
		for _, b := range []storage.Binding{
			{App: "main", UserID: user, OpenID: "o" + user, UnionID: u},
			{App: u, UserID: user, OpenID: "p" + user, UnionID: u},
			// A longer unionid this one starts, in the same apps.
			{App: "main", UserID: user + "+", OpenID: "o" + user + "+", UnionID: u + ".x"},
		} {
			if _, err := s.Bind(ctx, b); err != nil {
				t.Fatalf("bind %q: %v", u, err)
			}
		}
		if !utf8.ValidString(u) {
			continue // a follower is JSON (as in bbolt): only UTF-8 survives it
		}
		if err := s.SaveFollowers(ctx, storage.FollowChange{App: "oa", OpenID: "oa-" + user, UnionID: u, Following: true, Source: storage.SourceUserInfo},
			storage.FollowChange{App: "oa", OpenID: "oa-" + user + "+", UnionID: u + ".x", Following: true, Source: storage.SourceUserInfo}); err != nil {
			t.Fatalf("save follower %q: %v", u, err)
		}
	}
	for i, u := range ids {
		if u == "" {
			continue
		}
		user := fmt.Sprint("u", i)
		bs, err := s.BindingsByUnionID(ctx, u)
		want := []string{"main/" + user, u + "/" + user}
		slices.Sort(want)
		if err != nil || !slices.Equal(apps(bs), want) {
			t.Fatalf("bindings of %q: %v %v, want %v", u, apps(bs), err, want)
		}
		if !utf8.ValidString(u) {
			continue
		}
		f, ok, err := s.FollowerByUnionID(ctx, "oa", u)
		if err != nil || !ok || f.OpenID != "oa-"+user || f.UnionID != u {
			t.Fatalf("follower of %q: %+v %v %v", u, f, ok, err)
		}
	}
	if bs, err := s.BindingsByUnionID(ctx, ""); err != nil || len(bs) != 0 {
		t.Fatalf("bindings of no unionid: %+v %v", bs, err)
	}
	if _, ok, err := s.FollowerByUnionID(ctx, "oa", ""); err != nil || ok {
		t.Fatalf("follower of no unionid: %v %v", ok, err)
	}
	// Three index entries per unionid but "" (two apps and the longer
	// one), and two for a follower's when it is UTF-8.
	want := 0
	for _, u := range ids {
		if u != "" {
			want += 3
			if utf8.ValidString(u) {
				want += 2
			}
		}
	}
	if got := index(t, bucketKV(t, nc, bucket), "uid.>"); len(got) != want {
		t.Fatalf("%d index entries through the KV API, want %d", len(got), want)
	}
}

// The unionid index follows every binding change: a rebind with another
// unionid, an openid moved to another user, a rebind without one, an
// unbind remove the entry (not only hide it), in the batch of the change.
func TestBindingUnionIndex(t *testing.T) {
	bucket := newBucket()
	nc := connect(t, srv.Connect)
	s := open(t, nc, natskv.Options{Bucket: bucket})
	kv := bucketKV(t, nc, bucket)
	steps := []struct {
		name string
		do   func() error
		want []string
		by   map[string][]string // unionid -> app/user found
	}{
		{"bind in two apps", func() error {
			if _, err := s.Bind(ctx, storage.Binding{App: "main", UserID: "u1", OpenID: "o1", UnionID: "A"}); err != nil {
				return err
			}
			_, err := s.Bind(ctx, storage.Binding{App: "other", UserID: "u1", OpenID: "p1", UnionID: "A"})
			return err
		}, []string{bindingEntry("A", "main", "u1"), bindingEntry("A", "other", "u1")},
			map[string][]string{"A": {"main/u1", "other/u1"}}},
		{"rebind with another unionid", func() error {
			_, err := s.Bind(ctx, storage.Binding{App: "main", UserID: "u1", OpenID: "o1", UnionID: "B"})
			return err
		}, []string{bindingEntry("A", "other", "u1"), bindingEntry("B", "main", "u1")},
			map[string][]string{"A": {"other/u1"}, "B": {"main/u1"}}},
		{"rebind to another openid", func() error {
			_, err := s.Bind(ctx, storage.Binding{App: "main", UserID: "u1", OpenID: "o2", UnionID: "B"})
			return err
		}, []string{bindingEntry("A", "other", "u1"), bindingEntry("B", "main", "u1")},
			map[string][]string{"B": {"main/u1"}}},
		{"the openid moves to another user", func() error {
			_, err := s.Bind(ctx, storage.Binding{App: "main", UserID: "u2", OpenID: "o2", UnionID: "C"})
			return err
		}, []string{bindingEntry("A", "other", "u1"), bindingEntry("C", "main", "u2")},
			map[string][]string{"B": nil, "C": {"main/u2"}}},
		{"rebind without a unionid", func() error {
			_, err := s.Bind(ctx, storage.Binding{App: "main", UserID: "u2", OpenID: "o3"})
			return err
		}, []string{bindingEntry("A", "other", "u1")},
			map[string][]string{"C": nil}},
		{"unbind", func() error {
			_, err := s.Unbind(ctx, "other", "u1")
			return err
		}, nil, map[string][]string{"A": nil}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := index(t, kv, "uid.bind.>"); !slices.Equal(got, slices.Sorted(slices.Values(st.want))) {
			t.Fatalf("%s: index %q, want %q", st.name, got, st.want)
		}
		for u, want := range st.by {
			if got := must(s.BindingsByUnionID(ctx, u))(t); !slices.Equal(apps(got), want) {
				t.Fatalf("%s: bindings of %s %v, want %v", st.name, u, apps(got), want)
			}
		}
	}
}

func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func follow(openid, unionid string) storage.FollowChange {
	return storage.FollowChange{App: "oa", OpenID: openid, UnionID: unionid, Following: true, Source: storage.SourceUserInfo}
}

// A follower's unionid index entry moves with its unionid; a unionid
// another openid claimed stays that openid's; changes in one call that
// hand a unionid from one follower to another write each entry once.
func TestFollowerUnionIndex(t *testing.T) {
	bucket := newBucket()
	nc := connect(t, srv.Connect)
	var mu sync.Mutex
	var seen []string
	s := open(t, nc, natskv.Options{Bucket: bucket, LedgerHook: func(sub storage.Subscription) []storage.OutboxMessage {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, sub.OpenID+"/"+sub.UnionID)
		return nil
	}})
	kv := bucketKV(t, nc, bucket)
	steps := []struct {
		name string
		chs  []storage.FollowChange
		want []string
		by   map[string]string // unionid -> openid found ("": none)
	}{
		{"first", []storage.FollowChange{follow("oa-1", "U1")},
			[]string{followerEntry("oa", "U1", "oa-1")}, map[string]string{"U1": "oa-1"}},
		{"another unionid", []storage.FollowChange{follow("oa-1", "U2")},
			[]string{followerEntry("oa", "U2", "oa-1")}, map[string]string{"U1": "", "U2": "oa-1"}},
		{"claimed by another openid", []storage.FollowChange{follow("oa-2", "U2")},
			[]string{followerEntry("oa", "U2", "oa-2")}, map[string]string{"U2": "oa-2"}},
		{"the first leaves it", []storage.FollowChange{follow("oa-1", "U3")},
			[]string{followerEntry("oa", "U2", "oa-2"), followerEntry("oa", "U3", "oa-1")},
			map[string]string{"U2": "oa-2", "U3": "oa-1"}},
		{"handed over in one call", []storage.FollowChange{follow("oa-1", "U9"), follow("oa-1", "U4"), follow("oa-2", "U3")},
			[]string{followerEntry("oa", "U3", "oa-2"), followerEntry("oa", "U4", "oa-1")},
			map[string]string{"U2": "", "U3": "oa-2", "U4": "oa-1", "U9": ""}},
	}
	for _, st := range steps {
		if err := s.SaveFollowers(ctx, st.chs...); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := index(t, kv, "uid.follower.>"); !slices.Equal(got, slices.Sorted(slices.Values(st.want))) {
			t.Fatalf("%s: index %q, want %q", st.name, got, st.want)
		}
		for u, want := range st.by {
			f, ok, err := s.FollowerByUnionID(ctx, "oa", u)
			if err != nil || ok != (want != "") || f.OpenID != want {
				t.Fatalf("%s: follower of %s %+v %v %v, want %q", st.name, u, f, ok, err, want)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := "[oa-1/U1 oa-1/U2 oa-2/U2 oa-1/U3 oa-1/U9 oa-1/U4 oa-2/U3]"
	if fmt.Sprint(seen) != want {
		t.Fatalf("announcements %v, want %v", seen, want)
	}
}

// More changes than one batch holds are saved (in several batches) and
// each announced once; a push's follow costs no read of its own: one get
// and one batch with the rest of the push.
func TestManyFollowersAndPushTrips(t *testing.T) {
	s := open(t, connect(t, srv.Connect), natskv.Options{Bucket: newBucket(), LedgerHook: subsHook})
	var chs []storage.FollowChange
	for i := range 450 {
		chs = append(chs, follow(fmt.Sprint("oa-", i), fmt.Sprint("U", i)))
	}
	if err := s.SaveFollowers(ctx, chs...); err != nil {
		t.Fatal(err)
	}
	if n := len(drain(t, s)); n != 450 {
		t.Fatalf("%d announcements of 450 followers", n)
	}
	for _, i := range []int{0, 199, 200, 449} {
		f, ok, err := s.FollowerByUnionID(ctx, "oa", fmt.Sprint("U", i))
		if err != nil || !ok || f.OpenID != fmt.Sprint("oa-", i) || !f.Following {
			t.Fatalf("follower %d: %+v %v %v", i, f, ok, err)
		}
	}
	before := s.RoundTrips()
	res, err := s.ApplyPush(ctx, storage.PushChanges{DedupeKey: "p1",
		Subscriptions: []storage.SubscriptionChange{{App: "main", OpenID: "o1", TemplateID: "T", Status: storage.StatusAccept,
			Source: storage.SourcePopup, At: time.Now()}},
		Follows: []storage.FollowChange{{App: "oa", OpenID: "oa-7", Following: false, Source: storage.SourceFollowPush}}})
	if err != nil || len(res.Follows) != 1 || res.Follows[0].Following || res.Follows[0].UnionID != "U7" {
		t.Fatalf("unfollow push: %+v %v", res, err)
	}
	if n := s.RoundTrips() - before; n != 2 {
		t.Fatalf("a push with a follow cost %d round trips, want 2", n)
	}
	if got := subjects(drain(t, s)); len(got) != 2 {
		t.Fatalf("announcements of the push %v, want the ledger entry's and the follower's", got)
	}
}

// Two bridges changing one follower's unionid at once: every change is
// decided on what the other wrote (or decided again), and the index ends
// with one entry, the follower's.
func TestConcurrentFollowerChanges(t *testing.T) {
	bucket := newBucket()
	nc := connect(t, srv.Connect)
	stores := []*natskv.Store{open(t, nc, natskv.Options{Bucket: bucket}), open(t, connect(t, srv.Connect), natskv.Options{Bucket: bucket})}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for si, s := range stores {
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 10 {
					if err := s.SaveFollowers(ctx, follow("oa-1", fmt.Sprint("U-", si, "-", g, "-", i))); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	f, ok, err := stores[0].Follower(ctx, "oa", "oa-1")
	if err != nil || !ok {
		t.Fatalf("follower: %+v %v %v", f, ok, err)
	}
	if got, want := index(t, bucketKV(t, nc, bucket), "uid.follower.>"), []string{followerEntry("oa", f.UnionID, "oa-1")}; !slices.Equal(got, want) {
		t.Fatalf("index %q, want %q", got, want)
	}
}

// A clean retry that goes by another channel spends that channel's credit,
// never the first one's, and its reservation reads nothing beyond the
// lookup of the channel it names.
func TestRetryByAnotherChannelSpendsItsCredit(t *testing.T) {
	s := open(t, connect(t, srv.Connect), natskv.Options{Bucket: newBucket()})
	accept := func(app, openid, tpl string) {
		t.Helper()
		if _, err := s.ApplySubscription(ctx, storage.SubscriptionChange{App: app, OpenID: openid, TemplateID: tpl,
			Status: storage.StatusAccept, Source: storage.SourceClient, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	credits := func(app, openid, tpl string) (int, bool) {
		t.Helper()
		sub, ok, err := s.Subscription(ctx, app, openid, tpl)
		if err != nil {
			t.Fatal(err)
		}
		return sub.Credits, ok
	}
	accept("main", "o1", "T")
	req := pendingReq(s, "e1")
	req.CheckCredit = true
	res := must(s.Reserve(ctx, req))(t)
	rec := res.Record
	rec.State = storage.StateRetry
	if _, _, err := s.Complete(ctx, rec, storage.RefundCredit, nil); err != nil {
		t.Fatal(err)
	}
	other := req
	other.Record.App, other.Record.TemplateID, other.Record.OpenID = "oa", "TPL-OA", "oa-1"
	reserve := func() (storage.ReserveResult, int64) {
		t.Helper()
		before := s.RoundTrips()
		f := must(s.Lookup(ctx, storage.Lookup{SendKey: other.Record.Key, App: "oa", OpenID: "oa-1", TemplateID: "TPL-OA"}))(t)
		r := other
		r.Snapshot = f.Snapshot
		return must(s.Reserve(ctx, r))(t), s.RoundTrips() - before
	}
	if r, _ := reserve(); r.Outcome != storage.NoCredit || r.Reason != "not_subscribed" {
		t.Fatalf("retry by a channel with no credit: %+v", r)
	}
	if n, _ := credits("main", "o1", "T"); n != 1 {
		t.Fatalf("the first channel has %d credits, want 1", n)
	}
	if _, ok := credits("oa", "oa-1", "TPL-OA"); ok {
		t.Fatal("a ledger entry made up for the other channel")
	}
	accept("oa", "oa-1", "TPL-OA")
	r, trips := reserve()
	if r.Outcome != storage.Reserved || !r.Record.CreditTaken || r.Record.App != "oa" {
		t.Fatalf("retry by a channel with a credit: %+v", r)
	}
	if trips != 2 {
		t.Fatalf("lookup and reserve by another channel cost %d round trips, want 2", trips)
	}
	if n, _ := credits("oa", "oa-1", "TPL-OA"); n != 0 {
		t.Fatalf("the other channel has %d credits, want 0", n)
	}
	if n, _ := credits("main", "o1", "T"); n != 1 {
		t.Fatalf("the first channel has %d credits, want 1", n)
	}
}
