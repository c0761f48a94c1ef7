package broker

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// Millisecond settings up to Kafka's Long.MAX_VALUE mean what they say: a
// huge retention keeps fresh records, a huge segment.ms never rolls, and
// none of them wraps into a small or invalid duration.
func TestHugeMillisecondSettingsMeanForever(t *testing.T) {
	values := []int64{
		1 << 58, (1 << 58) + 1, // wrapped into a tiny positive duration
		18446744073710, // "about 584 years": wrapped to a few milliseconds
		1 << 62,        // the old documented maximum: wrapped to 0
		math.MaxInt64,  // Kafka's "forever"
	}
	b := open(t, t.TempDir())
	defer b.Close()
	now := time.Now()
	for _, key := range []string{"retention.ms", "segment.ms", "flush.ms"} {
		for i, v := range values {
			name := key + "-" + strconv.Itoa(i)
			cfg := map[string]string{key: strconv.FormatInt(v, 10)}
			if key == "flush.ms" {
				cfg["flush.policy"] = "interval"
			}
			if _, err := b.CreateTopic(name, 1, cfg); err != nil {
				t.Errorf("%s=%d refused: %v", key, v, err)
				continue
			}
			const batches = 5
			for k := range batches {
				if _, err := b.Append(name, 0, testutil.Batch(t, int64(k), 1, 20, now.UnixMilli())); err != nil {
					t.Fatal(err)
				}
			}
			p, _ := b.Partition(name, 0)
			if n := len(p.Log().Segments()); n != 1 {
				t.Errorf("%s=%d: %d segments after %d appends, want 1", key, v, n, batches)
			}
			if err := p.Log().Roll(); err != nil {
				t.Fatal(err)
			}
			p.Log().ApplyRetention(now.Add(time.Second))
			res, err := b.Fetch(context.Background(), name, 0, 0, 1<<20)
			if err != nil {
				t.Errorf("%s=%d: fetch after a retention pass: %v", key, v, err)
				continue
			}
			if recs, _ := batch.DecodeAll(res.Records); len(recs) != batches {
				t.Errorf("%s=%d: %d of %d fresh records left after a retention pass", key, v, len(recs), batches)
			}
		}
	}
}

// The conversions the tiered path uses (local retention for the hot tier,
// total retention for the daemon) saturate the same way.
func TestHugeRetentionConvertsWithoutWrapping(t *testing.T) {
	const century = 100 * 365 * 24 * time.Hour
	for _, v := range []int64{18446744073710, 1 << 62, math.MaxInt64} {
		s := strconv.FormatInt(v, 10)
		cfg, err := ParseTopicConfig(DefaultTopicConfig(), map[string]string{"retention.ms": s, "local.retention.ms": s})
		if err != nil {
			t.Fatalf("%d refused: %v", v, err)
		}
		if err := cfg.hotConfig(true).Validate(); err != nil {
			t.Fatalf("%d: %v", v, err)
		}
		if got := cfg.hotConfig(true).RetentionAge; got < century {
			t.Errorf("local.retention.ms=%d became %v", v, got)
		}
		if got := cfg.retention().Age; got < century {
			t.Errorf("retention.ms=%d became %v for the tiering daemon", v, got)
		}
	}
	if _, err := ParseTopicConfig(DefaultTopicConfig(), map[string]string{"retention.ms": "9223372036854775808"}); err == nil {
		t.Error("a retention.ms past Long.MAX_VALUE was accepted")
	}
}

// A partition ceiling the active segment alone could fill would refuse
// producers until segment.ms rolls it: refused at create.
func TestLocalDiskMaxBytesAtLeastTwoSegments(t *testing.T) {
	base := DefaultTopicConfig()
	for _, tc := range []struct {
		kv map[string]string
		ok bool
	}{
		{map[string]string{"segment.bytes": "1048576", "local.disk.max.bytes": "2097151"}, false},
		{map[string]string{"segment.bytes": "1048576", "local.disk.max.bytes": "0"}, false},
		{map[string]string{"segment.bytes": "1048576", "local.disk.max.bytes": "2097152"}, true},
		{map[string]string{"segment.bytes": "1048576", "local.disk.max.bytes": "-1"}, true},
	} {
		_, err := ParseTopicConfig(base, tc.kv)
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v, want ok=%v", tc.kv, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "twice segment.bytes") {
			t.Errorf("%v: error %q does not say why", tc.kv, err)
		}
	}
}

// TestConfigErrorNamesKeyOnce checks that a bad value's error names its key
// once (not "flush.policy: flush.policy \"sometimes\"") and the value.
func TestConfigErrorNamesKeyOnce(t *testing.T) {
	for _, k := range ConfigKeys() {
		_, err := ParseTopicConfig(DefaultTopicConfig(), map[string]string{k: "sometimes"})
		if err == nil {
			t.Errorf("%s=sometimes accepted", k)
			continue
		}
		if msg := err.Error(); strings.Count(msg, k) != 1 || !strings.Contains(msg, `"sometimes"`) {
			t.Errorf("%s=sometimes: %q, want the key named once and the value quoted", k, msg)
		}
	}
}
