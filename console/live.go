package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Live tail limits. A stream ends with the session or after maxStream,
// whichever comes first (the browser reconnects, and its cookie is checked
// again); a write that takes longer than sseWriteWait drops the client.
const (
	maxStream    = 15 * time.Minute
	sseWriteWait = 10 * time.Second
	sseHeartbeat = 15 * time.Second
	liveBacklog  = 50
)

type liveView struct {
	Filter   Filter
	Rules    []string
	Statuses []string
	Items    []LiveItem
	Open     int
	Max      int
}

var liveStatuses = []string{"sent", "delivered", "skipped", "failed", "undelivered", "accept", "reject", "ban"}

func filterOf(r *http.Request) Filter {
	q := r.URL.Query()
	return Filter{Rule: strings.TrimSpace(q.Get("rule")), Status: strings.TrimSpace(q.Get("status")), Person: strings.TrimSpace(q.Get("person"))}
}

func (c *Console) live(w http.ResponseWriter, r *http.Request, _ session) {
	v := liveView{Filter: filterOf(r), Statuses: liveStatuses, Max: c.cfg.Model.cfg.MaxLiveClients}
	if set := c.cfg.Rules.State().Set; set != nil {
		for _, rl := range set.Rules {
			v.Rules = append(v.Rules, rl.Name)
		}
	}
	v.Items = c.named(c.cfg.Model.Recent(v.Filter, liveBacklog))
	slices.Reverse(v.Items)
	v.Open, _ = c.cfg.Model.LiveClients()
	c.render(w, r, http.StatusOK, "live", page{Title: "Live", Active: "live", Data: v})
}

// named fills in the template names and channels of items.
func (c *Console) named(items []LiveItem) []LiveItem {
	for i := range items {
		c.name(&items[i])
	}
	return items
}

// name fills in an item's template name and channel from the rules in force,
// keeping what a result said itself (the rules may have changed since).
func (c *Console) name(it *LiveItem) {
	if it.Template == "" {
		it.Template = c.templateName(it.App, it.TemplateID)
	}
	if it.Channel == "" {
		it.Channel = c.channelOf(it.App, it.TemplateID)
	}
}

// liveEvents streams results and ledger changes as Server-Sent Events:
// first the recent ones the filter selects, then each as it is read from
// the stream. A client that falls LiveQueue items behind is dropped.
func (c *Console) liveEvents(w http.ResponseWriter, r *http.Request, ss session) {
	f := filterOf(r)
	cl, err := c.cfg.Model.hub.join(f)
	if errors.Is(err, errTooManyClients) {
		http.Error(w, fmt.Sprintf("%d live tails are open already; close one and try again", c.cfg.Model.cfg.MaxLiveClients), http.StatusServiceUnavailable)
		return
	}
	defer c.cfg.Model.hub.leave(cl)

	rc := http.NewResponseController(w)
	// The route's deadlines are for ordinary pages. A tail lives on: a
	// client that leaves ends it through the request's context, one that
	// stops reading through the write deadline of each message.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(sseWriteWait))
		if _, err := w.Write(c.redact(b)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	item := func(it LiveItem) bool {
		c.name(&it)
		it.ID, it.When = it.Key(), c.when(it.At)
		data, _ := json.Marshal(it) // strings, numbers and times: cannot fail
		return send(fmt.Appendf(nil, "event: %s\ndata: %s\n\n", it.Kind, data))
	}
	if !send([]byte("retry: 3000\n\n")) {
		return
	}
	for _, it := range c.cfg.Model.Recent(f, liveBacklog) {
		if !item(it) {
			return
		}
	}
	end := time.NewTimer(min(ss.exp.Sub(c.cfg.Now()), maxStream))
	defer end.Stop()
	beat := time.NewTicker(sseHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-end.C:
			send([]byte("event: end\ndata: {}\n\n"))
			return
		case <-cl.gone:
			send([]byte("event: dropped\ndata: {\"reason\":\"this tail fell too far behind\"}\n\n"))
			return
		case it := <-cl.items:
			if !item(it) {
				return
			}
		case <-beat.C:
			if !send([]byte(": still here\n\n")) {
				return
			}
		}
	}
}
