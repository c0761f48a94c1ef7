package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

func newTopicCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Create, list, describe and delete topics",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	cmd.AddCommand(newTopicCreateCmd(), newTopicListCmd(), newTopicDescribeCmd(), newTopicDeleteCmd())
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
		Long: `Create a topic with --partitions partitions (default 1).

--config key=value sets a Kafka-named topic config (repeatable), e.g.
  --config retention.ms=86400000 --config flush.policy=interval
Keys not set take the server's defaults.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.Flags().Int32Var(&partitions, "partitions", 1, "number of partitions, at least 1")
	cmd.Flags().StringArrayVar(&configs, "config", nil, "topic config as key=value; repeatable")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
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
		resp, err := client.CreateTopic(cmd.Context(), &tierlogv1.CreateTopicRequest{Name: args[0], Partitions: partitions, Config: kv})
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
		Args:  cobra.ExactArgs(1),
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

func newTopicDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a topic and all its data",
		Args:  cobra.ExactArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		if _, err := client.DeleteTopic(cmd.Context(), &tierlogv1.DeleteTopicRequest{Name: args[0]}); err != nil {
			return cf.rpcError("delete topic "+args[0], err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "deleted topic %s\n", args[0])
		return nil
	})
	return cmd
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
