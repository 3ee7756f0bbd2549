package bridge

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/storage/storagetest"
	"github.com/wxbridge/wxbridge/wechat"
)

// listingWeChat is an official account's follower list and user info,
// with a gate that holds the list while a test looks.
type listingWeChat struct {
	WeChat // nothing else is called
	pages  atomic.Int32
	asked  atomic.Int32
	gate   chan struct{}
	fail   error
	// during runs while user info is being asked for.
	during func()
}

func (w *listingWeChat) Followers(ctx context.Context, app, next string) (wechat.FollowerPage, error) {
	w.pages.Add(1)
	select {
	case <-w.gate:
	case <-ctx.Done():
		return wechat.FollowerPage{}, ctx.Err()
	}
	if w.fail != nil {
		return wechat.FollowerPage{}, w.fail
	}
	if next == "" {
		return wechat.FollowerPage{Total: 3, OpenIDs: []string{"oa-1", "oa-2"}, Next: "oa-2"}, nil
	}
	return wechat.FollowerPage{Total: 3, OpenIDs: []string{"oa-3"}}, nil
}

func (w *listingWeChat) UserInfoBatch(_ context.Context, _ string, openids []string) ([]wechat.UserInfo, error) {
	w.asked.Add(int32(len(openids)))
	if w.during != nil {
		w.during()
	}
	out := make([]wechat.UserInfo, len(openids))
	for i, id := range openids {
		out[i] = wechat.UserInfo{OpenID: id, Subscribed: true, UnionID: "un-" + id}
	}
	return out, nil
}

func listingBridge(t *testing.T, wx *listingWeChat, clock *storagetest.Clock) (*Bridge, *storage.DB) {
	t.Helper()
	db, err := storage.Open(filepath.Join(t.TempDir(), "db"), storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	cfg := Config{Store: db, WeChat: wx, Registry: prometheus.NewRegistry(), Now: clock.Now,
		FollowerListEvery: 10 * time.Minute, FollowerListWait: 5 * time.Second}
	cfg.setDefaults()
	b := &Bridge{cfg: cfg, log: slog.New(slog.DiscardHandler), metrics: newMetrics(cfg.Registry), repeats: newRepeatLimiter(time.Minute, clock.Now)}
	b.followers = newFollowerLists(b)
	t.Cleanup(b.followers.stop)
	return b, db
}

// Recipients that miss at once share one walk of the list; followers
// already known are not asked about again; within FollowerListEvery no
// walk is made, after it one is.
func TestFollowerListingSharedAndSpaced(t *testing.T) {
	clock := storagetest.NewClock()
	wx := &listingWeChat{gate: make(chan struct{})}
	b, db := listingBridge(t, wx, clock)
	ctx := context.Background()
	if err := db.SaveFollowers(ctx, storage.FollowChange{App: "oa", OpenID: "oa-2", UnionID: "un-oa-2", Following: true, Source: storage.SourceUserInfo}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make(chan bool, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := b.followers.refresh(ctx, "oa")
			if err != nil {
				t.Error(err)
			}
			results <- ok
		}()
	}
	for wx.pages.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(wx.gate) // the walk goes on
	wg.Wait()
	close(results)
	// Those that asked while the walk ran were told it ended; one that
	// came after it (the goroutines race the gate) is told nothing new.
	told := 0
	for ok := range results {
		if ok {
			told++
		}
	}
	if told == 0 {
		t.Error("no recipient was told the walk ended")
	}
	if p, a := wx.pages.Load(), wx.asked.Load(); p != 2 || a != 2 {
		t.Errorf("%d pages and %d users asked about; want one walk of 2 pages, 2 users (oa-2 was known)", p, a)
	}
	if f, ok, _ := db.FollowerByUnionID(ctx, "oa", "un-oa-3"); !ok || f.OpenID != "oa-3" || !f.Following {
		t.Errorf("oa-3 after the walk: %+v %v", f, ok)
	}
	clock.Advance(9 * time.Minute)
	if ok, err := b.followers.refresh(ctx, "oa"); ok || err != nil {
		t.Errorf("within 10 minutes: walked %v, %v", ok, err)
	}
	clock.Advance(2 * time.Minute)
	if ok, err := b.followers.refresh(ctx, "oa"); !ok || err != nil || wx.pages.Load() != 4 {
		t.Errorf("after 10 minutes: walked %v, %v, %d pages", ok, err, wx.pages.Load())
	}
	if n := testutil.ToFloat64(b.metrics.followerLists.WithLabelValues("oa", "ok")); n != 2 {
		t.Errorf("%v listings counted", n)
	}
}

// A walk longer than a recipient waits sends its event back for later,
// with no attempt spent; a walk that fails is counted, and the recipient
// goes on (nobody found) rather than failing its event.
func TestFollowerListingSlowOrFailing(t *testing.T) {
	clock := storagetest.NewClock()
	wx := &listingWeChat{gate: make(chan struct{})}
	b, _ := listingBridge(t, wx, clock)
	b.cfg.FollowerListWait = 50 * time.Millisecond
	ctx := context.Background()
	_, err := b.followers.refresh(ctx, "oa")
	var ra *retryAt
	if !errors.As(err, &ra) || !errors.Is(err, errListing) || ra.at.IsZero() {
		t.Fatalf("a slow walk: %v, want a retryAt of errListing", err)
	}
	wx.fail = errors.New("48001 api unauthorized")
	close(wx.gate)
	b.cfg.FollowerListWait = 5 * time.Second
	if ok, err := b.followers.refresh(ctx, "oa"); !ok || err != nil {
		t.Fatalf("waiting for the walk under way: %v, %v", ok, err)
	}
	if n := testutil.ToFloat64(b.metrics.followerLists.WithLabelValues("oa", "error")); n != 1 {
		t.Errorf("%v failed listings counted, want 1", n)
	}
}

// An unfollow push that arrives while the listing asks WeChat about the
// person wins over the answer, which still tells their unionid.
func TestFollowerListingAnswerOlderThanPush(t *testing.T) {
	clock := storagetest.NewClock()
	wx := &listingWeChat{gate: make(chan struct{})}
	close(wx.gate)
	b, db := listingBridge(t, wx, clock)
	ctx := context.Background()
	wx.during = func() {
		clock.Advance(time.Second)
		if _, err := db.ApplyPush(ctx, storage.PushChanges{DedupeKey: "unfollow-oa-1", Follows: []storage.FollowChange{
			{App: "oa", OpenID: "oa-1", Following: false, Source: storage.SourceFollowPush, At: clock.Now()}}}); err != nil {
			t.Error(err)
		}
		wx.during = nil
	}
	if ok, err := b.followers.refresh(ctx, "oa"); !ok || err != nil {
		t.Fatalf("walk: %v %v", ok, err)
	}
	if f, ok, _ := db.Follower(ctx, "oa", "oa-1"); !ok || f.Following || f.UnionID != "un-oa-1" {
		t.Errorf("oa-1, unfollowed during the walk: %+v %v", f, ok)
	}
	if f, ok, _ := db.Follower(ctx, "oa", "oa-2"); !ok || !f.Following {
		t.Errorf("oa-2: %+v %v", f, ok)
	}
}
