package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Keyword types of subscribe-message templates (wechat-api.md §2). A
// template key is its type followed by a number: thing1, time4,
// character_string13; enum keys look like enum_string2.
const (
	TypeThing           = "thing"
	TypeNumber          = "number"
	TypeLetter          = "letter"
	TypeSymbol          = "symbol"
	TypeCharacterString = "character_string"
	TypeTime            = "time"
	TypeDate            = "date"
	TypeAmount          = "amount"
	TypePhoneNumber     = "phone_number"
	TypeCarNumber       = "car_number"
	TypeName            = "name"
	TypePhrase          = "phrase"
	TypeEnum            = "enum"
	// TypeConst is an official account's category-template keyword: one
	// of the values the platform approved, at most 20 characters ("const.DATA
	// 常量 20位以内字符 … 只能下发审核通过的字符串和空串", the 类目模板消息
	// section of
	// https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html).
	TypeConst = "const"
)

// KeywordTypes lists every keyword type Fit knows.
var KeywordTypes = []string{TypeThing, TypeNumber, TypeLetter, TypeSymbol, TypeCharacterString, TypeTime, TypeDate,
	TypeAmount, TypePhoneNumber, TypeCarNumber, TypeName, TypePhrase, TypeEnum, TypeConst}

// Limits of the keyword types, in characters (runes).
const (
	maxThing      = 20
	maxNumber     = 32 // digits
	maxLetter     = 32
	maxSymbol     = 5
	maxCharString = 32
	maxAmount     = 10 // digits
	maxPhone      = 17
	maxCarNumber  = 8
	maxNameHan    = 10
	maxNameLatin  = 20
	maxPhrase     = 5
)

const currencyYuan = "￥" // the fullwidth sign WeChat's own example uses

// Fit makes value valid for a keyword of WeChat type typ, or says why it
// cannot be. Control characters go first (newlines become spaces), then:
//
//	thing             at most 20 characters; longer text is cut, ending in "…"
//	number            digits with an optional decimal part, at most 32 digits; "1,234" -> "1234"
//	letter            at most 32 letters A-Z, a-z
//	symbol            at most 5 symbols (not letters, digits, Chinese or spaces)
//	character_string  at most 32 ASCII digits, letters and symbols, no spaces
//	time              RFC 3339 or Unix time -> "2006-01-02 15:04" in loc; "15:04",
//	                  "2019年10月1日 15:01" and other WeChat forms kept; ranges "A~B"
//	date              the same, shown as "2006-01-02"; WeChat forms kept
//	amount            a currency sign and at most 10 digits: 1234.5 -> "￥1234.50"
//	phone_number      at most 17 digits and symbols; spaces dropped
//	car_number        at most 8: a Chinese first and last character allowed, else
//	                  letters and digits; "粤a·8z888" -> "粤A8Z888"
//	name              at most 10 characters with Chinese, else at most 20 letters
//	                  and symbols; longer names are cut with "…"; no digits
//	phrase            at most 5 Chinese characters and nothing else
//	enum, const       one of enum, when the template lists its values; at most 20
//
// Values that cannot be made valid (a phrase in English, a number with
// letters, a time that is not a time) are errors, never guesses.
func Fit(typ, value string, loc *time.Location, enum []string) (string, error) {
	if loc == nil {
		loc = time.UTC
	}
	v := clean(value)
	if v == "" {
		return "", errEmpty
	}
	var err error
	switch typ {
	case TypeThing:
		v = truncate(v, maxThing)
	case TypeNumber:
		v, err = fitNumber(v)
	case TypeLetter, TypeSymbol, TypeCharacterString, TypePhrase, TypeEnum, TypeConst:
		// Nothing to adjust: they are valid as they are or not at all.
	case TypeTime, TypeDate:
		v, err = fitTime(v, typ == TypeTime, loc)
	case TypeAmount:
		v, err = fitAmount(v)
	case TypePhoneNumber:
		v = strings.ReplaceAll(v, " ", "")
	case TypeCarNumber:
		v = strings.ToUpper(plateSeparators.Replace(v))
	case TypeName:
		v = fitName(v)
	default:
		return "", fmt.Errorf("unknown keyword type %q", typ)
	}
	if err != nil {
		return "", err
	}
	if err := checkKeyword(typ, v, enum); err != nil {
		return "", err
	}
	return v, nil
}

