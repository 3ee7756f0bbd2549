package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

var errHelp = errors.New("help requested")

// flags is a FlagSet whose flags default to environment variables.
type flags struct {
	*flag.FlagSet
}

func newFlags(name string, stderr io.Writer, synopsis string) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: wxbridge %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return &flags{fs}
}

func envOr(env, def string) string {
	if v, ok := os.LookupEnv(env); ok {
		return v
	}
	return def
}

func (f *flags) str(name, env, def, help string) *string {
	if env != "" {
		help += " (env " + env + ")"
	}
	return f.String(name, envOr(env, def), help)
}

func (f *flags) boolean(name, env string, def bool, help string) *bool {
	if env != "" {
		help += " (env " + env + ")"
		if v, ok := os.LookupEnv(env); ok {
			def, _ = strconv.ParseBool(v)
		}
	}
	return f.Bool(name, def, help)
}

func (f *flags) integer(name, env string, def int, help string) *int {
	if env != "" {
		help += " (env " + env + ")"
		if v, ok := os.LookupEnv(env); ok {
			if n, err := strconv.Atoi(v); err == nil {
				def = n
			}
		}
	}
	return f.Int(name, def, help)
}

func (f *flags) duration(name, env string, def time.Duration, help string) *time.Duration {
	if env != "" {
		help += " (env " + env + ")"
		if v, ok := os.LookupEnv(env); ok {
			if d, err := time.ParseDuration(v); err == nil {
				def = d
			}
		}
	}
	return f.Duration(name, def, help)
}

// given reports whether the flag was set on the command line or through
// its environment variable, as opposed to left at its default. Call it
// after parse.
func (f *flags) given(name, env string) bool {
	set := false
	f.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	if env != "" {
		_, inEnv := os.LookupEnv(env)
		set = set || inEnv
	}
	return set
}

// parse parses args, allowing flags after positional arguments
// ("publish order.created --data ..."), and returns the positional ones.
func (f *flags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, &usageError{err}
		}
		args = f.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newLogger logs text to stderr at WXBRIDGE_LOG_LEVEL (default info);
// WXBRIDGE_LOG_FORMAT=json switches to JSON lines.
func newLogger(w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(envOr("WXBRIDGE_LOG_LEVEL", "info"))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(os.Getenv("WXBRIDGE_LOG_FORMAT"), "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
