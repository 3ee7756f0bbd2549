package rules_test

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/rules"
)

// event builds an event the way the bridge does: data decoded with
// json.Number for numbers.
func event(typ, data string) *rules.Event {
	ev := &rules.Event{ID: "evt-1", Type: typ, Time: time.Date(2026, 11, 21, 14, 5, 0, 0, time.UTC)}
	dec := json.NewDecoder(bytes.NewReader([]byte(data)))
	dec.UseNumber()
	if err := dec.Decode(&ev.Data); err != nil {
		panic(err)
	}
	return ev
}

// mustParse parses a rules file that has no ${VAR}s.
func mustParse(src string) *rules.Set {
	set, err := rules.Parse("rules.yaml", []byte(src), nil)
	if err != nil {
		panic(err)
	}
	return set
}

// cloudEvent reads one of testdata/events.
func cloudEvent(t testing.TB, path string) *rules.Event {
	t.Helper()
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ce struct {
		ID, Type, Time string
		Data           json.RawMessage
	}
	if err := json.Unmarshal(body, &ce); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	ev := event(ce.Type, string(ce.Data))
	ev.ID = ce.ID
	if ev.Time, err = time.Parse(time.RFC3339, ce.Time); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ev
}