// clean drops what no keyword may hold: control characters (WeChat
// refuses newlines) and invalid UTF-8. Line breaks and tabs become spaces,
// runs of spaces one space.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "")
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			space = true
			continue
		case unicode.IsControl(r), r == utf8.RuneError:
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}

// checkKeyword is the validity test Fit's output passes: the rules of
// wechat-api.md §2 as wxbridge reads them. It changes nothing.
func checkKeyword(typ, v string, enum []string) error {
	if v == "" {
		return errEmpty
	}
	if v != clean(v) {
		return fmt.Errorf("%s holds control characters or extra spaces", quote(v))
	}
	n := utf8.RuneCountInString(v)
	switch typ {
	case TypeThing:
		if n > maxThing {
			return fmt.Errorf("%s is %d characters; thing allows %d", quote(v), n, maxThing)
		}
	case TypeNumber:
		if !numberRE.MatchString(v) {
			return fmt.Errorf("%s is not a number: number takes digits and a decimal point only", quote(v))
		}
		if d := countDigits(v); d > maxNumber {
			return fmt.Errorf("%s has %d digits; number allows %d", quote(v), d, maxNumber)
		}
	case TypeLetter:
		if r, ok := firstNot(v, isLatin); !ok {
			return fmt.Errorf("%s has %q: letter takes the letters A-Z and a-z only", quote(v), r)
		}
		if n > maxLetter {
			return fmt.Errorf("%s is %d letters; letter allows %d", quote(v), n, maxLetter)
		}
	case TypeSymbol:
		if r, ok := firstNot(v, isSymbol); !ok {
			return fmt.Errorf("%s has %q: symbol takes symbols only (no letters, digits, Chinese or spaces)", quote(v), r)
		}
		if n > maxSymbol {
			return fmt.Errorf("%s is %d symbols; symbol allows %d", quote(v), n, maxSymbol)
		}
	case TypeCharacterString:
		if r, ok := firstNot(v, isASCIIGraphic); !ok {
			return fmt.Errorf("%s has %q: character_string takes ASCII digits, letters and symbols only", quote(v), r)
		}
		if n > maxCharString {
			return fmt.Errorf("%s is %d characters; character_string allows %d", quote(v), n, maxCharString)
		}
	case TypeTime, TypeDate:
		if !validTime(v, typ == TypeTime) {
			return fmt.Errorf("%s is not a WeChat %s (like %s)", quote(v), typ, map[bool]string{true: `"2006-01-02 15:04" or "15:04"`, false: `"2006-01-02" or "2019年10月1日"`}[typ == TypeTime])
		}
	case TypeAmount:
		m := amountRE.FindStringSubmatch(v)
		if m == nil {
			return fmt.Errorf("%s is not an amount: amount takes a currency sign and digits, like ￥100.00", quote(v))
		}
		if d := countDigits(m[1]); d > maxAmount {
			return fmt.Errorf("%s has %d digits; amount allows %d", quote(v), d, maxAmount)
		}
	case TypePhoneNumber:
		if r, ok := firstNot(v, func(r rune) bool { return r < utf8.RuneSelf && (isDigit(r) || isSymbol(r)) }); !ok {
			return fmt.Errorf("%s has %q: phone_number takes digits and symbols only", quote(v), r)
		}
		if n > maxPhone {
			return fmt.Errorf("%s is %d characters; phone_number allows %d", quote(v), n, maxPhone)
		}
		if !strings.ContainsFunc(v, isDigit) {
			return fmt.Errorf("%s has no digits", quote(v))
		}
	case TypeCarNumber:
		if !validCarNumber(v) {
			return fmt.Errorf("%s is not a plate number: at most %d characters, letters and digits, Chinese only first and last", quote(v), maxCarNumber)
		}
	case TypeName:
		return checkName(v)
	case TypePhrase:
		if r, ok := firstNot(v, isHan); !ok {
			return fmt.Errorf("%s has %q: phrase takes Chinese characters only", quote(v), r)
		}
		if n > maxPhrase {
			return fmt.Errorf("%s is %d characters; phrase allows %d", quote(v), n, maxPhrase)
		}
	case TypeEnum, TypeConst:
		if len(enum) > 0 && !slices.Contains(enum, v) {
			return fmt.Errorf("%s is not one of the template's values %s", quote(v), strings.Join(quoteAll(enum), ", "))
		}
		if n > maxThing {
			return fmt.Errorf("%s is %d characters; %s values are at most %d", quote(v), n, typ, maxThing)
		}
	default:
		return fmt.Errorf("unknown keyword type %q", typ)
	}
	return nil
}

