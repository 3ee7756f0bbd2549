package wechat

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

const pathTemplates = "/wxaapi/newtmpl/gettemplate"

// Template is one of an app's subscribe-message templates, as
// getTemplateList returns it.
type Template struct {
	ID      string // priTmplId: what send takes as template_id
	Title   string
	Content string // "会议时间:{{date2.DATA}}\n会议地点:{{thing1.DATA}}\n"
	Example string
	// Type is 2 for one-time templates and 3 for long-term ones.
	Type     int
	Keywords []Keyword
}

// Keyword is one keyword of a template, parsed from its content.
type Keyword struct {
	Key string // "thing1"
	// Type is the key without its number: "thing", "time", and
	// "enum_string" for enum keywords (whose values are in Enum).
	Type  string
	Label string // "会议地点"
	// Enum holds the allowed values of an enum keyword.
	Enum []string
}

var keywordRef = regexp.MustCompile(`([^\n{}:：]*)[:：]?\s*\{\{\s*([a-z_]+?)(\d+)\.DATA\s*\}\}`)

// Templates lists the app's templates (getTemplateList), so rules can be
// checked against what WeChat really has.
func (c *Client) Templates(ctx context.Context, app string) ([]Template, error) {
	data, err := c.callWithToken(ctx, app, http.MethodGet, pathTemplates, nil)
	if err != nil {
		return nil, fmt.Errorf("app %s: list templates: %w", app, err)
	}
	var out struct {
		Data []struct {
			PriTmplID string `json:"priTmplId"`
			Title     string `json:"title"`
			Content   string `json:"content"`
			Example   string `json:"example"`
			Type      int    `json:"type"`
			Enums     []struct {
				KeywordCode   string   `json:"keywordCode"`
				EnumValueList []string `json:"enumValueList"`
			} `json:"keywordEnumValueList"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("app %s: list templates: read answer: %w", app, err)
	}
	list := make([]Template, 0, len(out.Data))
	for _, d := range out.Data {
		t := Template{ID: d.PriTmplID, Title: d.Title, Content: d.Content, Example: d.Example, Type: d.Type}
		enums := map[string][]string{}
		for _, e := range d.Enums {
			enums[strings.TrimSuffix(e.KeywordCode, ".DATA")] = e.EnumValueList
		}
		for _, m := range keywordRef.FindAllStringSubmatch(d.Content, -1) {
			key := m[2] + m[3]
			t.Keywords = append(t.Keywords, Keyword{Key: key, Type: m[2], Label: strings.TrimSpace(m[1]), Enum: enums[key]})
		}
		list = append(list, t)
	}
	return list, nil
}
