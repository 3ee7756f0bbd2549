package console

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Apply feeds the model one message of the output stream, as Follow does:
// subject decides what it is (prefix wxbridge).
func (m *Model) Apply(subject string, h nats.Header, data []byte, stored time.Time, live bool) error {
	kind := kindResult
	switch {
	case subject == "wxbridge.dead":
		kind = kindDead
	case len(subject) > len("wxbridge.subscriptions.") && subject[:len("wxbridge.subscriptions.")] == "wxbridge.subscriptions.":
		kind = kindChange
	}
	return m.apply(kind, h, data, stored, live)
}

// Join opens a live client as the SSE handler does; Items and Gone are its
// queue and its dropped signal.
func (m *Model) Join(f Filter) (items <-chan LiveItem, gone <-chan struct{}, leave func(), err error) {
	c, err := m.hub.join(f)
	if err != nil {
		return nil, nil, nil, err
	}
	return c.items, c.gone, func() { m.hub.leave(c) }, nil
}
