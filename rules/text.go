package rules

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// text is one templated string of rules.yaml: a keyword value, a page, a
// recipient, a dedupe key.
//
// It is text/template with two changes made to the parsed tree, so the
// language behaves the way notification text needs:
//
//   - field access (.data.buyer.name, $x.name) goes through get, which
//     yields nil for anything missing or of the wrong shape instead of an
//     execution error, so `default` can stand in for it and a missing
//     value surfaces as an empty keyword that names itself;
//   - every printed value goes through out, which prints json.Number
//     exactly, floats without exponents, times as RFC 3339, lists as lists
//     (and, in recipient fields, one recipient per item).
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
	fast []fastPart
	out  func(any) string
}

type fastPart struct {
	lit  string
	path []string // nil for literal text
}

const (
	fnGet = "__get"
	fnOut = "__out"
)

// Markers in the output of recipient templates. Neither survives
// rendering: control characters are not valid in ids.
const (
	listSep     = "\x1f" // between the items of a printed list
	emptyMarker = "\x00" // where a placeholder printed nothing
)

// textError is a template that does not parse: the 1-based line within
// the template, and the message without text/template's prefix.
type textError struct {
	line int
	msg  string
	// fn is the unknown function's name, for a column.
	fn string
}

func (e *textError) Error() string { return e.msg }

var (
	parseErrRE = regexp.MustCompile(`^template: [^:]*:(\d+):(?:\d+:)? ?(.*)$`)
	undefFnRE  = regexp.MustCompile(`function "([^"]+)" not defined`)
)

func parseText(src string, funcs template.FuncMap) (*text, error) {
	x := &text{src: src}
	if !strings.Contains(src, "{{") {
		x.lits = []string{src}
		return x, nil
	}
	t, err := template.New("x").Option("missingkey=zero").Funcs(funcs).Parse(src)
	if err != nil {
		te := &textError{line: 1, msg: err.Error()}
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
	x.out = funcs[fnOut].(func(any) string)
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

var execErrRE = regexp.MustCompile(`^template: [^:]*:\d+:\d+: executing "[^"]*" at <.*>: `)

func (x *text) exec(vars map[string]any) (string, error) {
	if x == nil {
		return "", nil
	}
	if x.tmpl == nil {
		return x.src, nil
	}
	if x.fast != nil {
		var b strings.Builder
		for _, p := range x.fast {
			if p.path == nil {
				b.WriteString(p.lit)
			} else {
				b.WriteString(x.out(get(vars, p.path...)))
			}
		}
		return b.String(), nil
	}
	var b strings.Builder
	if err := x.tmpl.Execute(&b, vars); err != nil {
		msg := err.Error()
		if i := strings.LastIndex(msg, "error calling "); i >= 0 {
			msg = msg[i+len("error calling "):]
		} else {
			msg = execErrRE.ReplaceAllString(msg, "")
		}
		return "", errors.New(unrewrite(msg))
	}
	return b.String(), nil
}

var getterRE = regexp.MustCompile(`\(?` + fnGet + ` (\.|\$\w*) ((?:"[^"]*" ?)+)\)?`)

// unrewrite shows the template as its author wrote it in an error message:
// (__get . "data" "x") is .data.x again.
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
	return strings.NewReplacer(" | "+fnOut, "", fnOut+" ", "").Replace(msg)
}

// rewriteList applies the two changes described on text to every action
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
				n.Pipe.Cmds = append(n.Pipe.Cmds, command(n.Pos, parse.NewIdentifier(fnOut).SetPos(n.Pos)))
			}
		case *parse.IfNode:
			rewriteBranch(&n.BranchNode)
		case *parse.RangeNode:
			rewriteBranch(&n.BranchNode)
		case *parse.WithNode:
			rewriteBranch(&n.BranchNode)
		case *parse.TemplateNode:
			rewritePipe(n.Pipe)
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
			c.Args[i] = rewriteArg(a)
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

func command(pos parse.Pos, args ...parse.Node) *parse.CommandNode {
	return &parse.CommandNode{NodeType: parse.NodeCommand, Pos: pos, Args: args}
}
