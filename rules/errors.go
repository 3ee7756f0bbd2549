package rules

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a rules file: where it is (File, Line, Column,
// both 1-based), which field (a path like "rules[2].data.thing1") and what
// is wrong.
type Error struct {
	File    string
	Line    int
	Column  int
	Field   string
	Message string
}

// Error formats the problem as "file:line:col: field: message", the form
// editors and CI logs turn into links.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, max(e.Column, 1))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// ErrorList is every problem found in a rules file, in the order they
// appear in it. Parse and Load return one (never empty) so an operator
// fixes everything in one pass instead of one error per deploy attempt.
type ErrorList []*Error

// Error prints one problem per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the individual *Error values.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

func (l ErrorList) sort() {
	sort.SliceStable(l, func(i, j int) bool {
		if l[i].Line != l[j].Line {
			return l[i].Line < l[j].Line
		}
		return l[i].Column < l[j].Column
	})
}

// DataError says that a rule could not be rendered for an event: a keyword
// (or "page", or "dedupe.key") whose value could not be made valid for its
// WeChat type. The bridge reports it as a per-recipient invalid_data
// failure, naming the keyword.
//
// Reason never holds more than a short quote of a value of the event: it
// travels in results, dead letters and logs.
type DataError struct {
	Rule    string
	Keyword string
	Reason  string
	// Err is the cause, when there is one: ErrIterations, ErrValueSize,
	// ErrWork or ErrTime for a value or condition over a limit.
	Err error
}

// ReasonOf says why a value could not be rendered, without the rule and
// keyword a DataError's message repeats: its Reason, or err's message.
func ReasonOf(err error) string {
	var de *DataError
	if errors.As(err, &de) {
		return de.Reason
	}
	return err.Error()
}

func (e *DataError) Error() string {
	return fmt.Sprintf("rule %s: keyword %s: %s", e.Rule, e.Keyword, e.Reason)
}

// Unwrap gives Err, so errors.Is(err, rules.ErrIterations) works.
func (e *DataError) Unwrap() error { return e.Err }
