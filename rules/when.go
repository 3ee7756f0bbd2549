package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/vm"
)

// whenTypes declares the names a condition can use. Declaring data as a
// map makes `data.anything` compile (it is unknown until an event comes),
// while a misspelt top-level name or an unknown function is an error at
// load time. whenBudget is the evaluation's budget, for the calls the
// patch adds.
var whenTypes = map[string]any{"id": "", "source": "", "type": "", "subject": "", "time": time.Time{}, "data": map[string]any{},
	whenBudget: (*budget)(nil)}

const (
	whenBudget   = "__budget"
	fnIterate    = "__iterate"
	fnSize       = "__size"
	whenMaxNodes = 1000 // far more than a condition needs; expr's default is 10,000
)

// compileWhen compiles a condition with the limits of conditions: expr's
// own (a node count when compiling, a memory budget when running, which
// stops 1..1000000000 before it is built), and a budget patched into the
// places where evaluation can repeat or grow (see whenPatch). counted
// says whether it was patched, so that evaluation needs a budget.
func compileWhen(src string) (prog *vm.Program, counted bool, err error) {
	var p whenPatch
	prog, err = expr.Compile(src, expr.Env(whenTypes), expr.AsBool(), expr.MaxNodes(whenMaxNodes), expr.Patch(&p),
		countingFunc(fnIterate, whenIterate), countingFunc(fnSize, whenSize),
		// expr's repeat builds its result before it weighs it: a
		// megabyte repeated a million times is a terabyte.
		expr.DisableBuiltin("repeat"), expr.Function("repeat", boundedRepeat, new(func(string, int) string)))
	return prog, p.counted, err
}

// whenPatch puts the evaluation's budget where a condition can run away:
// every closure body ({ ... } in all, any, filter, map, reduce...) counts
// an iteration, and what it gives, a `let` value and a `+` (which joins
// text) count their length. Without them `any(1..999999, {...})` runs a
// million times, and `reduce(1..30, #acc + #acc, data.s)` doubles a text
// thirty times.
type whenPatch struct{ counted bool }

func (p *whenPatch) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.PredicateNode:
		n.Node = p.call(fnIterate, n.Node)
	case *ast.VariableDeclaratorNode:
		n.Value = p.call(fnSize, n.Value)
	case *ast.BinaryNode:
		if n.Operator == "+" && !(literal(n.Left) && literal(n.Right)) {
			*node = p.call(fnSize, n)
		}
	}
}

func literal(n ast.Node) bool {
	switch n.(type) {
	case *ast.IntegerNode, *ast.FloatNode, *ast.StringNode:
		return true
	}
	return false
}

// call wraps n in fn(__budget, n).
func (p *whenPatch) call(fn string, n ast.Node) ast.Node {
	p.counted = true
	callee, b := &ast.IdentifierNode{Value: fn}, &ast.IdentifierNode{Value: whenBudget}
	c := &ast.CallNode{Callee: callee, Arguments: []ast.Node{b, n}}
	for _, m := range []ast.Node{callee, b, c} {
		m.SetLocation(n.Location())
	}
	return c
}

// countingFunc declares a function of the patch: it gives its second
// argument back, and the type checker sees that argument's type, so that
// the patch changes no type ("predicate should return boolean" stays a
// load-time error).
func countingFunc(name string, fn func(b *budget, v any) error) expr.Option {
	return func(c *conf.Config) {
		c.Functions[name] = &builtin.Function{Name: name,
			Func: func(args ...any) (any, error) {
				b, _ := args[0].(*budget)
				return args[1], fn(b, args[1])
			},
			Validate: func(args []reflect.Type) (reflect.Type, error) {
				if len(args) != 2 {
					return nil, fmt.Errorf("%s takes 2 arguments", name)
				}
				return args[1], nil
			}}
	}
}

func whenIterate(b *budget, v any) error {
	if err := b.iterate(1); err != nil {
		return err
	}
	return whenSize(b, v)
}

func whenSize(b *budget, v any) error {
	if s, ok := v.(string); ok {
		return b.spend(len(s))
	}
	return b.tick()
}

// boundedRepeat is expr's repeat, refusing results over MaxValueBytes
// before it builds them.
func boundedRepeat(args ...any) (any, error) {
	s, _ := args[0].(string)
	n, _ := args[1].(int)
	if n < 0 {
		return nil, fmt.Errorf("repeat: %d times", n)
	}
	if len(s) > 0 && n > MaxValueBytes/len(s) {
		return nil, ErrValueSize
	}
	return strings.Repeat(s, n), nil
}

// neverTrue reports a condition that is false whatever the event: the
// rule could never send. The compiler folds some ("x && false"); others
// ("1 > 2") are constant because they name no variable and call nothing.
func neverTrue(p *vm.Program) bool {
	if b, ok := p.Node().(*ast.BoolNode); ok {
		return !b.Value
	}
	var c constVisitor
	node := p.Node()
	ast.Walk(&node, &c)
	if c.variable {
		return false
	}
	v, err := expr.Run(p, whenTypes)
	return err == nil && v == false
}

type constVisitor struct{ variable bool }

func (c *constVisitor) Visit(n *ast.Node) {
	switch (*n).(type) {
	case *ast.IdentifierNode, *ast.CallNode, *ast.BuiltinNode, *ast.PointerNode, *ast.VariableDeclaratorNode:
		c.variable = true
	}
}

func whenEnv(ev *Event) map[string]any {
	return map[string]any{"id": ev.ID, "source": ev.Source, "type": ev.Type, "subject": ev.Subject, "time": ev.Time, "data": numbers(ev.Data),
		whenBudget: nil}
}

func (r *Rule) evalWhen(env map[string]any) (bool, error) {
	var b *budget
	if r.whenCounted {
		nb := newBudget()
		b = &nb
		env[whenBudget] = b
	}
	v, err := expr.Run(r.when, env)
	if err != nil {
		// expr's message spans lines with a caret under the column; the
		// first line says what went wrong, and may quote a value of the
		// event whole.
		msg, _, _ := strings.Cut(err.Error(), "\n")
		de := &DataError{Rule: r.Name, Keyword: "when", Reason: fmt.Sprintf("%s: %s", r.When, capMessage(msg)), Err: err}
		var limit error
		switch {
		case b.failed():
			limit = b.err
		case errors.Is(err, ErrValueSize):
			limit = ErrValueSize
		}
		if limit != nil {
			de.Reason, de.Err = fmt.Sprintf("%s: %v", r.When, limit), limit
		}
		return false, de
	}
	ok, isBool := v.(bool)
	if !isBool {
		return false, &DataError{Rule: r.Name, Keyword: "when", Reason: fmt.Sprintf("%s: got %T, want true or false", r.When, v)}
	}
	return ok, nil
}

// numbers turns json.Number into int or float64 so that conditions can
// compare amounts (data.amount > 0): expr sees json.Number as a string.
func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return int(i)
		}
		if f, err := strconv.ParseFloat(string(v), 64); err == nil {
			return f
		}
		return string(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = numbers(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = numbers(e)
		}
		return out
	}
	return v
}
