package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

func newTierCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tier", Short: "Inspect tiering to the bucket and upload now"}
	cmd.AddCommand(newTierStatusCmd(), newTierUploadCmd())
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
		Args: maxArgs("TOPIC"),
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

func newTierUploadCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "upload TOPIC",
		Short: "Upload a topic's records to the bucket now, active segment included",
		Long: `Roll the active segment of each partition of TOPIC (or of --partition N)
and upload every segment not yet in the bucket now, instead of waiting for
segment.bytes or segment.ms to seal it. Waits until the bucket's manifest
names every record produced before the command ran, or --timeout passes
(then it exits 1 naming the partitions left; the uploads go on in the
background). Afterwards a node that loses its data directory restores all
of those records from the bucket (serve --takeover).`,
		Args: exactArgs("TOPIC"),
	}
	cf := addClientFlags(cmd)
	partition := cmd.Flags().Int32("partition", -1, "upload only this partition (default: all)")
	timeout := cmd.Flags().Duration("timeout", 30*time.Second, "how long to wait for the bucket")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if *timeout <= 0 {
			return usageErrorf("--timeout %v: want a positive duration (e.g. 30s, 2m)", *timeout)
		}
		client, done, err := cf.dial()
		if err != nil {
			return err
		}
		defer done()
		req := &tierlogv1.TierUploadRequest{Topic: args[0], TimeoutMs: timeout.Milliseconds()}
		if *partition >= 0 {
			req.Partition = partition
		}
		// The server answers by its own timeout; this one covers a server
		// that never does.
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout+30*time.Second)
		defer cancel()
		resp, err := client.TierUpload(ctx, req)
		if err != nil {
			return cf.rpcError("tier upload "+args[0], err)
		}
		out := cmd.OutOrStdout()
		var left []string
		for _, p := range resp.GetPartitions() {
			name := fmt.Sprintf("%s/%d", args[0], p.GetPartition())
			switch {
			case !p.GetDone():
				left = append(left, fmt.Sprintf("%s: %s", name, p.GetError()))
				fmt.Fprintf(out, "%s: NOT DONE: the bucket holds offsets below %d of the %d wanted\n", name, p.GetRemoteEndOffset(), p.GetTargetOffset())
			case p.GetRemoteEndOffset() > p.GetRemoteEndOffsetBefore():
				fmt.Fprintf(out, "%s: uploaded offsets %d-%d; the bucket holds every offset below %d\n", name,
					p.GetRemoteEndOffsetBefore(), p.GetRemoteEndOffset()-1, p.GetRemoteEndOffset())
			default:
				fmt.Fprintf(out, "%s: nothing to upload; the bucket holds every offset below %d\n", name, p.GetRemoteEndOffset())
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("tier upload %s: not all uploaded within %v (is the bucket down? see tier status and the server log):\n  %s",
				args[0], *timeout, strings.Join(left, "\n  "))
		}
		return nil
	})
	return cmd
}
