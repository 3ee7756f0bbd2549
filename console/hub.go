package console

import (
	"errors"
	"sync"
)

// errTooManyClients refuses a live tail past the bound.
var errTooManyClients = errors.New("too many live tails open")

// hub fans live items out to the live tails. Publishing never blocks: a
// client whose queue is full is dropped (its gone channel closes), so one
// slow browser can neither stall the feed nor make it buffer without
// limit.
type hub struct {
	max, queue int

	mu      sync.Mutex
	clients map[*client]struct{}
	dropped int
}

type client struct {
	filter Filter
	items  chan LiveItem
	gone   chan struct{} // closed when the hub dropped the client
}

func newHub(max, queue int) *hub {
	return &hub{max: max, queue: queue, clients: map[*client]struct{}{}}
}

// join adds a client that receives the items f selects.
func (h *hub) join(f Filter) (*client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) >= h.max {
		return nil, errTooManyClients
	}
	c := &client{filter: f, items: make(chan LiveItem, h.queue), gone: make(chan struct{})}
	h.clients[c] = struct{}{}
	return c, nil
}

// leave removes c (whether or not it was dropped).
func (h *hub) leave(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.clients, c)
}

func (h *hub) publish(it LiveItem) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if !c.filter.match(&it) {
			continue
		}
		select {
		case c.items <- it:
		default:
			delete(h.clients, c)
			close(c.gone)
			h.dropped++
		}
	}
}

func (h *hub) counts() (open, dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients), h.dropped
}
