package bridge

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// While the WeChat client waits to fetch an access token again, a send that
// cannot start uses up none of its recipient's attempts; a fetch that was
// made and failed counts as one, so a token that never comes still ends in
// retries_exhausted.
func TestTokenBackoffUsesNoAttempt(t *testing.T) {
	const appid = "wx00000000000000b0"
	emu := wechattest.New(wechattest.Options{})
	emu.AddApp(appid, "the-right-secret")
	srv := httptest.NewServer(emu)
	defer srv.Close()
	wx, err := wechat.New(wechat.Config{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer wx.Close()
	wx.SetApp("main", wechat.App{AppID: appid, Secret: "a-wrong-secret"})
	db, err := storage.Open(filepath.Join(t.TempDir(), "db"), storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := Config{Store: db, WeChat: wx, MaxAttempts: 2, Registry: prometheus.NewRegistry()}
	cfg.setDefaults()
	b := &Bridge{cfg: cfg, log: slog.New(slog.DiscardHandler), metrics: newMetrics(cfg.Registry), repeats: newRepeatLimiter(time.Minute, time.Now), tracer: cfg.Tracer.Tracer("")}
	ctx := context.Background()
	ev := &event{Event: &rules.Event{ID: "e1", Type: "t"}, key: "e1"}
	rec := storage.SendRecord{Key: storage.SendKey("e1", "r", "u:u1"), EventID: "e1", EventType: "t", Rule: "r", App: "main", UserID: "u1", OpenID: "o1"}
	attempt := func() (bool, error) {
		t.Helper()
		return b.noToken(ctx, evlog{l: b.log, ev: ev}, &recorder{b: b}, rec, wx.Ready(ctx, "main"))
	}
	stored := func() storage.SendRecord {
		t.Helper()
		r, _, err := db.Send(ctx, rec.Key)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// The first fetch is made and fails: one attempt.
	if final, err := attempt(); final || err != nil {
		t.Fatalf("after a failed fetch: final %v, err %v", final, err)
	}
	if r := stored(); r.State != storage.StateRetry || r.Attempts != 1 {
		t.Fatalf("after a failed fetch: %+v", r)
	}
	// Within the client's backoff nothing is asked of WeChat, and nothing
	// is counted; the event is told when to come back.
	for i := 0; i < 5; i++ {
		final, err := attempt()
		var tw *retryAt
		if final || !errors.As(err, &tw) || tw.at.IsZero() || !errors.Is(err, wechat.ErrTokenBackoff) {
			t.Fatalf("during the backoff: final %v, err %v", final, err)
		}
	}
	if r := stored(); r.Attempts != 1 {
		t.Fatalf("attempts used during the backoff: %+v", r)
	}
	if n := emu.Calls()[wechattest.PathStableToken]; n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
	// A second real failure (the secret is still wrong) uses the last
	// attempt: the recipient fails.
	fetchErr := &tokenFetchErrorForTest{}
	if final, err := b.noToken(ctx, evlog{l: b.log, ev: ev}, &recorder{b: b}, rec, fetchErr); !final || err != nil {
		t.Fatalf("after the last attempt: final %v, err %v", final, err)
	}
	if r := stored(); r.State != storage.StateFailed || r.Reason != reasonRetriesExhausted || r.Attempts != 2 {
		t.Fatalf("after the last attempt: %+v", r)
	}
}

// tokenFetchErrorForTest is a token fetch that was made and failed.
type tokenFetchErrorForTest struct{}

func (*tokenFetchErrorForTest) Error() string { return "fetch access token: 40125 invalid appsecret" }
func (*tokenFetchErrorForTest) Unwrap() error { return wechat.ErrTokenFetch }
