package rules

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// whenTypes declares the names a condition can use. Declaring data as a
// map makes `data.anything` compile (it is unknown until an event comes),
// while a misspelt top-level name or an unknown function is an error at
// load time.
var whenTypes = map[string]any{"id": "", "source": "", "type": "", "subject": "", "time": time.Time{}, "data": map[string]any{}}

func compileWhen(src string) (*vm.Program, error) {
	return expr.Compile(src, expr.Env(whenTypes), expr.AsBool())
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
	return map[string]any{"id": ev.ID, "source": ev.Source, "type": ev.Type, "subject": ev.Subject, "time": ev.Time, "data": numbers(ev.Data)}
}

func (r *Rule) evalWhen(env map[string]any) (bool, error) {
	v, err := expr.Run(r.when, env)
	if err != nil {
		// expr's message spans lines with a caret under the column; the
		// first line says what went wrong.
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return false, &DataError{Rule: r.Name, Keyword: "when", Reason: fmt.Sprintf("%s: %s", r.When, msg)}
	}
	b, ok := v.(bool)
	if !ok {
		return false, &DataError{Rule: r.Name, Keyword: "when", Reason: fmt.Sprintf("%s: got %T, want true or false", r.When, v)}
	}
	return b, nil
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
