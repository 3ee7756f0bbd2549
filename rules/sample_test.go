package rules_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/wxbridge/wxbridge/rules"
	"github.com/wxbridge/wxbridge/wechat/wechattest"
)

// The sample rules.yaml is what a fresh clone runs with `serve --emulator`:
// it must pass check with no environment at all.
func loadSample(t testing.TB) *rules.Set {
	t.Helper()
	src, err := os.ReadFile("../rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Parse("../rules.yaml", src, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("sample rules.yaml does not pass check:\n%v", err)
	}
	return set
}

func TestSampleRules(t *testing.T) {
	set := loadSample(t)
	// The README's try-it and the emulator demo rely on these.
	r := set.Rules[0]
	if r.Name != "statement-to-applicant" || r.Template.ID != "NKeZWyyEkOl4tT6fYwJN90RxCHt_statement" || r.App.Name != "main" {
		t.Fatalf("first rule %s, template %s", r.Name, r.Template.ID)
	}
	if got := strings.Join(r.Template.Keys, ","); got != "thing1,thing2,character_string3,time4" {
		t.Errorf("statement_issued keys %s", got)
	}
	if a := set.Apps["main"]; a.AppID != "wx0123456789abcdef" || a.Secret != "emulator-secret" || len(a.AESKey) != 43 {
		t.Errorf("app main from defaults: %+v", a)
	}
	// The README's event: only the applicant rule sends, and it renders.
	ev := event("statement.issued", `{"statement_id":"S-42","applicant_id":"u-17","buyer_name":"Acme",
		"seller_name":"Supplier","month":"2026-10","created_at":"2026-11-01 09:00"}`)
	m := set.Match(ev)
	if len(m) != 1 || m[0].Rule.Name != "statement-to-applicant" || m[0].Err != nil {
		t.Fatalf("README event matches %v", m)
	}
	if msg, err := m[0].Rule.Render(ev); err != nil || msg.Data["time4"] != "2026-11-01 09:00" {
		t.Fatalf("README event renders %+v, %v", msg, err)
	}
}

// Every sample event renders with every rule it matches, within WeChat's
// limits, and every scenario the product was built for has one.
func TestSampleEvents(t *testing.T) {
	set := loadSample(t)
	files, _ := filepath.Glob("testdata/events/*.json")
	covered := map[string]bool{}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			ev := cloudEvent(t, f)
			matched := set.Match(ev)
			if len(matched) == 0 {
				t.Fatal("matches no rule")
			}
			for _, m := range matched {
				covered[m.Rule.Name] = true
				p := m.Rule.Preview(ev)
				if m.Err != nil || p.Err() != nil {
					t.Fatalf("%s: %v %v", m.Rule.Name, m.Err, p.Err())
				}
				if len(p.Recipients) == 0 {
					t.Errorf("%s: no recipients", m.Rule.Name)
				}
				for _, k := range p.Keywords {
					if !wechattest.ValidKeyword(k.Type, k.Value, m.Rule.Template.Enums[k.Key]) {
						t.Errorf("%s: the emulator refuses %s %q", m.Rule.Name, k.Key, k.Value)
					}
				}
			}
		})
	}
	for _, r := range set.Rules {
		if !covered[r.Name] {
			t.Errorf("rule %s has no sample event in testdata/events", r.Name)
		}
	}
}

// rules.schema.json describes the same language as the loader: the same
// fields in each mapping, and the sample file validates against it.
func TestSchema(t *testing.T) {
	raw, err := os.ReadFile("../rules.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("rules.schema.json: %v", err)
	}
	if schema["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v", schema["$schema"])
	}
	defs := schema["$defs"].(map[string]any)
	for name, fields := range rules.Fields {
		def, ok := defs[name].(map[string]any)
		if !ok {
			t.Errorf("schema has no $defs/%s", name)
			continue
		}
		var props []string
		for p := range def["properties"].(map[string]any) {
			props = append(props, p)
		}
		sort.Strings(props)
		want := slices.Sorted(slices.Values(fields))
		if !slices.Equal(props, want) {
			t.Errorf("$defs/%s has %v, the loader knows %v", name, props, want)
		}
	}
	for _, f := range []string{"../rules.yaml", "testdata/schema/bad.yaml"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := yaml.Unmarshal(src, &doc); err != nil {
			t.Fatal(err)
		}
		v := validator{defs: defs}
		v.check(schema, doc, "")
		bad := strings.Contains(f, "bad")
		if !bad && len(v.errs) > 0 {
			t.Errorf("%s does not validate against the schema:\n%s", f, strings.Join(v.errs, "\n"))
		}
		if bad && len(v.errs) != 4 {
			t.Errorf("%s: want 4 schema errors, got:\n%s", f, strings.Join(v.errs, "\n"))
		}
	}
}

