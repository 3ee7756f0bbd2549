package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Matched is a rule an event matched. Err is set when the rule's `when`
// condition could not be evaluated for the event (a field of the wrong
// type, say): the rule is still returned, so the bridge can report an
// invalid_data failure for it instead of silently not sending. Err is a
// *DataError with Keyword "when", like the other per-event data problems.
type Matched struct {
	Rule *Rule
	Err  error
}

// matchIndex finds candidate rules without looking at every rule: exact
// types by map lookup, wildcard patterns (usually few) by token
// comparison.
type matchIndex struct {
	exact map[string][]int // type -> rule indexes, ascending
	wild  []wildPattern
}

type wildPattern struct {
	rule   int
	tokens []string // "*" matches one token
	tail   bool     // the pattern ended in ">": one or more further tokens
}

func (s *Set) buildIndex() {
	s.index = matchIndex{exact: map[string][]int{}}
	for i, r := range s.Rules {
		for _, p := range r.On {
			if !strings.ContainsAny(p, "*>") {
				if l := s.index.exact[p]; len(l) == 0 || l[len(l)-1] != i {
					s.index.exact[p] = append(l, i)
				}
				continue
			}
			w := wildPattern{rule: i, tokens: strings.Split(p, ".")}
			if w.tokens[len(w.tokens)-1] == ">" {
				w.tail, w.tokens = true, w.tokens[:len(w.tokens)-1]
			}
			s.index.wild = append(s.index.wild, w)
		}
	}
}

func (w *wildPattern) match(tokens []string) bool {
	if len(tokens) < len(w.tokens) || (!w.tail && len(tokens) != len(w.tokens)) || (w.tail && len(tokens) == len(w.tokens)) {
		return false
	}
	for i, t := range w.tokens {
		if t != "*" && t != tokens[i] {
			return false
		}
	}
	return true
}

// Match returns the rules whose `on` matches ev.Type and whose `when` is
// true (or could not be evaluated, with Err set), in file order. Types
// match like NATS subjects: "*" is one dot-separated token, a trailing ">"
// one or more.
func (s *Set) Match(ev *Event) []Matched {
	ids := s.index.exact[ev.Type]
	if len(s.index.wild) > 0 {
		var buf [16]string
		tokens := splitTokens(ev.Type, buf[:0])
		var extra []int
		for i := range s.index.wild {
			w := &s.index.wild[i]
			if w.match(tokens) && !slices.Contains(ids, w.rule) && !slices.Contains(extra, w.rule) {
				extra = append(extra, w.rule)
			}
		}
		if len(extra) > 0 {
			ids = append(slices.Clone(ids), extra...) // never append into the index
			slices.Sort(ids)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	out := make([]Matched, 0, len(ids))
	var env map[string]any
	for _, i := range ids {
		r := s.Rules[i]
		if r.when == nil {
			out = append(out, Matched{Rule: r})
			continue
		}
		if env == nil {
			env = whenEnv(ev)
		}
		ok, err := r.evalWhen(env)
		if err != nil {
			out = append(out, Matched{Rule: r, Err: err})
		} else if ok {
			out = append(out, Matched{Rule: r})
		}
	}
	return out
}

// splitTokens is strings.Split(typ, ".") into buf, to keep Match free of
// allocations for ordinary types.
func splitTokens(typ string, buf []string) []string {
	for {
		i := strings.IndexByte(typ, '.')
		if i < 0 {
			return append(buf, typ)
		}
		buf = append(buf, typ[:i])
		typ = typ[i+1:]
	}
}

// checkPattern explains why an `on` pattern can never match, or returns nil.
func checkPattern(p string) error {
	if p == "" {
		return errors.New("empty pattern: it matches no event type")
	}
	if strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%q has spaces or control characters: event types have none", p)
	}
	tokens := strings.Split(p, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return fmt.Errorf("%q has an empty token (a leading, trailing or double dot): it can never match", p)
		case t == ">" && i != len(tokens)-1:
			return fmt.Errorf("%q has > before the end: > matches the rest of the type and must be the last token", p)
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("%q has %q: wildcards are whole tokens (order.* or order.>, not order*)", p, t)
		}
	}
	return nil
}
