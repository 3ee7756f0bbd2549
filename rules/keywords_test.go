package rules_test

import (
	"strings"
	"testing"
	"time"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

func shanghai(t testing.TB) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// TestFit covers every keyword type: values kept as they are, values
// fitted, and values refused with the reason.
func TestFit(t *testing.T) {
	loc := shanghai(t)
	tests := []struct {
		typ, in string
		enum    []string
		want    string // the fitted value, when refused is empty
		refused string // part of the error
	}{
		// thing: anything, at most 20 characters, cut with an ellipsis.
		{typ: "thing", in: "上海青木贸易", want: "上海青木贸易"},
		{typ: "thing", in: "12345678901234567890", want: "12345678901234567890"},
		{typ: "thing", in: "123456789012345678901", want: "1234567890123456789…"},
		{typ: "thing", in: "Apple iPhone 17 Pro 256GB 深空黑色", want: "Apple iPhone 17 Pro…"},
		{typ: "thing", in: "第一行\n第二行\t\x07完", want: "第一行 第二行 完"},
		{typ: "thing", in: "  \n ", refused: "empty"},
		{typ: "thing", in: "", refused: "empty"},
		{typ: "thing", in: "a\xffb", want: "ab"},

		// number: digits and a decimal point, at most 32 digits.
		{typ: "number", in: "42", want: "42"},
		{typ: "number", in: "3.1415", want: "3.1415"},
		{typ: "number", in: "1,234,567", want: "1234567"},
		{typ: "number", in: "+7", want: "7"},
		{typ: "number", in: "1e3", want: "1000"},
		{typ: "number", in: "12345678901234567890123456789012", want: "12345678901234567890123456789012"},
		{typ: "number", in: "123456789012345678901234567890123", refused: "33 digits; number allows 32"},
		{typ: "number", in: "-5", refused: "negative"},
		{typ: "number", in: "12a", refused: "not a number"},
		{typ: "number", in: "一百", refused: "not a number"},

		// letter: A-Z and a-z only, at most 32.
		{typ: "letter", in: "ABCxyz", want: "ABCxyz"},
		{typ: "letter", in: "ABC1", refused: `has '1'`},
		{typ: "letter", in: "ÄBC", refused: `has 'Ä'`},
		{typ: "letter", in: strings.Repeat("a", 33), refused: "33 letters; letter allows 32"},

		// symbol: at most 5 symbols.
		{typ: "symbol", in: "★", want: "★"},
		{typ: "symbol", in: "+-*/%", want: "+-*/%"},
		{typ: "symbol", in: "+-*/%!", refused: "6 symbols; symbol allows 5"},
		{typ: "symbol", in: "A+", refused: `has 'A'`},

		// character_string: ASCII digits, letters and symbols, at most 32.
		{typ: "character_string", in: "SO20261121-1001", want: "SO20261121-1001"},
		{typ: "character_string", in: "2026-10", want: "2026-10"},
		{typ: "character_string", in: strings.Repeat("x", 32), want: strings.Repeat("x", 32)},
		{typ: "character_string", in: strings.Repeat("x", 33), refused: "33 characters; character_string allows 32"},
		{typ: "character_string", in: "订单1001", refused: `has '订'`},
		{typ: "character_string", in: "SO 1001", refused: `has ' '`},

		// time: RFC 3339 and Unix times in the zone; WeChat's own forms kept.
		{typ: "time", in: "2026-11-21T14:05:00Z", want: "2026-11-21 22:05"},
		{typ: "time", in: "2026-11-21T22:05:59+08:00", want: "2026-11-21 22:05"},
		{typ: "time", in: "1795137120", want: "2026-11-20 09:12"},
		{typ: "time", in: "1795137120000", want: "2026-11-20 09:12"},
		{typ: "time", in: "2026-11-01 09:00", want: "2026-11-01 09:00"},
		{typ: "time", in: "2026-11-01T09:00", want: "2026-11-01 09:00"},
		{typ: "time", in: "15:01", want: "15:01"},
		{typ: "time", in: "15:01:30", want: "15:01:30"},
		{typ: "time", in: "2019年10月1日 15:01", want: "2019年10月1日 15:01"},
		{typ: "time", in: "2026-11-24T02:00:00Z ~ 2026-11-24T03:30:00Z", want: "2026-11-24 10:00~11:30"},
		{typ: "time", in: "2026-11-24T02:00:00Z～2026-11-25T03:30:00Z", want: "2026-11-24 10:00~2026-11-25 11:30"},
		{typ: "time", in: "09:00~10:00", want: "09:00~10:00"},
		{typ: "time", in: "2026-11-01", refused: "no time of day"},
		{typ: "time", in: "tomorrow", refused: "cannot read"},
		{typ: "time", in: "1501", refused: "cannot read"},
		{typ: "time", in: "25:00", refused: "cannot read"},
		{typ: "time", in: "1~2~3", refused: "more than one ~"},

		// date: the same, shown as a date.
		{typ: "date", in: "2026-11-21T20:05:00Z", want: "2026-11-22"},
		{typ: "date", in: "1795137120", want: "2026-11-20"},
		{typ: "date", in: "2026-11-01", want: "2026-11-01"},
		{typ: "date", in: "2026/11/01", want: "2026/11/01"},
		{typ: "date", in: "2026.11.01", want: "2026.11.01"},
		{typ: "date", in: "2026-11", want: "2026-11"},
		{typ: "date", in: "11-01", want: "11-01"},
		{typ: "date", in: "2019年10月1日", want: "2019年10月1日"},
		{typ: "date", in: "2019年10月", want: "2019年10月"},
		{typ: "date", in: "10月1日", want: "10月1日"},
		{typ: "date", in: "2026-11-01 09:00", want: "2026-11-01 09:00"},
		{typ: "date", in: "2026-11-01 09:00~11:00", want: "2026-11-01 09:00~11:00"},
		{typ: "date", in: "2026-11-01~2026-11-03", want: "2026-11-01~2026-11-03"},
		{typ: "date", in: "2026-13-01", refused: "cannot read"},
		{typ: "date", in: "2026-02-31", refused: "cannot read"},
		{typ: "date", in: "next week", refused: "cannot read"},
		{typ: "date", in: "0000-01-0", refused: "cannot read"}, // found by FuzzRender

		// amount: a currency sign and at most 10 digits.
		{typ: "amount", in: "100", want: "￥100.00"},
		{typ: "amount", in: "9147.5", want: "￥9147.50"},
		{typ: "amount", in: "￥1,234.50", want: "￥1234.50"},
		{typ: "amount", in: "¥12", want: "¥12.00"},
		{typ: "amount", in: "$0.5", want: "$0.50"},
		{typ: "amount", in: "100元", want: "￥100.00"},
		{typ: "amount", in: "2.345", want: "￥2.35"},
		{typ: "amount", in: "99999999.99", want: "￥99999999.99"},
		{typ: "amount", in: "100000000", refused: "11 digits; amount allows 10"},
		{typ: "amount", in: "-5", refused: "negative"},
		{typ: "amount", in: "￥-5", refused: "negative"},
		{typ: "amount", in: "五元", refused: "not an amount"},

		// phone_number: digits and symbols, at most 17.
		{typ: "phone_number", in: "+86-0766-66888866", want: "+86-0766-66888866"},
		{typ: "phone_number", in: "138 0013 8000", want: "13800138000"},
		{typ: "phone_number", in: "+86-0766-668888661", refused: "18 characters; phone_number allows 17"},
		{typ: "phone_number", in: "400-TAXI", refused: `has 'T'`},
		{typ: "phone_number", in: "--", refused: "no digits"},

		// car_number: at most 8; Chinese first and last only.
		{typ: "car_number", in: "粤A8Z888挂", want: "粤A8Z888挂"},
		{typ: "car_number", in: "粤a·8z888", want: "粤A8Z888"},
		{typ: "car_number", in: "粤AD123456", refused: "not a plate number"},
		{typ: "car_number", in: "粤A8中888", refused: "not a plate number"},

		// name: 10 with Chinese, 20 otherwise; cut, never refused for length.
		{typ: "name", in: "王小明", want: "王小明"},
		{typ: "name", in: "John Smith", want: "John Smith"},
		{typ: "name", in: "买买提·艾力", want: "买买提·艾力"},
		{typ: "name", in: "上海青木贸易有限公司采购部", want: "上海青木贸易有限公…"},
		{typ: "name", in: "Alexander Hamilton-Smith", want: "Alexander Hamilton-…"},
		{typ: "name", in: "用户123", refused: `has '1'`},

		// phrase: at most 5 Chinese characters, nothing else.
		{typ: "phrase", in: "已发货", want: "已发货"},
		{typ: "phrase", in: "审核未通过", want: "审核未通过"},
		{typ: "phrase", in: "审核未能通过", refused: "6 characters; phrase allows 5"},
		{typ: "phrase", in: "Shipped", refused: `has 'S'`},
		{typ: "phrase", in: "已发货！", refused: `has '！'`},

		// enum: one of the template's values, when it lists them.
		{typ: "enum", in: "缺水", enum: []string{"缺水", "缺电"}, want: "缺水"},
		{typ: "enum", in: "缺油", enum: []string{"缺水", "缺电"}, refused: `not one of the template's values "缺水", "缺电"`},
		{typ: "enum", in: "任何值", want: "任何值"},

		{typ: "colour", in: "red", refused: `unknown keyword type "colour"`},
	}
	for _, tt := range tests {
		t.Run(tt.typ+"/"+tt.in, func(t *testing.T) {
			got, err := rules.Fit(tt.typ, tt.in, loc, tt.enum)
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("Fit(%s, %q) = %q, %v; want an error with %q", tt.typ, tt.in, got, err, tt.refused)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Fit(%s, %q) = %q, %v; want %q", tt.typ, tt.in, got, err, tt.want)
			}
			// What wxbridge sends, the emulator (WeChat's rules as another
			// engineer read them) accepts.
			if !wechattest.ValidKeyword(tt.typ, got, tt.enum) {
				t.Errorf("the emulator refuses %s %q", tt.typ, got)
			}
			// Fitting is idempotent: a fitted value is kept as it is.
			if again, err := rules.Fit(tt.typ, got, loc, tt.enum); err != nil || again != got {
				t.Errorf("Fit(Fit(%q)) = %q, %v", tt.in, again, err)
			}
		})
	}
}
