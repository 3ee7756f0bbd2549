package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wxbridge/wxbridge/storage"
	"github.com/wxbridge/wxbridge/wechat"
)

// followerLists learns the followers of official accounts that followed
// before wxbridge heard their follow push: a person is found in an account
// by their unionid, and WeChat offers no lookup by unionid, so the account's
// follower list is walked (GET /cgi-bin/user/get) and the followers not
// known yet are asked about (user/info/batchget). It runs on demand, when a
// recipient's unionid is not among the known followers, at most once per
// account every Config.FollowerListEvery; one listing serves every
// recipient waiting for it.
type followerLists struct {
	b *Bridge
	// ctx is the life of the listings: a listing outlives the recipient
	// that started it, not the bridge.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	apps map[string]*listing
}

// listing is the state of one account's follower list.
type listing struct {
	done    chan struct{} // closed when the listing under way ends
	running bool
	started time.Time // when the last listing started
}

func newFollowerLists(b *Bridge) *followerLists {
	ctx, cancel := context.WithCancel(context.Background())
	return &followerLists{b: b, ctx: ctx, cancel: cancel, apps: map[string]*listing{}}
}

// stop ends the listing under way and waits for it.
func (f *followerLists) stop() {
	f.cancel()
	f.wg.Wait()
}

// errListing: the follower list is being walked, longer than a recipient
// waits for it; the event comes back when it may be done.
var errListing = errors.New("listing the account's followers")

// refresh lists app's followers unless that was done within
// FollowerListEvery, waiting up to FollowerListWait for the listing. It
// reports whether a listing ended while it waited, so that the caller
// looks again. A listing that fails is logged and counted, not returned:
// the people it did not learn of are taken for people who do not follow,
// until the next listing.
func (f *followerLists) refresh(ctx context.Context, app string) (bool, error) {
	cfg := f.b.cfg
	f.mu.Lock()
	l := f.apps[app]
	if l == nil {
		l = &listing{}
		f.apps[app] = l
	}
	if !l.running {
		if !l.started.IsZero() && cfg.Now().Sub(l.started) < cfg.FollowerListEvery {
			f.mu.Unlock()
			return false, nil
		}
		if f.ctx.Err() != nil {
			f.mu.Unlock()
			return false, f.ctx.Err()
		}
		l.running, l.started, l.done = true, cfg.Now(), make(chan struct{})
		f.wg.Add(1)
		go f.run(app, l)
	}
	done := l.done
	f.mu.Unlock()
	wait := time.NewTimer(cfg.FollowerListWait)
	defer wait.Stop()
	select {
	case <-done:
		return true, nil
	case <-wait.C:
		return false, &retryAt{at: cfg.Now().Add(cfg.FollowerListWait), err: fmt.Errorf("app %s: %w", app, errListing)}
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (f *followerLists) run(app string, l *listing) {
	defer f.wg.Done()
	start := time.Now()
	n, err := f.list(f.ctx, app)
	outcome := "ok"
	if err != nil {
		outcome = "error"
		f.b.repeats.warn(f.b.log, "listing an official account's followers failed; people it did not learn of are taken for non-followers until the next listing",
			"app", app, "learnt", n, "err", err)
	} else {
		f.b.log.Info("listed an official account's followers", "app", app, "learnt", n, "took", time.Since(start).Round(time.Millisecond))
	}
	f.b.metrics.followerLists.WithLabelValues(app, outcome).Inc()
	f.mu.Lock()
	l.running = false
	close(l.done)
	f.mu.Unlock()
}

// list walks app's follower list and saves what user info says of the
// followers not known with a unionid. It returns how many it saved.
func (f *followerLists) list(ctx context.Context, app string) (int, error) {
	store, wx := f.b.cfg.Store, f.b.cfg.WeChat
	saved := 0
	for next := ""; ; {
		page, err := wx.Followers(ctx, app, next)
		if err != nil {
			return saved, err
		}
		var ask []string
		asked := make(map[string]storage.Follower)
		for _, id := range page.OpenIDs {
			known, ok, err := store.Follower(ctx, app, id)
			if err != nil {
				return saved, err
			}
			if !ok || !known.Following || known.UnionID == "" {
				ask = append(ask, id)
				asked[id] = known
			}
		}
		// Openids WeChat refuses (gone since the page) are left out.
		infos, err := wx.UserInfoBatch(ctx, app, ask)
		if err != nil && !errors.Is(err, wechat.ErrInvalidOpenID) {
			return saved, err
		}
		changes := make([]storage.FollowChange, 0, len(infos))
		now := f.b.cfg.Now()
		for _, in := range infos {
			known, ok := asked[in.OpenID]
			if !ok {
				continue // not one asked about
			}
			// A push that arrives while the answer is on its way wins.
			changes = append(changes, storage.FollowChange{App: app, OpenID: in.OpenID, UnionID: in.UnionID,
				Following: in.Subscribed, Source: storage.SourceUserInfo, At: now, Asked: &known})
		}
		if len(changes) > 0 {
			if err := store.SaveFollowers(ctx, changes...); err != nil {
				return saved, err
			}
			saved += len(changes)
		}
		if page.Next == "" {
			return saved, nil
		}
		next = page.Next
	}
}
