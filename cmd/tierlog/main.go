package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed (server error, I/O error)
	exitUsage = 2 // the command line or configuration is wrong
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ce *exitCodeError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "tierlog: %v\n", ce.err)
		return ce.code
	}
	var re *runError
	if errors.As(err, &re) {
		fmt.Fprintf(stderr, "tierlog: %v\n", re.err)
		return exitError
	}
	// Anything else comes from parsing the command line: cobra's own errors
	// (unknown command or flag, wrong number of arguments) or a usageError.
	fmt.Fprintf(stderr, "tierlog: %v\nRun '%s --help' for usage.\n", err, cmd.CommandPath())
	return exitUsage
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tierlog",
		Short: "tierlog is a Kafka-style log service with tiered storage",
		Long: `tierlog is a Kafka-style log service with tiered storage.

Run a node with 'tierlog serve'. Most other commands are clients of a running
node's gRPC API (--server, env TIERLOG_SERVER); 'bucket consume', 'verify' and
'verify-proof' need no server, nor do 'prove', 'prove-consistency' and
'checkpoint' with --bucket.

Exit codes: 0 success, 1 the command failed (the error is printed), 2 usage
or configuration error. A command's help says where its codes mean more
(verify: 1 a disagreement found, 2 also a bucket it could not read).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Completion scripts are not worth a subcommand in a tool this small.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErrorf("%v", err) })
	addServerFlag(root)
	root.AddCommand(newServeCmd(), newTopicCmd(), newProduceCmd(), newConsumeCmd(), newTierCmd(), newBucketCmd(), newProveCmd(), newProveConsistencyCmd(), newVerifyProofCmd(), newCheckpointCmd(), newVerifyCmd(), newClusterCmd(), newBenchCmd(), newVersionCmd())
	hideRepeatedDefaults(root)
	return root
}

// hideRepeatedDefaults drops pflag's "(default X)" from flags whose usage
// already says what the default means in words ("(default: chosen by the
// server)" for a -1 that is only a sentinel), so help does not show two.
func hideRepeatedDefaults(cmd *cobra.Command) {
	hide := func(f *pflag.Flag) {
		if strings.Contains(f.Usage, "(default") {
			f.DefValue = zeroDefault(f.Value.Type())
		}
	}
	cmd.LocalFlags().VisitAll(hide)
	cmd.PersistentFlags().VisitAll(hide)
	for _, c := range cmd.Commands() {
		hideRepeatedDefaults(c)
	}
}

// zeroDefault is the DefValue pflag treats as "no default to show" for a
// flag of the given type.
func zeroDefault(typ string) string {
	switch {
	case strings.HasSuffix(typ, "Slice") || strings.HasSuffix(typ, "Array"):
		return "[]"
	case strings.HasPrefix(typ, "int") || strings.HasPrefix(typ, "uint") || strings.HasPrefix(typ, "float") || typ == "count":
		return "0"
	case typ == "bool":
		return "false"
	case typ == "duration":
		return "0s"
	}
	return ""
}

// exactArgs is cobra.ExactArgs with an error that names the arguments
// (TOPIC, NAME) instead of counting them, and shows the usage line.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usageErrorf("missing %s: usage: %s", strings.Join(names[len(args):], " "), cmd.UseLine())
		case len(args) > len(names):
			return usageErrorf("unexpected argument %q: %s takes only %s: usage: %s", args[len(names)], cmd.CommandPath(), strings.Join(names, " "), cmd.UseLine())
		}
		for i, a := range args {
			if a == "" {
				return usageErrorf("%s is empty: usage: %s", names[i], cmd.UseLine())
			}
		}
		return nil
	}
}

// maxArgs is cobra.MaximumNArgs with an error that names the optional
// arguments.
func maxArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > len(names) {
			return usageErrorf("unexpected argument %q: %s takes at most %s: usage: %s", args[len(names)], cmd.CommandPath(), strings.Join(names, " "), cmd.UseLine())
		}
		return nil
	}
}

// usageError is a mistake in the command line or configuration: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// runError wraps an error returned by a command's body: exit code 1. Errors
// that reach run without it were raised by cobra while parsing.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// exitCodeError is a command's failure with its own exit code (verify:
// 1 for a finding, 2 for a bucket it cannot read).
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// runE adapts a command body so that its errors are told apart from parsing
// errors: a usageError stays a usage error, anything else becomes a runError.
func runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		if err == nil {
			return nil
		}
		var ue *usageError
		if errors.As(err, &ue) {
			return err
		}
		return &runError{err: err}
	}
}

// groupRunE makes a command that only groups subcommands reject unknown
// subcommands as a usage error instead of printing help and exiting 0.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return cmd.Help()
}
