package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lineCounter counts the lines a child process writes.
type lineCounter struct {
	mu    sync.Mutex
	lines int
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.lines += strings.Count(string(p), "\n")
	c.mu.Unlock()
	return len(p), nil
}

func (c *lineCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lines
}

// A hundred poison events, more than the consumer's in-flight slots, do not
// stop the real binary: each becomes one dead letter, the good events
// published after them are sent, /readyz stays ready, and the log says so in
// about a line per poison event rather than a line per redelivery.
func TestPoisonEventsDoNotStopTheBridge(t *testing.T) {
	r := newCrashRig(t)
	logs := &lineCounter{}
	r.stderr = logs
	r.start("")
	r.users(1, 10)
	js, _ := jetstream.New(r.nc)
	const poison = 100
	for i := 0; i < poison; i++ {
		m := nats.NewMsg("events.notice.posted")
		switch i % 3 {
		case 0: // an id no state could hold as a key
			m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("%d-%s", i, strings.Repeat("x", 40000)))
			m.Data = []byte(`{"user_id":"u0","text":"x","ref":"1"}`)
		case 1: // a body whose dead letter is as large as the server allows
			m.Data = []byte(`{"pad":"` + strings.Repeat("p", 4<<20) + `"}`)
		default: // a header that pretends to be the bridge's own, and no JSON
			m.Header.Set("Wxbridge-Stream-Seq", "1")
			m.Data = []byte("not json")
		}
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("after-%d", i)
		ids = append(ids, id)
		r.publish("notice.posted", id, map[string]any{"user_id": "u0", "text": "good", "ref": id})
	}
	for id, res := range r.outcomes(ids) {
		if res.Status != "sent" {
			t.Errorf("%s after the poison: %+v", id, res)
		}
	}
	dead := 0
	readStream(t, r.nc, "wxbridge.dead", func(n int) bool { return n >= poison }, func(jetstream.Msg) { dead++ }, func() { dead = 0 })
	if dead != poison {
		t.Errorf("%d dead letters for %d poison events", dead, poison)
	}
	resp, err := http.Get("http://" + r.httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the poison: %d %s", resp.StatusCode, body)
	}
	if n := logs.count(); n > 3*poison {
		t.Errorf("%d log lines for %d poison events", n, poison)
	}
	t.Logf("%d poison events: %d dead letters, %d log lines, the good events after them sent", poison, dead, logs.count())
	r.stop()
}