var (
	plateSeparators  = strings.NewReplacer(" ", "", "·", "", "•", "", "-", "")
	amountSeparators = strings.NewReplacer(" ", "", ",", "")

	numberRE = regexp.MustCompile(`^\d+(\.\d+)?$`)
	amountRE = regexp.MustCompile(`^[￥¥$€£₩₹](\d+(?:\.\d+)?)$`)
)

func fitNumber(v string) (string, error) {
	s := strings.TrimPrefix(strings.ReplaceAll(v, ",", ""), "+")
	if numberRE.MatchString(s) {
		return s, nil
	}
	if strings.HasPrefix(s, "-") {
		return "", fmt.Errorf("%s is negative: number takes digits only (use a thing keyword for signed values)", quote(v))
	}
	// 1e3, 12.50e-1: exact, without the exponent.
	if r, err := parseDecimal(nil, s); err == nil && r.Sign() >= 0 {
		return trimZeros(r.FloatString(maxNumber)), nil
	}
	return "", fmt.Errorf("%s is not a number: number takes digits and a decimal point only", quote(v))
}

func fitAmount(v string) (string, error) {
	s := amountSeparators.Replace(v)
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "−") {
		return "", fmt.Errorf("%s is negative: amount takes a currency sign and digits only (use a thing keyword for refunds)", quote(v))
	}
	sign := currencyYuan
	if r, size := utf8.DecodeRuneInString(s); strings.ContainsRune("￥¥$€£₩₹", r) {
		sign, s = string(r), s[size:]
	}
	s = strings.TrimSuffix(strings.TrimSuffix(s, "元"), "RMB")
	if strings.HasPrefix(s, "-") {
		return "", fmt.Errorf("%s is negative: amount takes a currency sign and digits only (use a thing keyword for refunds)", quote(v))
	}
	r, err := parseDecimal(nil, s)
	if err != nil {
		return "", fmt.Errorf("%s is not an amount: amount takes a currency sign and digits, like ￥100.00", quote(v))
	}
	out := r.FloatString(2)
	if r.Sign() < 0 {
		return "", fmt.Errorf("%s is negative: amount takes a currency sign and digits only (use a thing keyword for refunds)", quote(v))
	}
	if d := countDigits(out); d > maxAmount {
		return "", fmt.Errorf("%s has %d digits; amount allows %d", quote(sign+out), d, maxAmount)
	}
	return sign + out, nil
}

// fitName cuts a long name rather than failing: a name is shown, not
// processed, and most of it is better than no message.
func fitName(v string) string {
	if strings.ContainsFunc(v, isHan) {
		return truncate(v, maxNameHan)
	}
	return truncate(v, maxNameLatin)
}

