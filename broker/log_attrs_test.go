package broker

import (
	"context"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/tiering"
)

// TestLogLinesNameTopicOnce checks that partition log lines carry topic=
// and partition= once: a node tiers a topic, loses its disk and restores
// it, logging partition lines from hot and tiering on the way.
func TestLogLinesNameTopicOnce(t *testing.T) {
	bucketDir := filepath.Join(t.TempDir(), "bucket")
	var out testutil.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	open := func(dir string) *Broker {
		bk, err := filebucket.New(bucketDir)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Open(context.Background(), Options{Dir: dir, Bucket: bk, Takeover: true, Logger: logger,
			Tiering: tiering.DaemonOptions{Interval: 10 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := open(t.TempDir())
	if _, err := b.CreateTopic("logs", 1, nil); err != nil {
		t.Fatal(err)
	}
	tierSome(t, b, "logs", 3)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = open(t.TempDir()) // a new, empty disk: restore from the bucket
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	text := out.String()
	if !strings.Contains(text, "restoring partition from the bucket") {
		t.Fatalf("no restore line logged:\n%s", text)
	}
	topicAttr, partAttr := regexp.MustCompile(` topic=`), regexp.MustCompile(` partition=`)
	for _, line := range strings.Split(text, "\n") {
		if len(topicAttr.FindAllString(line, -1)) > 1 || len(partAttr.FindAllString(line, -1)) > 1 {
			t.Errorf("log line repeats topic or partition: %s", line)
		}
	}
}
