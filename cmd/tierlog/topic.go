package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

func newTopicCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Create, list, describe, alter and delete topics",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newTopicCreateCmd(), newTopicListCmd(), newTopicDescribeCmd(), newTopicAlterConfigCmd(), newTopicLegalHoldCmd(), newTopicDeleteCmd())
	return cmd
}

func newTopicCreateCmd() *cobra.Command {
	var (
		partitions int32
		configs    []string
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a topic",
		Long: `Create a topic with --partitions partitions (default 1) and, in a cluster,
--replication-factor replicas of each (default: the server's
default_replication_factor, the smaller of 3 and the number of nodes).

--config key=value sets a Kafka-named topic config (repeatable), e.g.
  --config retention.ms=86400000 --config flush.policy=interval
Keys not set take the server's defaults.`,
		Args: exactArgs("NAME"),
	}
	cf := addClientFlags(cmd)
	cmd.Flags().Int32Var(&partitions, "partitions", 1, "number of partitions, at least 1")
	cmd.Flags().StringArrayVar(&configs, "config", nil, "topic config as key=value; repeatable")
	rf := cmd.Flags().Int32("replication-factor", 0, "replicas of each partition in a cluster (0: the server's default)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if *rf < 0 {
			return usageErrorf("--replication-factor %d: want 1 or more (0: the server's default)", *rf)
		}
		if partitions < 1 {
			return usageErrorf("--partitions %d: want at least 1", partitions)
		}
		kv, err := parseKeyValues("--config", configs)
		if err != nil {
			return err
		}
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		resp, err := client.CreateTopic(cmd.Context(), &tierlogv1.CreateTopicRequest{Name: args[0], Partitions: partitions, Config: kv, ReplicationFactor: *rf})
		if err != nil {
			return cf.rpcError("create topic "+args[0], err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "created topic %s with %d partitions\n", resp.GetTopic().GetName(), len(resp.GetTopic().GetPartitions()))
		return nil
	})
	return cmd
}

func newTopicListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List topics with their partition counts",
		Args:  cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		resp, err := client.ListTopics(cmd.Context(), &tierlogv1.ListTopicsRequest{})
		if err != nil {
			return cf.rpcError("list topics", err)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITIONS")
		for _, t := range resp.GetTopics() {
			fmt.Fprintf(tw, "%s\t%d\n", t.GetName(), len(t.GetPartitions()))
		}
		return tw.Flush()
	})
	return cmd
}

func newTopicDescribeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a topic's partitions (offsets, segments, bytes) and effective config",
		Args:  exactArgs("NAME"),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		resp, err := client.DescribeTopic(cmd.Context(), &tierlogv1.DescribeTopicRequest{Name: args[0]})
		if err != nil {
			return cf.rpcError("describe topic "+args[0], err)
		}
		return printTopic(cmd, resp.GetTopic())
	})
	return cmd
}

