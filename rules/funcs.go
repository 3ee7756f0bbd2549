package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"
	"unicode/utf8"
)

// FuncNames lists the functions templates can call, besides text/template's
// own (printf, len, eq, and, or, not...). docs/rules.md describes each.
var FuncNames = []string{"cents", "choose", "date", "default", "index", "join", "len", "list", "lower", "money", "trim", "trunc", "tz", "upper"}

// funcSet is the function set of one rule's templates: date needs the
// rule's zone, and recipient fields print lists as one recipient per item.
type funcSet struct {
	funcs template.FuncMap
	// print is how a placeholder prints a value: what __out does, and
	// what the fast path calls.
	print func(*budget, any) string
}

func newFuncSet(loc *time.Location, recipients bool) *funcSet {
	print := printText
	if recipients {
		print = printRecipients
	}
	// Functions whose first parameter is *execution get the root ($)
	// passed by the rewritten template (see text), so that they count
	// what they do against the execution's budget. Once it is spent they
	// do nothing and give nothing: the next write, range or tick stops
	// the execution, and exec reports the limit. (Returning the error
	// from each would cost an allocation per call, and every placeholder
	// calls __out.)
	return &funcSet{print: print, funcs: template.FuncMap{
		fnGet:   get,
		fnOut:   func(x *execution, v any) string { return print(&x.budget, v) },
		fnRange: (*execution).rangeOver,
		fnTick:  (*execution).tickIteration,

		"cents":   (*execution).cents,
		"choose":  (*execution).choose,
		"date":    func(x *execution, layout string, v any) (string, error) { return formatDate(&x.budget, layout, v, loc) },
		"default": defaultValue,
		"index":   (*execution).index,
		"join":    (*execution).join,
		"len":     (*execution).length,
		"list":    func(items ...any) []any { return items },
		"lower":   func(x *execution, v any) string { return x.transform(v, strings.ToLower) },
		"money":   (*execution).money,
		"trim":    func(x *execution, v any) string { return x.transform(v, strings.TrimSpace) },
		"trunc":   (*execution).trunc,
		"tz":      (*execution).inZone,
		"upper":   func(x *execution, v any) string { return x.transform(v, strings.ToUpper) },

		// text/template's own printers, counted like the others: printf
		// of a list that a loop of `list` calls built prints it whole.
		"print":    (*execution).print,
		"printf":   (*execution).printf,
		"println":  (*execution).println,
		"html":     func(x *execution, args ...any) string { return x.escape(template.HTMLEscaper, args) },
		"js":       func(x *execution, args ...any) string { return x.escape(template.JSEscaper, args) },
		"urlquery": func(x *execution, args ...any) string { return x.escape(template.URLQueryEscaper, args) },
	}}
}

// get is field access that never fails: a missing key, a nil, or a value
// with no such field yields nil.
func get(v any, keys ...string) any {
	for _, k := range keys {
		if v = field(v, k); v == nil {
			return nil
		}
	}
	return v
}

func field(v any, k string) any {
	switch m := v.(type) {
	case nil:
		return nil
	case map[string]any:
		return m[k]
	case *execution:
		return m.vars[k]
	case map[string]string:
		if s, ok := m[k]; ok {
			return s
		}
		return nil
	case []any:
		if i, err := strconv.Atoi(k); err == nil && i >= 0 && i < len(m) {
			return m[i]
		}
		return nil
	case zonedTime:
		v = m.Time
	}
	// Methods without arguments, so .time.Unix and .time.Year work.
	rv := reflect.ValueOf(v)
	if mv := rv.MethodByName(k); mv.IsValid() && mv.Type().NumIn() == 0 && mv.Type().NumOut() >= 1 {
		return mv.Call(nil)[0].Interface()
	}
	if rv.Kind() == reflect.Map && rv.Type().Key().Kind() == reflect.String {
		if e := rv.MapIndex(reflect.ValueOf(k).Convert(rv.Type().Key())); e.IsValid() {
			return e.Interface()
		}
	}
	return nil
}

// index replaces text/template's index: nil-safe, and it takes the
// json.Number indexes event data carries.
func (x *execution) index(v any, keys ...any) any {
	x.tick()
	for _, k := range keys {
		switch kk := k.(type) {
		case string:
			v = field(v, kk)
		default:
			n, err := strconv.Atoi(x.format(k))
			if err != nil {
				return nil
			}
			l, ok := v.([]any)
			if !ok || n < 0 || n >= len(l) {
				return nil
			}
			v = l[n]
		}
		if v == nil {
			return nil
		}
	}
	return v
}