// validator is the part of JSON Schema 2020-12 that rules.schema.json
// uses, enough to hold the sample file to it without a dependency.
type validator struct {
	defs map[string]any
	errs []string
}

func (v *validator) check(s map[string]any, doc any, path string) {
	if ref, ok := s["$ref"].(string); ok {
		v.check(v.defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any), doc, path)
	}
	fail := func(format string, args ...any) { v.errs = append(v.errs, path+": "+fmt.Sprintf(format, args...)) }
	if types, ok := s["type"]; ok && !typeIs(types, doc) {
		fail("want %v, got %T", types, doc)
		return
	}
	if e, ok := s["enum"].([]any); ok && !slices.Contains(e, doc) {
		fail("%v is not one of %v", doc, e)
	}
	if p, ok := s["pattern"].(string); ok {
		if str, ok := doc.(string); ok && !regexp.MustCompile(p).MatchString(str) {
			fail("%q does not match %s", str, p)
		}
	}
	for _, key := range []string{"oneOf", "anyOf"} {
		alts, ok := s[key].([]any)
		if !ok {
			continue
		}
		n := 0
		for _, alt := range alts {
			sub := validator{defs: v.defs}
			sub.check(alt.(map[string]any), doc, path)
			if len(sub.errs) == 0 {
				n++
			}
		}
		if (key == "oneOf" && n != 1) || (key == "anyOf" && n == 0) {
			fail("%d of the %s alternatives match", n, key)
		}
	}
	if not, ok := s["not"].(map[string]any); ok {
		sub := validator{defs: v.defs}
		sub.check(not, doc, path)
		if len(sub.errs) == 0 {
			fail("matches what it must not")
		}
	}
	if obj, ok := doc.(map[string]any); ok {
		for _, r := range asList(s["required"]) {
			if _, ok := obj[r.(string)]; !ok {
				fail("missing %s", r)
			}
		}
		if n, ok := s["minProperties"].(float64); ok && len(obj) < int(n) {
			fail("fewer than %v properties", n)
		}
		props, _ := s["properties"].(map[string]any)
		for k, val := range obj {
			if pn, ok := s["propertyNames"].(map[string]any); ok {
				v.check(pn, k, path+"."+k)
			}
			patterned := false
			for pat := range asMap(s["patternProperties"]) {
				patterned = patterned || regexp.MustCompile(pat).MatchString(k)
			}
			if ps, ok := props[k].(map[string]any); ok {
				v.check(ps, val, path+"."+k)
			} else if ap, ok := s["additionalProperties"].(map[string]any); ok {
				v.check(ap, val, path+"."+k)
			} else if s["additionalProperties"] == false && !patterned {
				fail("unknown property %s", k)
			}
		}
	}
	if arr, ok := doc.([]any); ok {
		if n, ok := s["minItems"].(float64); ok && len(arr) < int(n) {
			fail("fewer than %v items", n)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, it := range arr {
				v.check(items, it, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

func typeIs(types, doc any) bool {
	for _, t := range append(asList(types), types) {
		switch t {
		case "object":
			if _, ok := doc.(map[string]any); ok {
				return true
			}
		case "array":
			if _, ok := doc.([]any); ok {
				return true
			}
		case "string":
			if _, ok := doc.(string); ok {
				return true
			}
		case "number":
			switch doc.(type) {
			case int, float64:
				return true
			}
		case "integer":
			if _, ok := doc.(int); ok {
				return true
			}
		case "boolean":
			if _, ok := doc.(bool); ok {
				return true
			}
		}
	}
	return false
}