func printTopic(cmd *cobra.Command, t *tierlogv1.TopicInfo) error {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Topic: %s\nPartitions: %d\nConfig:\n", t.GetName(), len(t.GetPartitions()))
	for _, k := range slices.Sorted(maps.Keys(t.GetConfig())) {
		fmt.Fprintf(out, "  %s=%s\n", k, t.GetConfig()[k])
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tSTART\tEND\tSEGMENTS\tBYTES")
	for _, p := range t.GetPartitions() {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\n", p.GetPartition(), p.GetStartOffset(), p.GetEndOffset(), p.GetSegments(), p.GetSizeBytes())
	}
	return tw.Flush()
}

func newTopicAlterConfigCmd() *cobra.Command {
	var (
		configs []string
		deletes []string
	)
	cmd := &cobra.Command{
		Use:   "alter-config NAME",
		Short: "Change a topic's settings while it runs",
		Long: `Change the settings of topic NAME on the running server, as kafka-configs
--alter does:

  --config key=value     set a Kafka-named topic config (repeatable)
  --delete-config key    return a key to the server's default (repeatable)

Values are checked as 'topic create' checks them; a bad one changes nothing.
The new settings are stored (and recorded in the bucket) before they apply,
at once, to every partition. Prints each changed key's effective value.`,
		Args: exactArgs("NAME"),
	}
	cf := addClientFlags(cmd)
	cmd.Flags().StringArrayVar(&configs, "config", nil, "topic config to set, as key=value; repeatable")
	cmd.Flags().StringArrayVar(&deletes, "delete-config", nil, "topic config key to return to the server default; repeatable")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		kv, err := parseKeyValues("--config", configs)
		if err != nil {
			return err
		}
		if len(kv) == 0 && len(deletes) == 0 {
			return usageErrorf("nothing to change: give --config key=value or --delete-config key")
		}
		for _, k := range deletes {
			if _, both := kv[k]; both {
				return usageErrorf("--config %s and --delete-config %s: set it or return it to the default, not both", k, k)
			}
		}
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		resp, err := client.AlterTopicConfig(cmd.Context(), &tierlogv1.AlterTopicConfigRequest{Name: args[0], Set: kv, Delete: deletes})
		if err != nil {
			return cf.rpcError("alter config of topic "+args[0], err)
		}
		out := cmd.OutOrStdout()
		eff := resp.GetTopic().GetConfig()
		fmt.Fprintf(out, "altered config of topic %s:\n", args[0])
		for _, k := range slices.Sorted(maps.Keys(kv)) {
			fmt.Fprintf(out, "  %s=%s\n", k, eff[k])
		}
		for _, k := range slices.Sorted(slices.Values(deletes)) {
			fmt.Fprintf(out, "  %s=%s (server default)\n", k, eff[k])
		}
		return nil
	})
	return cmd
}

func newTopicDeleteCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a topic and all its data, in the bucket too",
		Long: `Delete topic NAME and all its data: its local segments and, with tiering,
its whole history in the bucket (segments, manifests and the topic's
record). Nothing of it can be restored afterwards.

If the bucket holds history of the topic, the command asks for
confirmation on a terminal; --yes skips the question. Without a terminal
(a script, a pipe) it refuses unless --yes is given.`,
		Args: exactArgs("NAME"),
	}
	cf := addClientFlags(cmd)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "delete without asking, even if the bucket holds history of the topic")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		name := args[0]
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		if !yes {
			if err := confirmDelete(cmd, cf, client, name); err != nil {
				return err
			}
		}
		if _, err := client.DeleteTopic(cmd.Context(), &tierlogv1.DeleteTopicRequest{Name: name}); err != nil {
			return cf.rpcError("delete topic "+name, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "deleted topic %s\n", name)
		return nil
	})
	return cmd
}

// confirmDelete asks before a delete that takes history in the bucket with
// it: on a terminal it asks, elsewhere it refuses and names --yes.
func confirmDelete(cmd *cobra.Command, cf *clientFlags, client tierlogv1.TierLogClient, name string) error {
	st, err := client.TierStatus(cmd.Context(), &tierlogv1.TierStatusRequest{Topic: name})
	if err != nil {
		return cf.rpcError("delete topic "+name, err)
	}
	var segs int32
	var bytes int64
	for _, p := range st.GetPartitions() {
		segs += p.GetRemoteSegments()
		bytes += p.GetRemoteBytes()
	}
	if segs == 0 {
		return nil
	}
	what := fmt.Sprintf("topic %s has %d segments (%d bytes) of history in %s; deleting the topic deletes them too", name, segs, bytes, st.GetBucket())
	in := cmd.InOrStdin()
	f, isFile := in.(*os.File)
	if !isFile || !term.IsTerminal(int(f.Fd())) {
		return usageErrorf("delete topic %s: %s; not a terminal to ask on: pass --yes to delete it", name, what)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s.\nDelete topic %s? [y/N] ", what, name)
	answer, _ := bufio.NewReader(in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return fmt.Errorf("delete topic %s: not confirmed; nothing was deleted", name)
}

// parseKeyValues parses repeated key=value flag values.
func parseKeyValues(flag string, kvs []string) (map[string]string, error) {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("%s %q: want key=value", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}
