package wechattest_test

import (
	"strings"
	"testing"

	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

func TestValidKeyword(t *testing.T) {
	enum := []string{"缺水", "漏水"}
	tests := []struct {
		typ   string
		value string
		valid bool
	}{
		// Every type: no empty values, no control characters.
		{"thing", "", false},
		{"thing", "   ", false},
		{"thing", "line\nbreak", false},
		{"thing", "tab\there", false},
		{"thing", "cr\r", false},
		{"thing", "nul\x00", false},
		{"thing", "del\x7f", false},
		{"character_string", "A\n1", false},

		{"thing", "广州至北京", true},
		{"thing", "Acme 订单 #42, 已发货!", true},
		{"thing", strings.Repeat("字", 20), true},
		{"thing", strings.Repeat("字", 21), false},
		{"thing", strings.Repeat("a", 20), true},
		{"thing", strings.Repeat("a", 21), false},
		{"thing1", "keys work as types", true},
		{"thing01", "zero-padded too", true},

		{"number", "100", true},
		{"number", "3.14", true},
		{"number", strings.Repeat("9", 32), true},
		{"number", strings.Repeat("9", 33), false},
		{"number", "-1", false},
		{"number", "1,000", false},
		{"number", "1.", false},
		{"number", "12a", false},
		{"number", "１２", false}, // full-width digits

		{"letter", "ABCdef", true},
		{"letter", strings.Repeat("z", 32), true},
		{"letter", strings.Repeat("z", 33), false},
		{"letter", "abc1", false},
		{"letter", "ab c", false},
		{"letter", "中", false},

		{"symbol", "*", true},
		{"symbol", "+-*/%", true},
		{"symbol", "+-*/%!", false},
		{"symbol", "，。", true},
		{"symbol", "a", false},
		{"symbol", "1", false},
		{"symbol", "中", false},

		{"character_string", "SN-2026-10/42", true},
		{"character_string", "2026-10", true},
		{"character_string", strings.Repeat("x", 32), true},
		{"character_string", strings.Repeat("x", 33), false},
		{"character_string", "订单42", false},

		{"time", "15:01", true},
		{"time", "15:01:59", true},
		{"time", "9:05", true},
		{"time", "2019年10月1日 15:01", true},
		{"time", "2019年10月1日15:01", true},
		{"time", "2019-10-01 15:01", true},
		{"time", "2019/10/01 15:01:02", true},
		{"time", "2019.10.01 15:01", true},
		{"time", "15:01~16:30", true},
		{"time", "2019-10-01 15:01 ~ 2019-10-01 16:30", true},
		{"time", "24:00", false},
		{"time", "15:60", false},
		{"time", "15", false},
		{"time", "2019-10-01", false},
		{"time", "2019-10-01T15:01:00Z", false},
		{"time", "2019-10-0115:01", false},
		{"time", "3pm", false},
		{"time", "15:01~", false},

		{"date", "2019年10月1日", true},
		{"date", "2019年10月", true},
		{"date", "10月1日", true},
		{"date", "2018-01-01", true},
		{"date", "2018/01/01", true},
		{"date", "2018.01.01", true},
		{"date", "2018-01", true},
		{"date", "01-01", true},
		{"date", "2019年10月1日 15:01", true},
		{"date", "2019-10-01 15:01", true},
		{"date", "2019-10-01~2019-10-07", true},
		{"date", "2019-10-01 08:00~10:00", true},
		{"date", "2018-13-01", false},
		{"date", "2018-01-32", false},
		{"date", "2018-01/01", false},
		{"date", "18-01-01", false},
		{"date", "15:01", false},
		{"date", "tomorrow", false},
		{"date", "2019-10-01T15:01:00+08:00", false},

		{"amount", "￥100", true},
		{"amount", "¥8.6", true},
		{"amount", "$1234567890", true},
		{"amount", "100元", true},
		{"amount", "￥100.00元", true},
		{"amount", "100", true},
		{"amount", "￥12345678901", false},
		{"amount", "￥123456789.01", false},
		{"amount", "￥￥100", false},
		{"amount", "-100", false},
		{"amount", "1,000", false},
		{"amount", "一百元", false},
		{"amount", "元", false},

		{"phone_number", "+86-0766-66888866", true},
		{"phone_number", "13800138000", true},
		{"phone_number", "(0755) 1234 5678", true},
		{"phone_number", strings.Repeat("1", 17), true},
		{"phone_number", strings.Repeat("1", 18), false},
		{"phone_number", "ext. 12", false},

		{"car_number", "粤A8Z888挂", true},
		{"car_number", "京A12345", true},
		{"car_number", "AB12345", true},
		{"car_number", "粤A8Z8888挂", false},
		{"car_number", "粤A中888", false},
		{"car_number", "粤A-8888", false},

		{"name", "张三", true},
		{"name", "阿卜杜拉·买买提", true},
		{"name", "张三Tom", true},
		{"name", strings.Repeat("张", 10), true},
		{"name", strings.Repeat("张", 11), false},
		{"name", "张三" + strings.Repeat("a", 9), false},
		{"name", "John Smith", true},
		{"name", strings.Repeat("a", 20), true},
		{"name", strings.Repeat("a", 21), false},
		{"name", "R2D2", false},

		{"phrase", "配送中", true},
		{"phrase", "审核通过", true},
		{"phrase", "五个汉字啊", true},
		{"phrase", "六个汉字啊啊", false},
		{"phrase", "OK", false},
		{"phrase", "已完成!", false},
		{"phrase", "已 完成", false},

		{"enum", "缺水", true},
		{"enum", "堵塞", false},
		{"enum_string2", "漏水", true},

		{"unknown_type", "anything", false},
		{"", "anything", false},
	}
	for _, tt := range tests {
		t.Run(tt.typ+"/"+tt.value, func(t *testing.T) {
			if got := wechattest.ValidKeyword(tt.typ, tt.value, enum); got != tt.valid {
				t.Errorf("ValidKeyword(%q, %q) = %v, want %v", tt.typ, tt.value, got, tt.valid)
			}
		})
	}
}

func TestEnumWithoutValuesTakesAThing(t *testing.T) {
	if !wechattest.ValidKeyword("enum", "任何值", nil) {
		t.Error("an enum keyword with no registered values refused a short value")
	}
	if wechattest.ValidKeyword("enum", strings.Repeat("长", 21), nil) {
		t.Error("an enum keyword with no registered values took 21 characters")
	}
}

func TestKeywordType(t *testing.T) {
	tests := map[string]string{
		"thing": "thing", "thing1": "thing", "thing01": "thing", "character_string13": "character_string",
		"enum_string2": "enum", "enum": "enum", "phrase3.DATA": "phrase", "time": "time",
		"things": "", "Thing1": "", "": "", "1": "",
	}
	for in, want := range tests {
		if got := wechattest.KeywordType(in); got != want {
			t.Errorf("KeywordType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEnumKeywordThroughSend(t *testing.T) {
	f := newFixture(t, wechattest.Options{AutoSubscribe: true})
	tok := f.token()
	if a := f.send(tok, msg(alice, tplEnum, map[string]string{"enum_string1": "漏水"})); a.errcode != 0 {
		t.Fatalf("registered enum value: %s", a.body)
	}
	wantErr(t, f.send(tok, msg(alice, tplEnum, map[string]string{"enum_string1": "堵塞"})), 47003, "argument invalid! data.enum_string1.value invalid")
}
