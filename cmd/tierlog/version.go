package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the module version, VCS revision and Go version of this binary",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			info, ok := debug.ReadBuildInfo()
			if !ok {
				return fmt.Errorf("version: the binary holds no build information")
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), versionLine(info))
			return err
		}),
	}
}

// versionLine describes the build from what the Go toolchain embedded:
// the module version ("(devel)" for a build from a checkout), the VCS
// revision and time when built in a git work tree (with "+dirty" for
// uncommitted changes), and the Go version.
func versionLine(info *debug.BuildInfo) string {
	var rev, when, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	line := "tierlog " + info.Main.Version
	if rev != "" {
		line += " revision " + rev + dirty
		if when != "" {
			line += " (" + when + ")"
		}
	}
	return line + " " + info.GoVersion
}
