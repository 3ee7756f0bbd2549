package rules

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// text is one templated string of rules.yaml: a keyword value, a page, a
// recipient, a dedupe key.
//
// It is text/template with three changes made to the parsed tree, so the
// language behaves the way notification text needs and no event can make
// it run away:
//
//   - field access (.data.buyer.name, $x.name) goes through get, which
//     yields nil for anything missing or of the wrong shape instead of an
//     execution error, so `default` can stand in for it and a missing
//     value surfaces as an empty keyword that names itself;
//   - every printed value goes through out, which prints json.Number
//     exactly, floats without exponents, times as RFC 3339, lists as lists
//     (and, in recipient fields, one recipient per item);
//   - every execution carries a budget (see limits.go) in its root value
//     ($): functions that work in proportion to their input get $ as a
//     first argument and count against it, every range counts its items
//     before it starts, and the output refuses to grow past MaxValueBytes
//     and reads the clock as it grows (a range whose body may print
//     nothing reads it through a tick). text/template cannot be stopped
//     from outside, so it is stopped from inside: a spent budget fails
//     the next write. {{ define }}, {{ block }} and {{ template }}, which
//     would run with another $, and assignments to $ are refused when the
//     file is checked.
type text struct {
	src  string
	tmpl *template.Template // nil when src has no actions: a constant
	// lits is the literal text at the top level of the template, outside
	// any action or block: what every rendering contains, whatever the
	// event. Static checks use it.
	lits []string
	// fast, when set, is the whole template as literal text and plain
	// field references ("order:{{ .data.order_id }}"), the common case:
	// exec concatenates them without text/template's reflection, several
	// times faster, with the same result.
	fast  []fastPart
	print func(*budget, any) string
}

type fastPart struct {
	lit  string
	path []string // nil for literal text
}

const (
	fnGet   = "__get"
	fnOut   = "__out"
	fnRange = "__range"
	fnTick  = "__tick"
)

// Markers in the output of recipient templates. Neither survives
// rendering: control characters are not valid in ids.
const (
	listSep     = "\x1f" // between the items of a printed list
	emptyMarker = "\x00" // where a placeholder printed nothing
)

// textError is a template that does not parse or cannot be allowed: the
// 1-based line within the template, and the message without
// text/template's prefix.
type textError struct {
	line int
	msg  string
	// fn is the unknown function's name, for a column.
	fn string
	// off is the byte offset of the problem in the template, or -1.
	off int
}

func (e *textError) Error() string { return e.msg }

var (
	parseErrRE = regexp.MustCompile(`^template: [^:]*:(\d+):(?:\d+:)? ?(.*)$`)
	undefFnRE  = regexp.MustCompile(`function "([^"]+)" not defined`)
)

func parseText(src string, fs *funcSet) (*text, error) {
	x := &text{src: src}
	if !strings.Contains(src, "{{") {
		x.lits = []string{src}
		return x, nil
	}
	t, err := template.New("x").Option("missingkey=zero").Funcs(fs.funcs).Parse(src)
	if err != nil {
		te := &textError{line: 1, msg: err.Error(), off: -1}
		if m := parseErrRE.FindStringSubmatch(err.Error()); m != nil {
			te.line, _ = strconv.Atoi(m[1])
			te.msg = m[2]
		}
		if m := undefFnRE.FindStringSubmatch(te.msg); m != nil {
			te.fn = m[1]
			te.msg = "unknown function " + strconv.Quote(m[1]) + " (see docs/rules.md for the functions templates have)"
		}
		return nil, te
	}
	if n, msg := unbounded(t); n != nil {
		off := int(n.Position())
		return nil, &textError{line: 1 + strings.Count(src[:min(off, len(src))], "\n"), msg: msg, off: off}
	}
	x.print = fs.print
	x.fast = fastParts(t)
	constant := true
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Root == nil {
			continue
		}
		rewriteList(tt.Root)
		if tt.Name() != "x" || !onlyText(tt.Root) {
			constant = false
		}
	}
	if t.Tree != nil && t.Root != nil {
		for _, n := range t.Root.Nodes {
			if tn, ok := n.(*parse.TextNode); ok {
				x.lits = append(x.lits, string(tn.Text))
			}
		}
	}
	if constant {
		// "{{/* comment */}}" and the like: nothing to execute.
		x.src = strings.Join(x.lits, "")
		return x, nil
	}
	x.tmpl = t
	return x, nil
}

