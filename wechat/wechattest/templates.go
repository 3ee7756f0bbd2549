package wechattest

import "strings"

// Example values gettemplate shows per keyword type.
var examples = map[string]string{
	"thing": "广州至北京", "number": "100", "letter": "ABC", "symbol": "*",
	"character_string": "SN-20261101", "time": "2026年11月1日 09:00", "date": "2026年11月1日",
	"amount": "￥100", "phone_number": "+86-0766-66888866", "car_number": "粤A8Z888挂",
	"name": "张三", "phrase": "配送中", "enum": "缺水", "const": "已出账",
}

type templateJSON struct {
	PriTmplID string      `json:"priTmplId"`
	Title     string      `json:"title"`
	Content   string      `json:"content"`
	Example   string      `json:"example"`
	Type      int         `json:"type"`
	Enums     []enumValue `json:"keywordEnumValueList,omitempty"`
}

type enumValue struct {
	KeywordCode   string   `json:"keywordCode"`
	EnumValueList []string `json:"enumValueList"`
}

// templates serves GET /wxaapi/newtmpl/gettemplate: the app's templates in
// the order they were added, with content and example built from the
// keywords ("标题:{{thing1.DATA}}\n").
func (c *call) templates() {
	a := c.authorize()
	if a == nil {
		return
	}
	list := make([]templateJSON, 0, len(a.order))
	for _, id := range a.order {
		t := a.templates[id]
		if t.Kind == TemplateMessage {
			// Listed by /cgi-bin/template/get_all_private_template, which
			// the emulator does not serve.
			continue
		}
		tj := templateJSON{PriTmplID: t.ID, Title: t.Title, Type: 2}
		if t.Kind == LongTerm {
			tj.Type = 3
		}
		var content, example strings.Builder
		for _, kw := range t.keys {
			label := t.Labels[kw.key]
			if label == "" {
				label = kw.key
			}
			typ := KeywordType(kw.typ)
			content.WriteString(label + ":{{" + kw.key + ".DATA}}\n")
			ex := examples[typ]
			if typ == "enum" && len(kw.enum) > 0 {
				ex = kw.enum[0]
				tj.Enums = append(tj.Enums, enumValue{KeywordCode: kw.key + ".DATA", EnumValueList: kw.enum})
			}
			example.WriteString(label + ":" + ex + "\n")
		}
		tj.Content, tj.Example = content.String(), example.String()
		list = append(list, tj)
	}
	a.mu.Unlock()
	c.replyJSON(struct {
		ErrCode int            `json:"errcode"`
		ErrMsg  string         `json:"errmsg"`
		Data    []templateJSON `json:"data"`
	}{0, "ok", list})
}
