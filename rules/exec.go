package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// execution is the root value ($, and . at the top) of one execution of
// a template: the event's variables, the budget the execution spends, and
// its output. Functions whose work grows with their input take it as their
// first argument: the rewritten template passes $ to them (see text).
type execution struct {
	vars map[string]any
	budget
	out strings.Builder
}

// Write is the output of the execution. Everything printed goes through
// it, so it is also where a spent budget stops the execution (text/template
// stops at the first write error) and where the clock is read as the
// output grows.
func (x *execution) Write(p []byte) (int, error) {
	if err := x.tick(); err != nil {
		return 0, err
	}
	if len(p) > MaxValueBytes-x.out.Len() {
		x.err = ErrValueSize
		return 0, x.err
	}
	return x.out.Write(p)
}

var execErrRE = regexp.MustCompile(`^template: [^:]*:\d+:\d+: executing "[^"]*" at <.*>: `)

func (x *text) exec(vars map[string]any) (string, error) {
	if x == nil {
		return "", nil
	}
	if x.tmpl == nil {
		return x.src, nil
	}
	if x.fast != nil {
		// Literal text and event fields: no loop, no function, so the
		// output can only be as long as the fields it prints.
		var b strings.Builder
		for _, p := range x.fast {
			if p.path == nil {
				b.WriteString(p.lit)
			} else {
				b.WriteString(x.print(nil, get(vars, p.path...)))
			}
			if b.Len() > MaxValueBytes {
				return "", ErrValueSize
			}
		}
		return b.String(), nil
	}
	e := &execution{vars: vars, budget: newBudget()}
	err := x.tmpl.Execute(e, e)
	switch {
	case e.err != nil:
		// A limit was reached, and text/template says so in its own
		// words, or not at all if the template ended first.
		return "", e.err
	case err != nil:
		// text/template quotes values whole ("range can't iterate over
		// ..."), and a value can be an event's megabyte: only the
		// beginning of the message is worth the regular expressions.
		full := err.Error()
		msg := full[:min(len(full), 4<<10)]
		if i := strings.LastIndex(msg, "error calling "); i >= 0 {
			msg = msg[i+len("error calling "):]
		} else {
			msg = execErrRE.ReplaceAllString(msg, "")
		}
		return "", errors.New(shorten(unrewrite(msg), len(full)))
	}
	return e.out.String(), nil
}

// rangeOver is the end of every range's pipeline: it counts the
// iterations the range is about to make, all at once, so that a range
// over a hundred million stops before its first. It gives its value back
// unchanged, and text/template ranges over it as it would have.
func (x *execution) rangeOver(v any) (any, error) {
	if r, ok := v.(*execution); ok {
		v = r.vars
	}
	rv := reflect.ValueOf(v)
	for (rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface) && !rv.IsNil() {
		rv = rv.Elem()
	}
	n := 0
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n = int(min(max(rv.Int(), 0), MaxIterations+1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n = int(min(rv.Uint(), MaxIterations+1))
	case reflect.Slice, reflect.Array, reflect.Map:
		n = rv.Len()
	case reflect.Func, reflect.Chan:
		// Nothing in event data is one, and neither can be counted
		// before it runs.
		return nil, fmt.Errorf("cannot range over a %s", rv.Kind())
	}
	return v, x.iterate(n)
}

// tickIteration starts the body of every range: the counting is done,
// but the clock is read as the iterations go.
func (x *execution) tickIteration() (bool, error) { return false, x.tick() }

// print, printf and println are text/template's, counted: fmt has no
// budget, so what it will read is weighed first and what it built after.
func (x *execution) print(args ...any) string {
	if x.weigh(args) != nil {
		return ""
	}
	return x.built(fmt.Sprint(args...))
}

func (x *execution) printf(format string, args ...any) string {
	if x.weigh(args) != nil {
		return ""
	}
	return x.built(fmt.Sprintf(format, args...))
}

func (x *execution) println(args ...any) string {
	if x.weigh(args) != nil {
		return ""
	}
	return x.built(fmt.Sprintln(args...))
}

// escape is html, js and urlquery: text/template's escapers, counted.
func (x *execution) escape(escaper func(...any) string, args []any) string {
	if x.weigh(args) != nil {
		return ""
	}
	return x.built(escaper(args...))
}

// built counts a text a function built, and gives it unless that spent
// the budget.
func (x *execution) built(s string) string {
	if x.spend(len(s)) != nil {
		return ""
	}
	return s
}

// weigh counts what printing args will read, and puts the event's
// variables in place of the root, which fmt would print as a struct.
func (x *execution) weigh(args []any) error {
	for i, a := range args {
		if r, ok := a.(*execution); ok {
			args[i] = r.vars
		}
		if err := x.weighValue(args[i]); err != nil {
			return err
		}
	}
	return nil
}

func (x *execution) weighValue(v any) error {
	switch v := v.(type) {
	case string:
		return x.spend(len(v))
	case json.Number:
		return x.spend(len(v))
	case *execution:
		return x.weighValue(v.vars)
	case []any:
		if err := x.spend(len(v) * itemCost); err != nil {
			return err
		}
		for _, e := range v {
			if err := x.weighValue(e); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if err := x.spend(len(v) * itemCost); err != nil {
			return err
		}
		for k, e := range v {
			if err := x.spend(len(k)); err != nil {
				return err
			}
			if err := x.weighValue(e); err != nil {
				return err
			}
		}
		return nil
	}
	return x.tick()
}