func checkName(v string) error {
	if r, ok := firstNot(v, func(r rune) bool { return isHan(r) || unicode.IsLetter(r) || isSymbol(r) || r == ' ' }); !ok {
		return fmt.Errorf("%s has %q: name takes Chinese characters, letters and symbols only", quote(v), r)
	}
	n := utf8.RuneCountInString(v)
	if strings.ContainsFunc(v, isHan) {
		if n > maxNameHan {
			return fmt.Errorf("%s is %d characters; a Chinese name allows %d", quote(v), n, maxNameHan)
		}
	} else if n > maxNameLatin {
		return fmt.Errorf("%s is %d characters; a name allows %d", quote(v), n, maxNameLatin)
	}
	return nil
}

func validCarNumber(v string) bool {
	r := []rune(v)
	if len(r) < 2 || len(r) > maxCarNumber {
		return false
	}
	for i, c := range r {
		if (c >= 'A' && c <= 'Z') || isDigit(c) {
			continue
		}
		if isHan(c) && (i == 0 || i == len(r)-1) {
			continue
		}
		return false
	}
	return true
}

// WeChat's own ways to write times and dates (wechat-api.md §2).
var (
	clockPat   = `(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?`
	cnDatePat  = `(?:\d{4}年\d{1,2}月\d{1,2}日|\d{4}年\d{1,2}月|\d{1,2}月\d{1,2}日)`
	numDatePat = `(?:\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2}|\d{4}\.\d{1,2}\.\d{1,2}|\d{4}-\d{1,2}|\d{1,2}-\d{1,2})`
	// A Chinese date may run into its time ("2019年10月1日15:01"); a
	// numeric one needs the space.
	timeRE  = regexp.MustCompile(`^(?:` + cnDatePat + ` ?|` + numDatePat + ` )?` + clockPat + `$`)
	dateRE  = regexp.MustCompile(`^(?:` + cnDatePat + `|` + numDatePat + `)(?: ` + clockPat + `)?$`)
	clockRE = regexp.MustCompile(`^` + clockPat + `$`)
	dmRE    = regexp.MustCompile(`\d+`)
)

func validTime(v string, clock bool) bool {
	parts := strings.Split(v, "~")
	if len(parts) > 2 {
		return false
	}
	for i, p := range parts {
		if !validTimePart(p, clock, i > 0) {
			return false
		}
	}
	return true
}

func validTimePart(p string, clock, second bool) bool {
	if clock {
		if !timeRE.MatchString(p) {
			return false
		}
	} else if !dateRE.MatchString(p) && !(second && clockRE.MatchString(p)) {
		return false
	}
	return plausibleDate(p)
}

// plausibleDate refuses 2026-13-45 and 2026-02-30: the patterns only know
// digit counts.
func plausibleDate(p string) bool {
	d, _, _ := strings.Cut(p, " ")
	if strings.Contains(d, ":") {
		return true
	}
	nums := dmRE.FindAllString(d, -1)
	year, month, day := 2000, 0, -1 // 2000: a leap year, so 02-29 passes without one; -1: no day
	switch {
	case len(nums) == 3:
		year, month, day = atoi(nums[0]), atoi(nums[1]), atoi(nums[2])
	case len(nums) == 2 && len(nums[0]) == 4:
		month = atoi(nums[1])
	case len(nums) == 2:
		month, day = atoi(nums[0]), atoi(nums[1])
	}
	if month < 1 || month > 12 {
		return false
	}
	return day == -1 || (day >= 1 && day <= time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day())
}

// atoi reads the short digit runs of dates; dmRE guarantees digits.
func atoi(s string) int {
	n := 0
	for _, c := range s[:min(len(s), 9)] {
		n = n*10 + int(c-'0')
	}
	return n
}