// length replaces text/template's len: nothing has length 0, and text
// is counted in characters, as WeChat counts.
func (x *execution) length(v any) int {
	switch v := v.(type) {
	case nil:
		return 0
	case string:
		x.spend(len(v))
		return utf8.RuneCountInString(v)
	case json.Number:
		return len(v)
	case *execution:
		return len(v.vars)
	case []any:
		return len(v)
	}
	if items, ok := listItems(v); ok {
		x.spend(len(items) * itemCost)
		return len(items)
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Map {
		return rv.Len()
	}
	return 0
}

func printText(b *budget, v any) string { return b.format(v) }

// printRecipients marks empty placeholders, so a scope like
// "buyer:{{ .data.buyer_id }}" with no buyer_id is an error rather than a
// role in the scope "buyer:", and separates list items.
func printRecipients(b *budget, v any) string {
	if items, ok := listItems(v); ok {
		if b.spend(len(items)*itemCost) != nil {
			return ""
		}
		parts := make([]string, len(items))
		for i, it := range items {
			if parts[i] = printRecipients(b, it); b.failed() {
				return ""
			}
		}
		s := strings.Join(parts, listSep)
		b.spend(len(s))
		return s
	}
	if s := b.format(v); strings.TrimSpace(s) != "" {
		return s
	}
	return emptyMarker
}

// format prints a value without a budget, for checks made outside an
// execution.
func format(v any) string { return (*budget)(nil).format(v) }

// format prints a value of event data the way a person expects to read
// it. What it builds for lists and objects is counted: lists that `list`
// nested in a loop share their items and print exponentially long. Once
// the budget is spent it gives "".
func (b *budget) format(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return string(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 32)
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case bool:
		return strconv.FormatBool(v)
	case time.Time:
		return v.Format(time.RFC3339)
	case zonedTime:
		return v.Format(time.RFC3339)
	case *big.Rat:
		return trimZeros(v.FloatString(10))
	case *execution:
		return b.format(v.vars)
	case fmt.Stringer:
		return v.String()
	case error:
		return v.Error()
	}
	if items, ok := listItems(v); ok {
		if b.spend(len(items)*itemCost) != nil {
			return ""
		}
		parts := make([]string, len(items))
		for i, it := range items {
			if parts[i] = b.format(it); b.failed() {
				return ""
			}
		}
		s := strings.Join(parts, ", ")
		b.spend(len(s))
		return s
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Map {
		// Objects come from event data only (no function builds one),
		// so they are trees no larger than the event.
		if j, err := json.Marshal(v); err == nil {
			b.spend(len(j))
			return string(j)
		}
	}
	return fmt.Sprint(v)
}

func listItems(v any) ([]any, bool) {
	switch v := v.(type) {
	case []any:
		return v, true
	case []string:
		out := make([]any, len(v))
		for i, s := range v {
			out[i] = s
		}
		return out, true
	case nil, string, json.Number:
		return nil, false
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return nil, false
	}
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out, true
}

// empty is what default replaces: nothing, blank text, an empty list or
// map. Zero and false are values.
func empty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(v) == ""
	case json.Number:
		return v == ""
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Map, reflect.Array:
		return rv.Len() == 0
	}
	return false
}

// defaultValue is `default DEF VALUE`: VALUE unless it is empty. The value
// comes last so it reads in a pipeline: {{ .data.note | default "无" }}.
func defaultValue(def, v any) any {
	if empty(v) {
		return def
	}
	return v
}

// choose is `choose VALUE "k1" "v1" "k2" "v2" ["default"]`: the word for
// a code, as statuses need ("assigned" -> "已派单"). Without a match and a
// default it yields nothing, so the keyword reports itself empty.
func (x *execution) choose(v any, pairs ...any) any {
	s := x.format(v)
	for i := 0; i+1 < len(pairs); i += 2 {
		k := x.format(pairs[i])
		if x.spend(min(len(k), len(s))) != nil {
			return nil
		}
		if k == s {
			return pairs[i+1]
		}
	}
	if len(pairs)%2 == 1 {
		return pairs[len(pairs)-1]
	}
	return nil
}

func (x *execution) join(sep string, v any) string {
	items, ok := listItems(v)
	if !ok {
		return x.format(v)
	}
	if x.spend(len(items)*itemCost) != nil {
		return ""
	}
	parts := make([]string, 0, len(items))
	for _, it := range items {
		s := x.format(it)
		if x.failed() {
			return ""
		}
		if s != "" {
			parts = append(parts, s)
		}
	}
	s := strings.Join(parts, sep)
	if x.spend(len(s)) != nil {
		return ""
	}
	return s
}

// transform is lower, upper, trim: a function of the printed value.
func (x *execution) transform(v any, f func(string) string) string {
	s := x.format(v)
	if x.spend(2*len(s)) != nil {
		return ""
	}
	return f(s)
}

// trunc is `trunc N VALUE`: at most N characters, the last one an ellipsis
// when something was cut.
func (x *execution) trunc(n int, v any) string {
	s := truncate(x.format(v), n)
	x.spend(len(s))
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Counting as far as n+1 characters rather than all of them: s may be
	// an event's megabyte.
	cut, count := 0, 0
	for i := range s {
		if count == n-1 {
			cut = i
		}
		if count == n {
			if n <= 0 {
				return ""
			}
			return s[:cut] + "…"
		}
		count++
	}
	return s
}

// zonedTime is a time that `tz` put in a zone: `date` then formats it in
// that zone rather than the rule's.
type zonedTime struct{ time.Time }

var zones sync.Map // name -> *time.Location

