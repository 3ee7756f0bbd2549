package rules

import "time"

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

// SetEvalTimeLimit replaces MaxEvalTime until the returned function is
// called, so a test can reach the time limit without waiting for it.
func SetEvalTimeLimit(d time.Duration) (restore func()) {
	old := evalTimeLimit
	evalTimeLimit = d
	return func() { evalTimeLimit = old }
}
