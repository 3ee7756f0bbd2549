package rules

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Limits on what one templated value or one `when` condition may cost. A
// rules file is written by people who mean well, event data by anyone who
// can publish: without limits one careless {{ range }} or one huge event
// costs seconds and gigabytes. A value or condition over a limit is a
// *DataError for its rule (the bridge's invalid_data), whose Err is one of
// ErrIterations, ErrValueSize, ErrWork and ErrTime. docs/rules.md lists
// them under "Limits".
const (
	// MaxValueBytes is the most one value (a keyword, the page, a
	// recipient field, a dedupe key) may print. A whole event is at most
	// 1 MiB with NATS's default max_payload: a value longer than that can
	// only come from a loop or a blow-up.
	MaxValueBytes = 1 << 20

	// MaxIterations is the most range iterations the template of one
	// value may make, all of its ranges together: a range counts its
	// items when it starts, and a range inside a range counts every inner
	// iteration. In a `when` condition it is the most times its closures
	// ({ ... } in all, any, filter...) may run.
	MaxIterations = 10_000

	// MaxWorkBytes is the most text the functions of one value or
	// condition may read or build (join, printf, upper, len, lists
	// printed...): it stops work that prints nothing, like a join inside
	// a range whose output is thrown away.
	MaxWorkBytes = 16 << 20

	// MaxEvalTime is the most time one value or condition may take. It is
	// the last resort behind the other limits: the clock is read once
	// every 64 function calls, range iterations or closure runs, so a
	// template that makes fewer never reads it.
	MaxEvalTime = 250 * time.Millisecond
)

// The errors a value or condition over a limit fails with.
var (
	ErrIterations = fmt.Errorf("over the limit of %d iterations (see Limits in docs/rules.md)", MaxIterations)
	ErrValueSize  = fmt.Errorf("over the limit of %d bytes of output (see Limits in docs/rules.md)", MaxValueBytes)
	ErrWork       = fmt.Errorf("over the limit of %d bytes read or built by functions (see Limits in docs/rules.md)", MaxWorkBytes)
	ErrTime       = fmt.Errorf("over the time limit of %v (see Limits in docs/rules.md)", MaxEvalTime)
)

// itemCost is what one item of a list costs when it is printed: the
// 16-byte string header of its part, whatever the part.
const itemCost = 16

// evalTimeLimit is MaxEvalTime; tests shorten it.
var evalTimeLimit = MaxEvalTime

// clockEvery is how many ticks pass between two readings of the clock.
const clockEvery = 64

// budget is what one rendering of a value, or one evaluation of a
// condition, has spent so far. Each execution has its own; a nil budget
// counts nothing (static checks and Fit use one).
type budget struct {
	iterations, work, ticks int
	start                   time.Time
	err                     error // the first limit reached; everything after it fails
}

func newBudget() budget { return budget{start: time.Now()} }

// iterate counts n iterations before they run.
func (b *budget) iterate(n int) error {
	if b == nil {
		return nil
	}
	if b.err == nil && n > MaxIterations-b.iterations {
		b.err = ErrIterations
	}
	b.iterations += min(n, MaxIterations+1)
	return b.tick()
}

// spend counts n bytes that a function read or built.
func (b *budget) spend(n int) error {
	if b == nil {
		return nil
	}
	if b.err == nil && n > MaxWorkBytes-b.work {
		b.err = ErrWork
	}
	b.work += min(n, MaxWorkBytes+1)
	return b.tick()
}

// tick is one unit of progress: a call, an iteration. It reads the clock
// now and then.
func (b *budget) tick() error {
	if b == nil {
		return nil
	}
	if b.err != nil {
		return b.err
	}
	if b.ticks++; b.ticks%clockEvery == 0 && time.Since(b.start) >= evalTimeLimit {
		b.err = ErrTime
	}
	return b.err
}

func (b *budget) failed() bool { return b != nil && b.err != nil }

// Error messages quote values of the event shortened: they travel in
// results, dead letters and logs, and an event can be megabytes.
const (
	quoteRunes   = 40  // a value quoted in a message of ours
	messageRunes = 160 // a message of text/template's or expr's, which may hold a value anywhere
)

// quote shows a value in an error message: quoted, and when it is long,
// its beginning and its length.
func quote(s string) string {
	if len(s) <= quoteRunes || utf8.RuneCountInString(s) <= quoteRunes {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s (%d bytes)", strconv.Quote(truncate(s, quoteRunes)), len(s))
}

// capMessage shortens a message that may quote a value anywhere in it,
// keeping its beginning, which says what went wrong.
func capMessage(msg string) string { return shorten(msg, len(msg)) }

// shorten is capMessage for a message that was size bytes long before it
// was cut and tidied.
func shorten(msg string, size int) string {
	if size <= messageRunes || (size == len(msg) && utf8.RuneCountInString(msg) <= messageRunes) {
		return msg
	}
	return fmt.Sprintf("%s (%d bytes)", truncate(msg, messageRunes), size)
}
