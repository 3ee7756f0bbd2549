package wechattest

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The keyword value limits of reference §2 ("订阅消息参数值内容限制说明").
// Characters are counted as Unicode code points, the usual reading of
// "20个以内字符" (WeChat does not say). Where the official wording leaves a
// choice, the comment on the type says which one was made.

// keywordTypes are the types §2 lists.
var keywordTypes = map[string]func(v string, n int, enum []string) bool{
	"thing": func(_ string, n int, _ []string) bool { return n <= 20 },
	// number: digits, decimals allowed. No sign: "只能数字".
	"number": func(v string, n int, _ []string) bool { return n <= 32 && numberRe.MatchString(v) },
	// letter: ASCII letters only.
	"letter": func(v string, n int, _ []string) bool { return n <= 32 && all(v, isLetter) },
	"symbol": func(v string, n int, _ []string) bool { return n <= 5 && all(v, isSymbol) },
	"character_string": func(v string, n int, _ []string) bool {
		return n <= 32 && all(v, func(r rune) bool { return isDigit(r) || isLetter(r) || isSymbol(r) })
	},
	"time":   func(v string, _ int, _ []string) bool { return timeRe.MatchString(v) },
	"date":   func(v string, _ int, _ []string) bool { return dateRe.MatchString(v) },
	"amount": func(v string, _ int, _ []string) bool { return isAmount(v) },
	"phone_number": func(v string, n int, _ []string) bool {
		return n <= 17 && all(v, func(r rune) bool { return isDigit(r) || isSymbol(r) })
	},
	"car_number": func(v string, n int, _ []string) bool { return isCarNumber(v, n) },
	"name":       func(v string, n int, _ []string) bool { return isName(v, n) },
	"phrase":     func(v string, n int, _ []string) bool { return n <= 5 && all(v, isHan) },
	"enum":       oneOf,
	// const: an official account's category templates (类目模板): "常量
	// 20位以内字符，超过无法下发 注:需枚举(需将内容提交平台审核，审核通过可下发)
	// 只能下发审核通过的字符串和空串" (the 类目模板消息 section of
	// https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html,
	// read through a verbatim copy). Checked like enum: one of the approved
	// values when the template lists them. The empty string the doc also
	// allows is refused like every empty value (unconfirmed either way).
	"const": oneOf,
}

// oneOf checks an enum or const value: one of the template's values, or,
// when none were registered (rules.yaml need not carry them), at most 20
// characters rather than refusing everything.
func oneOf(v string, n int, enum []string) bool {
	if enum == nil {
		return n <= 20
	}
	for _, e := range enum {
		if v == e {
			return true
		}
	}
	return false
}

// KeywordType normalizes a keyword type or key to one of §2's types: "thing"
// and "thing01" give "thing", "enum_string2" gives "enum". It returns "" for
// anything else.
func KeywordType(s string) string {
	s = strings.TrimSuffix(s, ".DATA")
	s = strings.TrimRight(s, "0123456789")
	if s == "enum_string" {
		s = "enum"
	}
	if _, ok := keywordTypes[s]; ok {
		return s
	}
	return ""
}

// ValidKeyword reports whether WeChat accepts v as a value of keyword type
// typ ("thing", "thing1", "time"...); enum lists an enum keyword's values.
// Every type refuses empty values and control characters (newlines too).
func ValidKeyword(typ, v string, enum []string) bool {
	check, ok := keywordTypes[KeywordType(typ)]
	if !ok || strings.TrimSpace(v) == "" || !utf8.ValidString(v) {
		return false
	}
	n := 0
	for _, r := range v {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return false
		}
		n++
	}
	return check(v, n, enum)
}

func all(v string, ok func(rune) bool) bool {
	for _, r := range v {
		if !ok(r) {
			return false
		}
	}
	return true
}

func isDigit(r rune) bool  { return r >= '0' && r <= '9' }
func isLetter(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }
func isHan(r rune) bool    { return unicode.Is(unicode.Han, r) }

// isSymbol: "symbols are the common symbols other than Chinese, letters and
// digits". A space counts as one (unconfirmed; "2026-10 A" is plausible in
// an order number).
func isSymbol(r rune) bool {
	if r == ' ' {
		return true
	}
	return !isHan(r) && !unicode.IsLetter(r) && !unicode.IsDigit(r) && (unicode.IsPunct(r) || unicode.IsSymbol(r))
}

var numberRe = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// time: a 24-hour time, HH:MM or HH:MM:SS, optionally after a date; date:
// a date in the listed formats, optionally followed by a time. Either may
// be a range of two points joined by "~".
var timeRe, dateRe = func() (*regexp.Regexp, *regexp.Regexp) {
	const (
		clock = `(?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?`
		month = `(?:0?[1-9]|1[0-2])`
		day   = `(?:0?[1-9]|[12][0-9]|3[01])`
		year  = `[0-9]{4}`
	)
	cn := `(?:` + year + `年` + month + `月` + day + `日|` + year + `年` + month + `月|` + month + `月` + day + `日)`
	var nums []string
	for _, sep := range []string{`-`, `/`, `\.`} {
		nums = append(nums, year+sep+month+sep+day, year+sep+month, month+sep+day)
	}
	num := `(?:` + strings.Join(nums, `|`) + `)`
	// A Chinese date may run into the time ("2019年10月1日15:01"); a numeric
	// one needs a space before it.
	dated := `(?:` + cn + `\s*` + clock + `|` + num + `\s+` + clock + `)`
	timePoint := `(?:` + dated + `|` + clock + `)`
	datePoint := `(?:` + dated + `|` + cn + `|` + num + `)`
	rng := func(first, second string) *regexp.Regexp {
		return regexp.MustCompile(`^` + first + `(?:\s*~\s*` + second + `)?$`)
	}
	// The end of a date range may be a bare time: "2019-10-01 08:00~10:00".
	return rng(timePoint, timePoint), rng(datePoint, `(?:`+datePoint+`|`+clock+`)`)
}()

