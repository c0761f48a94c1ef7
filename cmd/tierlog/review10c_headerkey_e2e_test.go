package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A Kafka producer's record header whose key is not UTF-8 (Kafka header
// keys are bytes on the wire): since d458dd4 the server carries such a key
// in Header.key_bytes, but the CLI's JSON printer reads only Header.key.
// Both `tierlog consume --format json` (over gRPC) and `tierlog bucket
// consume --format json` (RecordProto of a record read from the bucket,
// which before d458dd4 printed key_base64) print the key as "" - a wrong
// byte served to a consumer, silently.
func TestReview10c_NonUTF8HeaderKeyPrinted(t *testing.T) {
	bucketDir := filepath.Join(t.TempDir(), "bucket")
	if err := os.MkdirAll(bucketDir, 0o755); err != nil {
		t.Fatal(err)
	}
	url := "file://" + bucketDir
	n := startNode(t, filepath.Join(t.TempDir(), "data"), nil, "--bucket", url)
	ok(t, n, "", append([]string{"topic", "create", "hdr"}, tierTopicConfig...)...)

	cl, err := kgo.NewClient(kgo.SeedBrokers(n.kafkaAddr), kgo.DefaultProduceTopic("hdr"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r := &kgo.Record{Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "\xfe\xff", Value: []byte("x")}}}
	if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// A second record after a pause rolls the first's segment (segment.ms)
	// so it tiers; only the first is checked.
	ok(t, n, "a\n", "produce", "hdr", "--quiet")
	waitTiered(t, n, "hdr", []int64{2})

	const want = `{"key_base64":"/v8=","value":"x"}`
	if out := ok(t, n, "", "consume", "hdr", "--format", "json", "--max", "1"); !strings.Contains(out, want) {
		t.Errorf("tierlog consume printed %s; want the header %s", strings.TrimSpace(out), want)
	}
	if out := bucketOK(t, nil, "bucket", "consume", "--bucket", url, "hdr", "--format", "json", "--max", "1"); !strings.Contains(out, want) {
		t.Errorf("tierlog bucket consume printed %s; want the header %s", strings.TrimSpace(out), want)
	}
}