// unbounded finds what the budget could not hold: a template run with
// another root ($), an assignment to $, ranges over numbers that are
// sure to go over MaxIterations. It returns the node and the message.
func unbounded(t *template.Template) (parse.Node, string) {
	for _, tt := range t.Templates() {
		if tt.Name() != "x" && tt.Tree != nil && tt.Root != nil {
			return tt.Root, "{{ define }} and {{ block }} are not supported: write the text out, with if, with and range"
		}
	}
	if t.Tree == nil || t.Root == nil {
		return nil, ""
	}
	var bad parse.Node
	var msg string
	eachPipe(t.Root, func(n parse.Node, p *parse.PipeNode) bool {
		if tn, ok := n.(*parse.TemplateNode); ok {
			bad, msg = tn, "{{ template }} is not supported: write the text out, with if, with and range"
			return false
		}
		for _, d := range p.Decl {
			if d.Ident[0] == "$" {
				bad, msg = d, "$ is the event and cannot be assigned: name the variable, as in $x := ..."
				return false
			}
		}
		return true
	})
	if bad != nil {
		return bad, msg
	}
	if n, node := literalIterations(t.Root, 1); node != nil {
		if k, _ := rangeLiteral(node.Pipe); k > MaxIterations {
			return node, fmt.Sprintf("range over %d: more than the %d iterations one value may make (see Limits in docs/rules.md)", k, MaxIterations)
		}
		return node, fmt.Sprintf("these ranges over numbers make at least %d iterations, more than the %d one value may make (see Limits in docs/rules.md)", n, MaxIterations)
	}
	return nil, ""
}

// eachPipe calls fn with every pipeline in l and the node it belongs to,
// nested ones included, until fn returns false.
func eachPipe(l *parse.ListNode, fn func(parse.Node, *parse.PipeNode) bool) bool {
	if l == nil {
		return true
	}
	var pipe func(parse.Node, *parse.PipeNode) bool
	pipe = func(n parse.Node, p *parse.PipeNode) bool {
		if p == nil {
			return true
		}
		if !fn(n, p) {
			return false
		}
		for _, c := range p.Cmds {
			for _, a := range c.Args {
				switch a := a.(type) {
				case *parse.PipeNode:
					if !pipe(a, a) {
						return false
					}
				case *parse.ChainNode:
					if sub, ok := a.Node.(*parse.PipeNode); ok && !pipe(sub, sub) {
						return false
					}
				}
			}
		}
		return true
	}
	for _, n := range l.Nodes {
		ok := true
		switch n := n.(type) {
		case *parse.ActionNode:
			ok = pipe(n, n.Pipe)
		case *parse.TemplateNode:
			ok = fn(n, n.Pipe) && pipe(n, n.Pipe)
		case *parse.IfNode:
			ok = pipe(n, n.Pipe) && eachPipe(n.List, fn) && eachPipe(n.ElseList, fn)
		case *parse.RangeNode:
			ok = pipe(n, n.Pipe) && eachPipe(n.List, fn) && eachPipe(n.ElseList, fn)
		case *parse.WithNode:
			ok = pipe(n, n.Pipe) && eachPipe(n.List, fn) && eachPipe(n.ElseList, fn)
		}
		if !ok {
			return false
		}
	}
	return true
}

// literalIterations counts the iterations that the ranges over integer
// literals in l make when l runs mult times, nested ranges multiplying
// and of two branches the larger. It stops at the range that takes the
// count over MaxIterations and returns it. Ranges over anything else
// count as one iteration: the budget catches them when they run.
func literalIterations(l *parse.ListNode, mult int) (int, *parse.RangeNode) {
	if l == nil {
		return 0, nil
	}
	total := 0
	for _, n := range l.Nodes {
		switch n := n.(type) {
		case *parse.RangeNode:
			inner := mult
			if k, ok := rangeLiteral(n.Pipe); ok {
				inner = mult * int(min(max(k, 0), MaxIterations+1))
				if total += inner; total > MaxIterations {
					return total, n
				}
			}
			c, bad := literalIterations(n.List, inner)
			if total += c; bad != nil || total > MaxIterations {
				return total, cmp.Or(bad, n)
			}
			c, bad = literalIterations(n.ElseList, mult)
			if total += c; bad != nil {
				return total, bad
			}
		case *parse.IfNode:
			c, bad := branchIterations(&n.BranchNode, mult)
			if total += c; bad != nil {
				return total, bad
			}
		case *parse.WithNode:
			c, bad := branchIterations(&n.BranchNode, mult)
			if total += c; bad != nil {
				return total, bad
			}
		}
		if total > MaxIterations {
			return total, nil
		}
	}
	return total, nil
}

