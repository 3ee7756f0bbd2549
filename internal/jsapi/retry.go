// Package jsapi makes JetStream API requests that a settling cluster may
// leave unanswered: each is tried with a short timeout and tried again
// until it succeeds, fails for good, or the caller's context ends.
package jsapi

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TryTimeout bounds one try. Several bridges creating the same streams at
// once on a fresh cluster see some of their requests go unanswered (an
// update that races a create, measured: every such request timed out, and
// the same request sent again was answered at once).
const TryTimeout = 5 * time.Second

// Retry runs op until it returns nil or a permanent error, or ctx ends.
// An error is permanent when the server refused the request as invalid
// (a 400 that is not a name already in use, which a concurrent create of
// another bridge causes and the next try resolves).
func Retry(ctx context.Context, what string, op func(ctx context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		tctx, cancel := context.WithTimeout(ctx, TryTimeout)
		err := op(tctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case permanent(err):
			return fmt.Errorf("%s: %w", what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, ctx.Err())
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func permanent(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	return api.Code == http.StatusBadRequest && api.ErrorCode != jetstream.JSErrCodeStreamNameInUse
}
