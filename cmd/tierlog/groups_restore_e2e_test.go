package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRestoreKeepsCommittedOffsets: a node restored from the bucket into an
// empty data directory (serve --takeover) gets its consumer groups'
// committed offsets back with the tiered history: the graceful shutdown
// copied them to the bucket. (Before, they were only in
// DATA/groups/offsets.log, and a group resumed from its reset policy: all
// of history again with earliest, or skipping to the end with latest.)
func TestRestoreKeepsCommittedOffsets(t *testing.T) {
	bucket := bucketOutside(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	n := startNode(t, dataDir, nil, "--bucket", bucket)
	ok(t, n, "", "topic", "create", "ledger", "--partitions", "1")
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.kafkaAddr), kgo.DefaultProduceTopic("ledger"))
	if err != nil {
		t.Fatal(err)
	}
	var rs []*kgo.Record
	for i := range 100 {
		rs = append(rs, &kgo.Record{Value: fmt.Appendf(nil, "r%d", i)})
	}
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: "ledger", Partition: 0, At: 60, LeaderEpoch: -1})
	if err := kadm.NewClient(cl).CommitAllOffsets(context.Background(), "billing", offs); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	ok(t, n, "", "tier", "upload", "ledger")
	if code := n.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	if err := os.Rename(dataDir, dataDir+".lost"); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, dataDir, nil, "--bucket", bucket, "--takeover")
	cl, err = kgo.NewClient(kgo.SeedBrokers(n.kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(context.Background(), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("ledger", 0); o.Offset != 100 {
		t.Fatalf("restored end offset %+v, want 100", o)
	}
	got, err := adm.FetchOffsets(context.Background(), "billing")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := got.Lookup("ledger", 0); !ok || o.At != 60 {
		t.Fatalf("group billing's committed offset after the restore from the bucket: %+v (found %v), want 60", o, ok)
	}
	// A group consumer of billing resumes there: r60 is its first record.
	gc, err := kgo.NewClient(kgo.SeedBrokers(n.kafkaAddr), kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("ledger"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fs := gc.PollRecords(ctx, 1)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	if rs := fs.Records(); len(rs) == 0 || rs[0].Offset != 60 || string(rs[0].Value) != "r60" {
		t.Fatalf("group billing's first record after the restore: %+v, want offset 60 (r60)", rs)
	}
}