// isAmount: "1 currency symbol + up to 10 digits, decimals allowed, may end
// with 元". The symbol is taken as optional (unconfirmed; "100元" is common)
// and the 10 digits count those after the point too.
func isAmount(v string) bool { return isAmountN(v, maxAmountDigits) }

// The digits an amount may have: 10 in subscribe messages and subscription
// notifications; 12 in an official account's template messages: "1个币种
// 符号+12位以内纯数字，可带小数，结尾可带“元”" (the 类目模板消息 section of
// Template_Message_Interface.html, through a verbatim copy).
const (
	maxAmountDigits         = 10
	maxTemplateAmountDigits = 12
)

func isAmountN(v string, digits int) bool {
	r, size := utf8.DecodeRuneInString(v)
	if unicode.Is(unicode.Sc, r) {
		v = v[size:]
	}
	v = strings.TrimSuffix(v, "元")
	if !numberRe.MatchString(v) {
		return false
	}
	return len(v)-strings.Count(v, ".") <= digits
}

// isCarNumber: at most 8 characters; the first and the last may be Chinese,
// the rest are letters or digits ("粤A8Z888挂").
func isCarNumber(v string, n int) bool {
	if n > 8 {
		return false
	}
	i := 0
	for _, r := range v {
		edge := i == 0 || i == n-1
		if !(isLetter(r) || isDigit(r) || edge && isHan(r)) {
			return false
		}
		i++
	}
	return true
}

// isName: at most 10 characters when it has any Chinese (mixed names count
// as Chinese), else at most 20 letters or symbols ("John Smith"). Digits
// are refused: "纯汉字或纯字母或符号".
func isName(v string, n int) bool {
	han := strings.IndexFunc(v, isHan) >= 0
	ok := all(v, func(r rune) bool { return isHan(r) || unicode.IsLetter(r) || isSymbol(r) })
	if han {
		return ok && n <= 10
	}
	return ok && n <= 20
}

// template is a registered Template with its checks prepared.
type template struct {
	Template
	banned bool
	// keys are the template's keywords in display order (by the number at
	// the end of the key), which is the order WeChat checks and names them.
	keys []keyword
}

type keyword struct {
	key, typ string
	enum     []string
}

func compileTemplate(t Template) *template {
	ct := &template{Template: t}
	for k, typ := range t.Keywords {
		ct.keys = append(ct.keys, keyword{key: k, typ: typ, enum: t.Enums[k]})
	}
	sort.Slice(ct.keys, func(i, j int) bool { return keyLess(ct.keys[i].key, ct.keys[j].key) })
	return ct
}

// keyLess orders keys by their trailing number, then by name.
func keyLess(a, b string) bool {
	na, nb := keyNumber(a), keyNumber(b)
	if na != nb {
		return na < nb
	}
	return a < b
}

func keyNumber(k string) int {
	i := len(k)
	for i > 0 && isDigit(rune(k[i-1])) {
		i--
	}
	n, _ := strconv.Atoi(k[i:])
	return n
}

// validValue is ValidKeyword with the limits of the template's kind.
func (t *template) validValue(typ, v string, enum []string) bool {
	if t.Kind == TemplateMessage && KeywordType(typ) == "amount" {
		return ValidKeyword(typ, v, enum) || validClean(v) && isAmountN(v, maxTemplateAmountDigits)
	}
	return ValidKeyword(typ, v, enum)
}

// validClean: not empty, valid UTF-8, no control characters.
func validClean(v string) bool {
	if strings.TrimSpace(v) == "" || !utf8.ValidString(v) {
		return false
	}
	return !strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) || r == utf8.RuneError })
}

// refusal is why WeChat refuses a template message's data: the 47003 errmsg
// names the field and says "is empty" for a keyword left out or blank and
// "invalid" otherwise, as answers quoted on the community forum show
// ("argument invalid! data.phrase1.value is empty",
// "argument invalid! data.thing1.value invalid").
func (t *template) refusal(data map[string]keywordField) string {
	field := t.invalidField(data)
	if field == "" {
		return ""
	}
	if f, ok := data[field]; !ok || f.Value.ok && strings.TrimSpace(f.Value.s) == "" {
		return "argument invalid! data." + field + ".value is empty"
	}
	return "argument invalid! data." + field + ".value invalid"
}

// invalidField returns the first field of data WeChat would name in a 47003
// ("data.thing1.value"), or "" when data is acceptable.
func (t *template) invalidField(data map[string]keywordField) string {
	if len(t.keys) == 0 {
		// No keywords registered: each key is checked against the type its
		// prefix names.
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return keyLess(keys[i], keys[j]) })
		for _, k := range keys {
			if v := data[k].Value; !v.ok || !t.validValue(k, v.s, t.Enums[k]) {
				return k
			}
		}
		if len(keys) == 0 {
			return "data"
		}
		return ""
	}
	for _, kw := range t.keys {
		f, ok := data[kw.key]
		if !ok || !f.Value.ok || !t.validValue(kw.typ, f.Value.s, kw.enum) {
			return kw.key
		}
	}
	if len(data) > len(t.keys) {
		var extra []string
		for k := range data {
			if _, ok := t.Keywords[k]; !ok {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		return extra[0]
	}
	return ""
}
