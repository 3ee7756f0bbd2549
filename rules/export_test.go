package rules

// CheckKeyword exposes the validity test Fit's output passes, so the fuzz
// test can hold every rendered value to it.
var CheckKeyword = checkKeyword

// Fields are the keys the loader knows for each mapping, by the name of
// its definition in rules.schema.json.
var Fields = map[string][]string{
	"file": topFields, "app": appFields, "template": templateFields, "keyword": keywordFields,
	"rule": ruleFields, "page": pageFields, "recipient": recipientFields, "quietHours": quietFields,
	"dedupe": dedupeFields, "frequencyCap": capFields,
}
