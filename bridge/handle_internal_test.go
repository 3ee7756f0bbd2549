package bridge

import (
	"fmt"
	"testing"
)

// Events to the same people start at places of their own, so the task
// workers do not all wait on the same few people (see startAt).
func TestEventsStartAtPlacesOfTheirOwn(t *testing.T) {
	const events, recipients = 256, 2000
	at := map[int]int{}
	for i := range events {
		s := startAt(recipients, fmt.Sprintf("evt-%d", i))
		if s < 0 || s >= recipients {
			t.Fatalf("start %d of %d", s, recipients)
		}
		at[s]++
	}
	// Spread evenly, 256 events take about 240 different places of 2,000;
	// walking in step, they all take one.
	if len(at) < 200 {
		t.Errorf("256 events start at %d places of 2,000", len(at))
	}
	for s, n := range at {
		if n > 4 {
			t.Errorf("%d events start at %d", n, s)
		}
	}
	if got := startAt(1, "any"); got != 0 {
		t.Errorf("one task starts at %d", got)
	}
}