func branchIterations(b *parse.BranchNode, mult int) (int, *parse.RangeNode) {
	a, bad := literalIterations(b.List, mult)
	if bad != nil {
		return a, bad
	}
	e, bad := literalIterations(b.ElseList, mult)
	return max(a, e), bad
}

// rangeLiteral is the number a range's pipeline is, when it is only an
// integer literal: {{ range 5 }}, {{ range $i := 5 }}.
func rangeLiteral(p *parse.PipeNode) (int64, bool) {
	if p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return 0, false
	}
	num, ok := p.Cmds[0].Args[0].(*parse.NumberNode)
	if !ok || !num.IsInt {
		return 0, false
	}
	return num.Int64, true
}

// fastParts splits a template made only of text and field references
// ({{ .data.a.b }}) into parts, or returns nil.
func fastParts(t *template.Template) []fastPart {
	if len(t.Templates()) != 1 || t.Tree == nil || t.Root == nil {
		return nil
	}
	var parts []fastPart
	for _, n := range t.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			parts = append(parts, fastPart{lit: string(n.Text)})
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
				return nil
			}
			f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok {
				return nil
			}
			parts = append(parts, fastPart{path: f.Ident})
		default:
			return nil
		}
	}
	return parts
}

func onlyText(l *parse.ListNode) bool {
	for _, n := range l.Nodes {
		switch n.(type) {
		case *parse.TextNode, *parse.CommentNode:
		default:
			return false
		}
	}
	return true
}

// constant reports whether the text renders the same for every event.
func (x *text) constant() bool { return x.tmpl == nil }

var getterRE = regexp.MustCompile(`\(?` + fnGet + ` (\.|\$\w*) ((?:"[^"]*" ?)+)\)?`)

// execFuncs are the functions that take the execution as their first
// argument: the rewrite passes $ to them.
var execFuncs = func() map[string]bool {
	m := map[string]bool{}
	for name, f := range newFuncSet(time.UTC, false).funcs {
		if t := reflect.TypeOf(f); t.NumIn() > 0 && t.In(0) == reflect.TypeFor[*execution]() {
			m[name] = true
		}
	}
	return m
}()

var (
	// rootArgRE is the $ the rewrite passed to a function, as
	// text/template prints the command: "join $ ...", or "(list $)" for a
	// function named as an argument.
	rootArgRE = func() *regexp.Regexp {
		names := slices.Sorted(maps.Keys(execFuncs))
		for i, n := range names {
			names[i] = regexp.QuoteMeta(n)
		}
		alt := strings.Join(names, "|")
		return regexp.MustCompile(`\((` + alt + `) \$\)|\b(` + alt + `) \$`)
	}()
	wrongArgsRE = regexp.MustCompile(`wrong number of args for (\w+): want (at least )?(\d+) got (\d+)`)
	hiddenCalls = strings.NewReplacer(" | "+fnOut, "", fnOut+" ", "", " | "+fnRange, "")
)

// unrewrite shows the template as its author wrote it in an error message:
// (__get . "data" "x") is .data.x again, and "join $ ..." is "join ...".
func unrewrite(msg string) string {
	msg = getterRE.ReplaceAllStringFunc(msg, func(m string) string {
		sub := getterRE.FindStringSubmatch(m)
		base := sub[1]
		if base == "." {
			base = ""
		}
		for _, k := range strings.Fields(sub[2]) {
			base += "." + strings.Trim(k, `"`)
		}
		return base
	})
	msg = rootArgRE.ReplaceAllString(msg, "$1$2")
	msg = wrongArgsRE.ReplaceAllStringFunc(msg, func(m string) string {
		sub := wrongArgsRE.FindStringSubmatch(m)
		if !execFuncs[sub[1]] {
			return m
		}
		want, _ := strconv.Atoi(sub[3])
		got, _ := strconv.Atoi(sub[4])
		return fmt.Sprintf("wrong number of args for %s: want %s%d got %d", sub[1], sub[2], want-1, got-1)
	})
	return hiddenCalls.Replace(msg)
}