func loadZone(name string) (*time.Location, error) {
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil || name == "" || name == "Local" {
		return nil, fmt.Errorf("unknown time zone %q (want an IANA name like Asia/Shanghai)", name)
	}
	zones.Store(name, l)
	return l, nil
}

func (x *execution) inZone(zone string, v any) (any, error) {
	if v == nil {
		return nil, x.tick()
	}
	loc, err := loadZone(zone)
	if err != nil {
		return nil, err
	}
	t, err := parseInstant(&x.budget, v, loc)
	if err != nil {
		return nil, err
	}
	return zonedTime{t.In(loc)}, x.tick()
}

// formatDate is `date LAYOUT VALUE` with a Go layout ("2006-01-02 15:04",
// "1月2日 15:04"), in the rule's zone. Nothing in, nothing out, so
// `default` can follow it.
func formatDate(b *budget, layout string, v any, loc *time.Location) (string, error) {
	if empty(v) {
		return "", b.tick()
	}
	if z, ok := v.(zonedTime); ok {
		s := z.Format(layout)
		return s, b.spend(len(s))
	}
	t, err := parseInstant(b, v, loc)
	if err != nil {
		return "", err
	}
	s := t.In(loc).Format(layout)
	return s, b.spend(len(s))
}

var (
	wallLayouts = []string{
		"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04",
		"2006/01/02 15:04:05", "2006/01/02 15:04", "2006-01-02", "2006/01/02",
	}
	unixRE = regexp.MustCompile(`^\d{9,19}(\.\d{1,9})?$`)
)

const maxTimeText = 64

// parseInstant reads a point in time from what events carry: RFC 3339,
// Unix seconds or milliseconds (as numbers or strings), or a date and
// time without a zone, which is read in loc.
func parseInstant(b *budget, v any, loc *time.Location) (time.Time, error) {
	var s string
	switch v := v.(type) {
	case time.Time:
		return v, nil
	case zonedTime:
		return v.Time, nil
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	default:
		s = strings.TrimSpace(b.format(v))
		if err := b.spend(len(s)); err != nil {
			return time.Time{}, err
		}
	}
	// No way of writing a time is longer, and a long text would be read
	// (and copied into an error) once per layout.
	if len(s) <= maxTimeText {
		if unixRE.MatchString(s) {
			return parseUnix(s), nil
		}
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t, nil
		}
		for _, l := range wallLayouts {
			if t, err := time.ParseInLocation(l, s, loc); err == nil {
				return t, nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("cannot read %s as a time (want RFC 3339, Unix seconds or milliseconds, or 2006-01-02 15:04)", quote(s))
}

// parseUnix reads seconds, milliseconds, microseconds or nanoseconds by the
// number of digits: the unit is never written down in events.
func parseUnix(s string) time.Time {
	whole, frac, _ := strings.Cut(s, ".")
	n, _ := strconv.ParseInt(whole, 10, 64)
	switch d := len(whole); {
	case d <= 11:
		ns, _ := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		return time.Unix(n, ns)
	case d <= 14:
		return time.UnixMilli(n)
	case d <= 17:
		return time.UnixMicro(n)
	default:
		return time.Unix(0, n)
	}
}

var digitGrouping = strings.NewReplacer(",", "", "_", "")

var decimalRE = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,2})?$`)

// parseDecimal reads an exact decimal. The pattern keeps big.Rat away from
// fractions ("1/3") and from exponents that would take it minutes.
func parseDecimal(b *budget, v any) (*big.Rat, error) {
	var s string
	switch v := v.(type) {
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	case *big.Rat:
		return v, nil
	default:
		s = strings.TrimSpace(b.format(v))
		if err := b.spend(len(s)); err != nil {
			return nil, err
		}
	}
	s = digitGrouping.Replace(s)
	if len(s) > 64 || !decimalRE.MatchString(s) {
		return nil, fmt.Errorf("%s is not a number", quote(s))
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, fmt.Errorf("%s is not a number", quote(s))
	}
	return r, nil
}

func trimZeros(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// cents is `cents VALUE`: an amount in fen (hundredths), as payment
// systems send it, as yuan: 123456 -> 1234.56.
func (x *execution) cents(v any) (string, error) {
	if empty(v) {
		return "", x.tick()
	}
	r, err := parseDecimal(&x.budget, v)
	if err != nil {
		return "", err
	}
	return trimZeros(new(big.Rat).Quo(r, big.NewRat(100, 1)).FloatString(4)), x.tick()
}

// money is `money VALUE`: "￥1,234.50", two decimals, rounded half away
// from zero. An amount keyword takes it as is (the separators are
// dropped when fitting).
func (x *execution) money(v any) (string, error) {
	if empty(v) {
		return "", x.tick()
	}
	r, err := parseDecimal(&x.budget, v)
	if err != nil {
		return "", err
	}
	s := r.FloatString(2)
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	return sign + currencyYuan + groupThousands(whole) + "." + frac, x.tick()
}

func groupThousands(s string) string {
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	head := len(s) % 3
	if head > 0 {
		b.WriteString(s[:head])
	}
	for i := head; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

var errEmpty = errors.New("empty")

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
