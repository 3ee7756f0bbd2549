// Command wxbridge turns domain events on NATS into WeChat Mini Program
// subscribe messages. Run `wxbridge help` for the subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `wxbridge turns domain events on NATS into WeChat subscribe messages.

Usage:
  wxbridge serve    [--rules rules.yaml] [--nats URL] [--data DIR] [--listen ADDR] [--emulator]
  wxbridge emulate  [--listen ADDR] [--callback URL] [--rules rules.yaml]
  wxbridge publish  TYPE [--data JSON | --file FILE] [--id ID] [--nats URL]
  wxbridge request  SUBJECT [--data JSON] [--nats URL]
  wxbridge watch    [SUBJECT] [--nats URL]
  wxbridge rules    check [--remote] [rules.yaml] | render --event FILE [--type TYPE] [rules.yaml]
  wxbridge state    user ID | event ID | role ROLE [SCOPE]
  wxbridge import   bindings FILE.csv | roles FILE.csv
  wxbridge bench    [--scenario NAME|all] [--json FILE] [--profile DIR] [flags]

Every flag has an environment variable (WXBRIDGE_RULES, WXBRIDGE_NATS_URL,
WXBRIDGE_DATA, WXBRIDGE_LISTEN, WXBRIDGE_WECHAT_API, ...); run a subcommand
with -h to see them.

Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage or bad config.
`

// usageError is bad usage or bad configuration: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"serve":   cmdServe,
		"emulate": cmdEmulate,
		"publish": cmdPublish,
		"request": cmdRequest,
		"watch":   cmdWatch,
		"rules":   cmdRules,
		"state":   cmdState,
		"import":  cmdImport,
		"bench":   cmdBench,

		"nats-server": cmdNATSServer, // internal: the NATS server that bench starts and restarts
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "wxbridge: unknown command %q\n\n%s", name, usage)
		return 2
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "wxbridge %s: %v\n", name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "wxbridge %s: %v\n", name, err)
		return 1
	}
}
