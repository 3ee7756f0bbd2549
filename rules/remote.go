package rules

import (
	"slices"
	"strings"
)

// RemoteTemplate is a template as the app's WeChat template list has it
// (getTemplateList). The command that fetches the list converts to it, so
// this package stays free of the WeChat client.
type RemoteTemplate struct {
	ID       string
	Title    string
	Kind     string // KindOneTime or KindLongTerm
	Keywords []RemoteKeyword
}

// RemoteKeyword is one keyword of a RemoteTemplate.
type RemoteKeyword struct {
	Key   string // "thing1"
	Type  string // "thing"; "enum_string" is read as enum
	Label string
	Enum  []string
}

// CompareTemplates checks the templates of app against the app's real
// template list: every template id exists, with the same kind, the same
// keyword keys and types, and enum values WeChat knows. Each difference is
// an Error at the template's position in the file.
func (s *Set) CompareTemplates(app string, remote []RemoteTemplate) ErrorList {
	byID := map[string]*RemoteTemplate{}
	for i := range remote {
		byID[remote[i].ID] = &remote[i]
	}
	var errs ErrorList
	for _, name := range sortedKeys(s.Templates) {
		t := s.Templates[name]
		if t.App != app || t.Kind == KindTemplateMessage {
			// Template messages are listed by get_all_private_template,
			// not by the template list this compares with.
			continue
		}
		field := "templates." + name
		rt := byID[t.ID]
		if rt == nil {
			ids := make([]string, 0, len(remote))
			for _, r := range remote {
				ids = append(ids, r.ID+" ("+r.Title+")")
			}
			errs = append(errs, s.Errorf(field+".id", "template %s is not in app %s's template list on WeChat (it has: %s)", t.ID, app, orNone(ids)))
			continue
		}
		if rt.Kind != "" && rt.Kind != t.Kind {
			errs = append(errs, s.Errorf(field+".kind", "WeChat says %s (%s) is %s, the file says %s", t.ID, rt.Title, rt.Kind, t.Kind))
		}
		remoteKeys := map[string]*RemoteKeyword{}
		for i := range rt.Keywords {
			k := &rt.Keywords[i]
			remoteKeys[k.Key] = k
			if _, ok := t.Keywords[k.Key]; !ok {
				errs = append(errs, s.Errorf(field+".keywords", "WeChat's template %s also has %s (%s): every keyword must be declared and sent", rt.Title, k.Key, k.Label))
			}
		}
		for _, key := range t.Keys {
			f := field + ".keywords." + key
			rk := remoteKeys[key]
			if rk == nil {
				errs = append(errs, s.Errorf(f, "WeChat's template %s has no keyword %s (it has %s)", rt.Title, key, orNone(remoteKeyNames(rt))))
				continue
			}
			rtype := rk.Type
			if rtype == "enum_string" {
				rtype = TypeEnum
			}
			if rtype != t.Keywords[key] {
				errs = append(errs, s.Errorf(f, "WeChat says %s (%s) is a %s, the file says %s", key, rk.Label, rk.Type, t.Keywords[key]))
			}
			for _, v := range t.Enums[key] {
				if len(rk.Enum) > 0 && !slices.Contains(rk.Enum, v) {
					errs = append(errs, s.Errorf(f+".enum", "%q is not one of WeChat's values for %s: %s", v, key, strings.Join(quoteAll(rk.Enum), ", ")))
				}
			}
		}
	}
	return errs
}

func remoteKeyNames(rt *RemoteTemplate) []string {
	out := make([]string, len(rt.Keywords))
	for i, k := range rt.Keywords {
		out[i] = k.Key
	}
	return out
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