// rewriteList applies the changes described on text to every action
// of a template.
func rewriteList(l *parse.ListNode) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		switch n := n.(type) {
		case *parse.ActionNode:
			rewritePipe(n.Pipe)
			if len(n.Pipe.Decl) == 0 {
				n.Pipe.Cmds = append(n.Pipe.Cmds, command(n.Pos, parse.NewIdentifier(fnOut).SetPos(n.Pos), root(n.Pos)))
			}
		case *parse.IfNode:
			rewriteBranch(&n.BranchNode)
		case *parse.RangeNode:
			rewriteBranch(&n.BranchNode)
			n.Pipe.Cmds = append(n.Pipe.Cmds, command(n.Pos, parse.NewIdentifier(fnRange).SetPos(n.Pos), root(n.Pos)))
			if n.List == nil {
				n.List = &parse.ListNode{NodeType: parse.NodeList, Pos: n.Pos}
			}
			if !printsAlways(n.List) {
				n.List.Nodes = slices.Insert(n.List.Nodes, 0, tick(n.List.Pos))
			}
		case *parse.WithNode:
			rewriteBranch(&n.BranchNode)
		}
	}
}

func rewriteBranch(b *parse.BranchNode) {
	rewritePipe(b.Pipe)
	rewriteList(b.List)
	rewriteList(b.ElseList)
}

func rewritePipe(p *parse.PipeNode) {
	if p == nil {
		return
	}
	for _, c := range p.Cmds {
		for i, a := range c.Args {
			if _, fn := a.(*parse.IdentifierNode); fn && i == 0 {
				continue
			}
			c.Args[i] = rewriteArg(a)
		}
		if id, ok := c.Args[0].(*parse.IdentifierNode); ok && execFuncs[id.Ident] {
			c.Args = slices.Insert(c.Args, 1, parse.Node(root(id.Pos)))
		}
	}
}

func rewriteArg(a parse.Node) parse.Node {
	switch a := a.(type) {
	case *parse.FieldNode:
		return getter(a.Pos, &parse.DotNode{NodeType: parse.NodeDot, Pos: a.Pos}, a.Ident)
	case *parse.VariableNode:
		if len(a.Ident) > 1 {
			v := &parse.VariableNode{NodeType: parse.NodeVariable, Pos: a.Pos, Ident: a.Ident[:1]}
			return getter(a.Pos, v, a.Ident[1:])
		}
	case *parse.ChainNode:
		return getter(a.Pos, rewriteArg(a.Node), a.Field)
	case *parse.PipeNode:
		rewritePipe(a)
	case *parse.IdentifierNode:
		// A function named as an argument is called without arguments:
		// (list $) for the ones that take the execution.
		if execFuncs[a.Ident] {
			return &parse.PipeNode{NodeType: parse.NodePipe, Pos: a.Pos, Cmds: []*parse.CommandNode{command(a.Pos, a, root(a.Pos))}}
		}
	}
	return a
}

// getter builds the pipeline (__get from "k1" "k2" ...).
func getter(pos parse.Pos, from parse.Node, keys []string) parse.Node {
	args := []parse.Node{parse.NewIdentifier(fnGet).SetPos(pos), from}
	for _, k := range keys {
		args = append(args, &parse.StringNode{NodeType: parse.NodeString, Pos: pos, Quoted: strconv.Quote(k), Text: k})
	}
	return &parse.PipeNode{NodeType: parse.NodePipe, Pos: pos, Cmds: []*parse.CommandNode{command(pos, args...)}}
}

// printsAlways reports whether l prints a placeholder whatever happens:
// its __out then reads the clock, and a tick would be a second call per
// iteration for nothing.
func printsAlways(l *parse.ListNode) bool {
	for _, n := range l.Nodes {
		if a, ok := n.(*parse.ActionNode); ok && len(a.Pipe.Decl) == 0 {
			return true
		}
	}
	return false
}

// tick is {{ if __tick $ }}{{ end }}, which starts the body of a range
// that may print nothing.
func tick(pos parse.Pos) parse.Node {
	pipe := &parse.PipeNode{NodeType: parse.NodePipe, Pos: pos,
		Cmds: []*parse.CommandNode{command(pos, parse.NewIdentifier(fnTick).SetPos(pos), root(pos))}}
	return &parse.IfNode{BranchNode: parse.BranchNode{NodeType: parse.NodeIf, Pos: pos, Pipe: pipe,
		List: &parse.ListNode{NodeType: parse.NodeList, Pos: pos}}}
}

// root is $, the execution.
func root(pos parse.Pos) *parse.VariableNode {
	return &parse.VariableNode{NodeType: parse.NodeVariable, Pos: pos, Ident: []string{"$"}}
}

func command(pos parse.Pos, args ...parse.Node) *parse.CommandNode {
	return &parse.CommandNode{NodeType: parse.NodeCommand, Pos: pos, Args: args}
}
