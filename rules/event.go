package rules

import "time"

// Event is a domain event as rules see it. Templates reach its fields as
// .id, .source, .type, .subject, .time and .data; `when` conditions as id,
// source, type, subject, time and data.
//
// Data is decoded JSON: map[string]any, []any, string, bool, nil, and
// json.Number for numbers (float64 and Go integers work too).
type Event struct {
	ID string
	// Source is the CloudEvents source ("" for events that are not
	// CloudEvents).
	Source  string
	Type    string
	Subject string
	Time    time.Time
	Data    any
}

// vars is the root value of templates. It is a map rather than the Event
// itself so templates say .data, not .Data, like the design and the docs.
func (ev *Event) vars() map[string]any {
	return map[string]any{"id": ev.ID, "source": ev.Source, "type": ev.Type, "subject": ev.Subject, "time": ev.Time, "data": ev.Data}
}
