package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// loader walks the YAML node tree of a rules file. Walking nodes rather
// than decoding into structs is what gives every problem its line and
// column, lets one pass report all of them, and makes unknown fields
// errors with a position and a suggestion.
type loader struct {
	file  string
	lines []string
	env   func(string) (string, bool)
	errs  ErrorList
	pos   map[string]Pos
	// badKeywords are template keywords ("t.thing1") already reported, so
	// the rules that use them do not repeat the problem.
	badKeywords map[string]bool
	// merged caches the entries of mappings that merge keys pull in, and
	// merging marks those being computed: YAML aliases can make a mapping
	// merge itself, or a few lines merge a billion entries.
	merged  map[*yaml.Node][]pair
	merging map[*yaml.Node]bool
}

type pair struct {
	key  string
	k, v *yaml.Node
}

func (l *loader) errorAt(p Pos, field, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: p.Line, Column: p.Column, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (l *loader) errorf(n *yaml.Node, field, format string, args ...any) {
	l.errorAt(nodePos(n), field, format, args...)
}

func nodePos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{}
	}
	return Pos{n.Line, n.Column}
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a value"
	}
}

// pairs lists a mapping's entries in file order, with "<<" merge keys
// applied (the mapping's own keys win) and duplicate keys reported.
func (l *loader) pairs(n *yaml.Node, field string) []pair {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		l.errorf(n, field, "want a mapping (key: value), not %s", kindName(n))
		return nil
	}
	var own, merged []pair
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" {
			for _, m := range mergeSources(resolve(v)) {
				merged = append(merged, l.mergedPairs(k, m, field)...)
			}
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			l.errorf(k, subfield(field, k.Value), "defined twice (first at line %d)", prev.Line)
			continue
		}
		seen[k.Value] = k
		own = append(own, pair{k.Value, k, v})
	}
	for _, p := range merged {
		if _, ok := seen[p.key]; !ok {
			seen[p.key] = p.k
			own = append(own, p)
		}
	}
	return own
}

func (l *loader) mergedPairs(k, m *yaml.Node, field string) []pair {
	if p, ok := l.merged[m]; ok {
		return p
	}
	if l.merging[m] {
		l.errorf(k, field, "<< merges a mapping into itself")
		return nil
	}
	l.merging[m] = true
	p := l.pairs(m, field)
	delete(l.merging, m)
	l.merged[m] = p
	return p
}

func mergeSources(v *yaml.Node) []*yaml.Node {
	if v.Kind == yaml.SequenceNode {
		out := make([]*yaml.Node, len(v.Content))
		for i, c := range v.Content {
			out[i] = resolve(c)
		}
		return out
	}
	return []*yaml.Node{v}
}

// fields is pairs for a mapping with a fixed set of keys: an unknown key
// is an error, with the nearest known key as a suggestion.
func (l *loader) fields(n *yaml.Node, field string, known ...string) map[string]pair {
	out := map[string]pair{}
	for _, p := range l.pairs(n, field) {
		if !slices.Contains(known, p.key) {
			msg := fmt.Sprintf("unknown field %q", p.key)
			if s := suggest(p.key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += " (known: " + strings.Join(known, ", ") + ")"
			}
			l.errorf(p.k, subfield(field, p.key), "%s", msg)
			continue
		}
		l.pos[subfield(field, p.key)] = nodePos(p.v)
		out[p.key] = p
	}
	return out
}

func subfield(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// require reports the fields a mapping must have.
func (l *loader) require(n *yaml.Node, m map[string]pair, field string, keys ...string) {
	for _, k := range keys {
		if p, ok := m[k]; !ok || isNull(resolve(p.v)) {
			at := n
			if ok {
				at = p.k
			}
			l.errorf(at, subfield(field, k), "missing required field %s", k)
		}
	}
}

// str reads a scalar with ${VAR} expanded. ok is false (and the problem
// reported) when the node is not a scalar or a variable is missing.
func (l *loader) str(n *yaml.Node, field string) (string, bool) {
	n = resolve(n)
	if isNull(n) {
		return "", true
	}
	if n.Kind != yaml.ScalarNode {
		l.errorf(n, field, "want a single value, not %s", kindName(n))
		return "", false
	}
	v, problems := expandEnv(n.Value, l.env)
	for _, p := range problems {
		l.errorAt(l.offsetPos(n, p.offset), field, "%s", p.msg)
	}
	return v, len(problems) == 0
}

// strList reads a value or a list of values.
func (l *loader) strList(n *yaml.Node, field string) ([]string, []*yaml.Node) {
	n = resolve(n)
	if n.Kind == yaml.SequenceNode {
		var out []string
		var nodes []*yaml.Node
		for i, c := range n.Content {
			if s, ok := l.str(c, fmt.Sprintf("%s[%d]", field, i)); ok {
				out = append(out, s)
				nodes = append(nodes, resolve(c))
			}
		}
		return out, nodes
	}
	if s, ok := l.str(n, field); ok {
		return []string{s}, []*yaml.Node{n}
	}
	return nil, nil
}

// offsetPos is the position of a byte offset within a scalar's value:
// exact for single-line plain and quoted scalars (quoted ones with
// escapes aside) and for block scalars (| and >), approximate otherwise.
func (l *loader) offsetPos(n *yaml.Node, offset int) Pos {
	offset = min(max(offset, 0), len(n.Value))
	before := n.Value[:offset]
	lineNo := strings.Count(before, "\n")
	lineStart := strings.LastIndexByte(before, '\n') + 1
	col := utf8.RuneCountInString(before[lineStart:])
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		src := n.Line + 1 + lineNo
		indent := 0
		if src-1 < len(l.lines) {
			line := l.lines[src-1]
			indent = len(line) - len(strings.TrimLeft(line, " "))
		}
		return Pos{src, indent + 1 + col}
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if lineNo == 0 && !strings.Contains(n.Value, "\n") {
			return Pos{n.Line, n.Column + 1 + col}
		}
	default:
		if lineNo == 0 && !strings.Contains(n.Value, "\n") {
			return Pos{n.Line, n.Column + col}
		}
	}
	return nodePos(n)
}

// lineColPos is offsetPos for a 1-based line and 0-based rune column of a
// scalar's value, as template and expression errors give them.
func (l *loader) lineColPos(n *yaml.Node, line, col int) Pos {
	off := 0
	for i := 1; i < line; i++ {
		j := strings.IndexByte(n.Value[off:], '\n')
		if j < 0 {
			break
		}
		off += j + 1
	}
	rest := n.Value[off:]
	for i := 0; i < col && rest != ""; i++ {
		_, size := utf8.DecodeRuneInString(rest)
		rest = rest[size:]
		off += size
	}
	return l.offsetPos(n, off)
}

var yamlErrRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxErrors turns yaml.v3's parse error into positioned errors.
func (l *loader) syntaxErrors(err error) {
	for _, msg := range strings.Split(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n"), "\n") {
		msg = strings.TrimSpace(msg)
		if m := yamlErrRE.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			l.errorAt(Pos{line, 1}, "", "YAML: %s", m[2])
		} else if msg != "" {
			l.errorAt(Pos{1, 1}, "", "YAML: %s", strings.TrimPrefix(msg, "yaml: "))
		}
	}
}

// suggest returns the known word closest to s, if it is close enough to be
// a typo.
func suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