// fitTime keeps what WeChat already reads and formats points in time in
// loc: "2006-01-02 15:04" for time, "2006-01-02" for date. A range whose
// ends fall on one day shows the day once: "2026-11-01 09:00~10:30".
func fitTime(v string, clock bool, loc *time.Location) (string, error) {
	v = strings.ReplaceAll(v, "～", "~")
	parts := strings.Split(v, "~")
	if len(parts) > 2 {
		return "", fmt.Errorf("%s has more than one ~: a range has two ends", quote(v))
	}
	var times []time.Time
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if validTimePart(p, clock, i > 0) {
			parts[i] = p
			continue
		}
		if clock && dateRE.MatchString(p) && !strings.Contains(p, ":") {
			return "", fmt.Errorf("%s has no time of day: a time keyword needs one (use a date keyword for dates)", quote(p))
		}
		t, err := parseInstant(nil, p, loc)
		if err != nil {
			return "", err
		}
		t = t.In(loc)
		times = append(times, t)
		if clock {
			parts[i] = t.Format("2006-01-02 15:04")
		} else {
			parts[i] = t.Format("2006-01-02")
		}
	}
	if clock && len(times) == 2 && times[0].Format("20060102") == times[1].Format("20060102") {
		parts[1] = times[1].Format("15:04")
	}
	return strings.Join(parts, "~"), nil
}

func countDigits(s string) int {
	n := 0
	for _, r := range s {
		if isDigit(r) {
			n++
		}
	}
	return n
}

func firstNot(s string, ok func(rune) bool) (rune, bool) {
	for _, r := range s {
		if !ok(r) {
			return r, false
		}
	}
	return 0, true
}

func isDigit(r rune) bool        { return r >= '0' && r <= '9' }
func isLatin(r rune) bool        { return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') }
func isHan(r rune) bool          { return unicode.Is(unicode.Han, r) }
func isASCIIGraphic(r rune) bool { return r > ' ' && r < 0x7f }

// isSymbol is WeChat's "symbol": anything visible that is not Chinese, a
// letter or a digit.
func isSymbol(r rune) bool {
	return (unicode.IsPunct(r) || unicode.IsSymbol(r)) && !isHan(r)
}

func quoteAll(values []string) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = quote(v)
	}
	return out
}

// staticKeywordProblem checks what a keyword value written in rules.yaml
// says before any event: a literal is fitted as it is (and a thing or name
// that would be cut is an error: the author should shorten it); a
// template's literal text must fit the type's characters and length.
func staticKeywordProblem(typ string, x *text, loc *time.Location, enum []string) string {
	if x.constant() {
		out, err := Fit(typ, x.src, loc, enum)
		if err != nil {
			return err.Error()
		}
		if (typ == TypeThing || typ == TypeName) && out != clean(x.src) {
			return fmt.Sprintf("%s is %d characters; %s allows %d (it would be sent as %s)",
				quote(clean(x.src)), utf8.RuneCountInString(clean(x.src)), typ, map[bool]int{true: maxThing, false: maxNameLatin}[typ == TypeThing], quote(out))
		}
		return ""
	}
	lit := clean(strings.Join(x.lits, ""))
	if lit == "" {
		return ""
	}
	n := utf8.RuneCountInString(lit)
	var allowed func(rune) bool
	limit := 0
	switch typ {
	case TypeThing:
		limit = maxThing - 1
	case TypeNumber:
		allowed = func(r rune) bool { return isDigit(r) || r == '.' || r == ',' }
	case TypeLetter:
		allowed, limit = isLatin, maxLetter-1
	case TypeSymbol:
		allowed, limit = isSymbol, maxSymbol-1
	case TypeCharacterString:
		allowed, limit = isASCIIGraphic, maxCharString-1
	case TypePhoneNumber:
		allowed, limit = func(r rune) bool { return r == ' ' || (r < utf8.RuneSelf && (isDigit(r) || isSymbol(r))) }, maxPhone-1
	case TypePhrase:
		allowed, limit = isHan, maxPhrase-1
	}
	if allowed != nil {
		if r, ok := firstNot(lit, allowed); !ok {
			return fmt.Sprintf("the text around the placeholders has %q, which %s does not allow", r, typ)
		}
	}
	if limit > 0 && n > limit {
		return fmt.Sprintf("the text around the placeholders is already %d characters; %s allows %d in all", n, typ, limit+1)
	}
	return ""
}
