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

// funcMap is the function set of one rule's templates: date needs the
// rule's zone, and recipient fields print lists as one recipient per item.
func funcMap(loc *time.Location, recipients bool) template.FuncMap {
	out := outText
	if recipients {
		out = outRecipients
	}
	return template.FuncMap{
		fnGet: get,
		fnOut: out,

		"cents":   cents,
		"choose":  choose,
		"date":    func(layout string, v any) (string, error) { return formatDate(layout, v, loc) },
		"default": defaultValue,
		"index":   index,
		"join":    join,
		"len":     length,
		"list":    func(items ...any) []any { return items },
		"lower":   func(v any) string { return strings.ToLower(format(v)) },
		"money":   money,
		"trim":    func(v any) string { return strings.TrimSpace(format(v)) },
		"trunc":   trunc,
		"tz":      inZone,
		"upper":   func(v any) string { return strings.ToUpper(format(v)) },
	}
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
func index(v any, keys ...any) any {
	for _, k := range keys {
		switch kk := k.(type) {
		case string:
			v = field(v, kk)
		default:
			n, err := strconv.Atoi(format(k))
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
func length(v any) int {
	switch v := v.(type) {
	case nil:
		return 0
	case string:
		return utf8.RuneCountInString(v)
	case json.Number:
		return len(v)
	}
	if items, ok := listItems(v); ok {
		return len(items)
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Map {
		return rv.Len()
	}
	return 0
}

func outText(v any) string { return format(v) }

// outRecipients marks empty placeholders, so a scope like
// "buyer:{{ .data.buyer_id }}" with no buyer_id is an error rather than a
// role in the scope "buyer:", and separates list items.
func outRecipients(v any) string {
	if items, ok := listItems(v); ok {
		parts := make([]string, len(items))
		for i, it := range items {
			parts[i] = outRecipients(it)
		}
		return strings.Join(parts, listSep)
	}
	if s := format(v); strings.TrimSpace(s) != "" {
		return s
	}
	return emptyMarker
}

// format prints a value of event data the way a person expects to read it.
func format(v any) string {
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
	case fmt.Stringer:
		return v.String()
	case error:
		return v.Error()
	}
	if items, ok := listItems(v); ok {
		parts := make([]string, len(items))
		for i, it := range items {
			parts[i] = format(it)
		}
		return strings.Join(parts, ", ")
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Map {
		if b, err := json.Marshal(v); err == nil {
			return string(b)
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
func choose(v any, pairs ...any) any {
	s := format(v)
	for i := 0; i+1 < len(pairs); i += 2 {
		if format(pairs[i]) == s {
			return pairs[i+1]
		}
	}
	if len(pairs)%2 == 1 {
		return pairs[len(pairs)-1]
	}
	return nil
}

func join(sep string, v any) string {
	items, ok := listItems(v)
	if !ok {
		return format(v)
	}
	parts := make([]string, 0, len(items))
	for _, it := range items {
		if s := format(it); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, sep)
}

// trunc is `trunc N VALUE`: at most N characters, the last one an ellipsis
// when something was cut.
func trunc(n int, v any) string {
	return truncate(format(v), n)
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
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

func inZone(zone string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	loc, err := loadZone(zone)
	if err != nil {
		return nil, err
	}
	t, err := parseInstant(v, loc)
	if err != nil {
		return nil, err
	}
	return zonedTime{t.In(loc)}, nil
}

// formatDate is `date LAYOUT VALUE` with a Go layout ("2006-01-02 15:04",
// "1月2日 15:04"), in the rule's zone. Nothing in, nothing out, so
// `default` can follow it.
func formatDate(layout string, v any, loc *time.Location) (string, error) {
	if empty(v) {
		return "", nil
	}
	if z, ok := v.(zonedTime); ok {
		return z.Format(layout), nil
	}
	t, err := parseInstant(v, loc)
	if err != nil {
		return "", err
	}
	return t.In(loc).Format(layout), nil
}

var (
	wallLayouts = []string{
		"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04",
		"2006/01/02 15:04:05", "2006/01/02 15:04", "2006-01-02", "2006/01/02",
	}
	unixRE = regexp.MustCompile(`^\d{9,19}(\.\d{1,9})?$`)
)

// parseInstant reads a point in time from what events carry: RFC 3339,
// Unix seconds or milliseconds (as numbers or strings), or a date and
// time without a zone, which is read in loc.
func parseInstant(v any, loc *time.Location) (time.Time, error) {
	var s string
	switch v := v.(type) {
	case time.Time:
		return v, nil
	case zonedTime:
		return v.Time, nil
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	default:
		s = strings.TrimSpace(format(v))
	}
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
func parseDecimal(v any) (*big.Rat, error) {
	var s string
	switch v := v.(type) {
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	case *big.Rat:
		return v, nil
	default:
		s = strings.TrimSpace(format(v))
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
func cents(v any) (string, error) {
	if empty(v) {
		return "", nil
	}
	r, err := parseDecimal(v)
	if err != nil {
		return "", err
	}
	return trimZeros(new(big.Rat).Quo(r, big.NewRat(100, 1)).FloatString(4)), nil
}

// money is `money VALUE`: "￥1,234.50", two decimals, rounded half away
// from zero. An amount keyword takes it as is (the separators are
// dropped when fitting).
func money(v any) (string, error) {
	if empty(v) {
		return "", nil
	}
	r, err := parseDecimal(v)
	if err != nil {
		return "", err
	}
	s := r.FloatString(2)
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	return sign + currencyYuan + groupThousands(whole) + "." + frac, nil
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

// quote shows a value in an error message, shortened: errors travel in
// result messages and should stay small.
func quote(s string) string {
	return strconv.Quote(truncate(s, 40))
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
