package broker

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/testutil"
	"github.com/tierlog/tierlog/tiering"
)

// uploadNowAsync appends a record to name/0, starts UploadNow on it with
// no deadline, and returns a channel that yields its outcome.
func uploadNowAsync(t *testing.T, b *Broker, name string) (<-chan []PartitionUpload, context.CancelFunc) {
	t.Helper()
	if _, err := b.Append(name, 0, testutil.Batch(t, 0, 1, 100, time.Now().UnixMilli())); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []PartitionUpload, 1)
	go func() {
		ups, err := b.UploadNow(ctx, name, 0)
		if err != nil {
			ups = []PartitionUpload{{Topic: name, Err: err}}
		}
		out <- ups
	}()
	return out, cancel
}

// An upload-now whose partition can never reach the bucket any more (its
// topic deleted, remote storage turned off, the node closed) ends at once
// with an error saying so, rather than holding the caller (a tier upload
// RPC, a shutdown) until its deadline.
func TestUploadNowEndsWhenItCannotFinish(t *testing.T) {
	cases := map[string]func(t *testing.T, b *Broker){
		"topic deleted": func(t *testing.T, b *Broker) {
			if err := b.DeleteTopic("u"); err != nil {
				t.Fatal(err)
			}
		},
		"remote storage turned off": func(t *testing.T, b *Broker) {
			if _, err := b.AlterTopicConfig("u", map[string]string{"remote.storage.enable": "false"}, nil); err != nil {
				t.Fatal(err)
			}
		},
		"node closed": func(t *testing.T, b *Broker) { b.Close() },
	}
	for name, cut := range cases {
		t.Run(name, func(t *testing.T) {
			b, fb := tieredNode(t, t.TempDir(), t.TempDir())
			defer b.Close()
			if _, err := b.CreateTopic("u", 1, nil); err != nil {
				t.Fatal(err)
			}
			// Segment uploads fail: the upload-now cannot finish yet.
			fb.setFailPrefix(tiering.PartitionPrefix("u", 0))
			done, cancel := uploadNowAsync(t, b, "u")
			defer cancel()
			// The upload-now has rolled and is waiting: a pass tried it.
			testutil.Eventually(t, 10*time.Second, func() bool { return fb.failedUploads() > 0 }, "an upload tried")
			cut(t, b)
			var ups []PartitionUpload
			testutil.Eventually(t, 10*time.Second, func() bool {
				select {
				case ups = <-done:
					return true
				default:
					return false
				}
			}, "UploadNow to return after the %s", name)
			if len(ups) != 1 || ups[0].Err == nil {
				t.Fatalf("UploadNow after the %s: %+v, want an error", name, ups)
			}
			t.Logf("%s: %v", name, ups[0].Err)
			if errors.Is(ups[0].Err, context.Canceled) {
				t.Fatalf("UploadNow after the %s ended only by its context: %v", name, ups[0].Err)
			}
		})
	}
}

// UploadNow asks for an upload "past any failure backoff": once the bucket
// is back, an upload-now finishes without waiting out the backoff of the
// earlier failures, even though the roll's seal lands after the pass that
// the upload-now's own wake started.
func TestUploadNowSkipsBackoffAfterBucketRecovers(t *testing.T) {
	inner, err := filebucket.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fb := &faultBucket{Bucket: inner}
	// A long interval: a failed upload backs off for a minute.
	b, err := Open(context.Background(), Options{Dir: t.TempDir(), Bucket: fb, Takeover: true,
		Tiering: tiering.DaemonOptions{Interval: time.Minute,
			Backoff: tiering.Backoff{Attempts: 1, Base: time.Millisecond, Max: time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic("u", 1, nil); err != nil {
		t.Fatal(err)
	}
	fb.setFailPrefix(tiering.PartitionPrefix("u", 0))
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		if _, err := b.Append("u", 0, testutil.Batch(t, 0, 1, 100, time.Now().UnixMilli())); err != nil {
			t.Fatal(err)
		}
		ups, err := b.UploadNow(ctx, "u", 0)
		cancel()
		if err != nil || ups[0].Err == nil {
			t.Fatalf("upload with the bucket failing: %+v %v, want a failure", ups, err)
		}
	}
	fb.setFailPrefix("")
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := b.Append("u", 0, testutil.Batch(t, 0, 1, 100, time.Now().UnixMilli())); err != nil {
			t.Fatal(err)
		}
		ups, err := b.UploadNow(ctx, "u", 0)
		cancel()
		if err != nil || ups[0].Err != nil {
			t.Fatalf("round %d: upload with the bucket back: %+v %v", i, ups, err)
		}
	}
}

// Close waits for an alter in flight (as it waits for creates and
// deletes): once Close returns - the data directory unlocked, perhaps
// another process on it - no alter writes topic.json any more.
func TestCloseWaitsForAlter(t *testing.T) {
	b, fb := tieredNode(t, t.TempDir(), t.TempDir())
	if _, err := b.CreateTopic("a", 1, nil); err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	fb.mu.Lock()
	fb.holdUpload, fb.uploadHeld, fb.releaseUpload = "topics/a.json", started, release
	fb.mu.Unlock()
	altered := make(chan error, 1)
	go func() {
		_, err := b.AlterTopicConfig("a", map[string]string{"retention.ms": "60000"}, nil)
		altered <- err
	}()
	<-started
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	// The held upload outlives Close's cancel (a bucket request that does
	// not notice it at once): Close must not return before the alter does.
	select {
	case <-closed:
		select {
		case <-altered:
		default:
			t.Fatalf("Close returned while an alter was still writing the topic's metadata")
		}
	case <-time.After(time.Second): // Close is waiting: let the alter end
	}
	release <- struct{}{}
	<-closed
	<-altered // done or failed: either way before Close returned
}

// A node that crashes between an alter's two writes (topic.json, then the
// bucket's topic record) must not leave the node and the bucket with
// different settings for ever: a restore from the bucket would bring the
// topic back with settings the node no longer has. The crash is the data
// directory as it is while the bucket write is held, opened by a new node.
func TestAlterCrashBetweenWritesReconciles(t *testing.T) {
	dir, bucketDir := t.TempDir(), t.TempDir()
	b, fb := tieredNode(t, dir, bucketDir)
	if _, err := b.CreateTopic("a", 1, nil); err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	fb.mu.Lock()
	fb.holdUpload, fb.uploadHeld, fb.releaseUpload = "topics/a.json", started, release
	fb.mu.Unlock()
	go b.AlterTopicConfig("a", map[string]string{"retention.ms": "60000"}, nil)
	<-started
	crashed := t.TempDir()
	if err := os.CopyFS(crashed, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	fb.mu.Lock()
	fb.holdUpload = "" // the old node's write is lost with it
	fb.mu.Unlock()
	b2, _ := tieredNode(t, crashed, bucketDir)
	ti, err := b2.Topic("a")
	if err != nil {
		t.Fatal(err)
	}
	node := ti.Overrides["retention.ms"]
	bucketRecord := func() string {
		data, err := os.ReadFile(filepath.Join(bucketDir, "topics", "a.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m tiering.TopicMeta
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		return m.Config["retention.ms"]
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return bucketRecord() == node },
		"the bucket's record of a (retention.ms=%q) to agree with the node's topic.json (%q)", bucketRecord(), node)
	b2.Close()
	close(release) // the crashed node goes away
	b.Close()
}
