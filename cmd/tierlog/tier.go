package main

import (
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

func newTierCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tier", Short: "Inspect tiering to the bucket"}
	cmd.AddCommand(newTierStatusCmd())
	return cmd
}

func newTierStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [TOPIC]",
		Short: "Show per partition what is local, what is in the bucket and how far uploads lag",
		Long: `Show, per partition: local segments and bytes, remote segments and bytes
(stored, and the segment bytes they hold), the first offset held locally and
remotely, and the upload lag: sealed local segments not yet committed to the
bucket, their bytes and the age of the oldest. Also the remote chunk cache's
hit rate.`,
		Args: cobra.MaximumNArgs(1),
	}
	cf := addClientFlags(cmd)
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		req := &tierlogv1.TierStatusRequest{}
		if len(args) == 1 {
			req.Topic = args[0]
		}
		resp, err := client.TierStatus(cmd.Context(), req)
		if err != nil {
			return cf.rpcError("tier status", err)
		}
		out := cmd.OutOrStdout()
		bucket := resp.GetBucket()
		if bucket == "" {
			bucket = "none (tiering off)"
		}
		fmt.Fprintf(out, "Bucket: %s\nCache hit rate: %.1f%%\n", bucket, 100*resp.GetCacheHitRate())
		ceiling := "none"
		if resp.GetLocalMaxBytes() > 0 {
			ceiling = fmt.Sprintf("%d bytes (%.1f%% used)", resp.GetLocalMaxBytes(), 100*float64(resp.GetLocalBytes())/float64(resp.GetLocalMaxBytes()))
		}
		fmt.Fprintf(out, "Local disk: %d bytes, %d not yet uploaded; ceiling %s\n\n", resp.GetLocalBytes(), resp.GetLocalPendingUploadBytes(), ceiling)
		parts := resp.GetPartitions()
		slices.SortFunc(parts, func(a, b *tierlogv1.PartitionTierStatus) int {
			if a.GetTopic() != b.GetTopic() {
				if a.GetTopic() < b.GetTopic() {
					return -1
				}
				return 1
			}
			return int(a.GetPartition() - b.GetPartition())
		})
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tLOCAL SEGS\tLOCAL BYTES\tLOCAL START\tREMOTE SEGS\tREMOTE BYTES\tRAW BYTES\tREMOTE START\tEND\tLAG SEGS\tLAG BYTES\tLAG AGE")
		for _, p := range parts {
			remoteStart := "-"
			if p.GetRemoteStartOffset() >= 0 {
				remoteStart = fmt.Sprint(p.GetRemoteStartOffset())
			}
			if !p.GetRemote() {
				remoteStart = "off"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%v\n", p.GetTopic(), p.GetPartition(),
				p.GetLocalSegments(), p.GetLocalBytes(), p.GetLocalStartOffset(), p.GetRemoteSegments(), p.GetRemoteBytes(),
				p.GetRemoteRawBytes(), remoteStart, p.GetLogEndOffset(), p.GetUploadLagSegments(), p.GetUploadLagBytes(),
				(time.Duration(p.GetUploadLagAgeMs()) * time.Millisecond).Round(time.Second))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, p := range parts {
			if r := p.GetProduceRefused(); r != "" {
				fmt.Fprintf(out, "\nPRODUCE REFUSED %s/%d: %s\n", p.GetTopic(), p.GetPartition(), r)
			}
		}
		return nil
	})
	return cmd
}
