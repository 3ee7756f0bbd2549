package rules

import (
	"fmt"
	"strings"
)

// envProblem is a ${VAR} that cannot be expanded, at a byte offset of the
// scalar it is in.
type envProblem struct {
	offset int
	msg    string
}

// expandEnv expands ${VAR} and ${VAR:-default} (the default when VAR is
// unset or empty, as in the shell) in one scalar of the file. "$${" is a
// literal "${". Expansion happens per value, after YAML parsing, so a
// variable's value can never change the file's structure and every
// problem keeps its line and column.
func expandEnv(s string, env func(string) (string, bool)) (string, []envProblem) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	var problems []envProblem
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			problems = append(problems, envProblem{i, "unclosed ${: write ${NAME}, or $${ for a literal ${"})
			b.WriteString(s[i:])
			break
		}
		name, def, hasDef := strings.Cut(s[i+2:i+end], ":-")
		switch v, ok := lookupEnv(env, name); {
		case !validEnvName(name):
			problems = append(problems, envProblem{i, fmt.Sprintf("${%s}: %q is not a variable name", s[i+2:i+end], name)})
		case ok && (v != "" || !hasDef):
			b.WriteString(v)
		case hasDef:
			b.WriteString(def)
		default:
			problems = append(problems, envProblem{i, fmt.Sprintf("environment variable %s is not set (write ${%s:-default} for a default)", name, name)})
		}
		i += end + 1
	}
	return b.String(), problems
}

func lookupEnv(env func(string) (string, bool), name string) (string, bool) {
	if env == nil {
		return "", false
	}
	return env(name)
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || isLatin(r) || (i > 0 && isDigit(r))) {
			return false
		}
	}
	return true
}
