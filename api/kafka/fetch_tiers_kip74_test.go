package kafka

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/cold/filebucket"
	"github.com/tierlog/tierlog/internal/batch"
)

// Randomised fetches over partitions that mix the bucket and the hot tier
// (each partition: a tiered prefix, then hot batches; sizes differ by
// batch), at random offsets (batch starts and mid-batch), with random
// limits and partition orders. Every answer must be the stored batches
// byte for byte from the one holding the fetch offset, within KIP-74's
// limits as applied to what the partitions before it returned; a read may
// stop early (a segment's end) but never go past a limit, except the first
// batch of the first partition with data.
func TestFetchMixedTiersKIP74(t *testing.T) {
	bk, err := filebucket.New(filepath.Join(t.TempDir(), "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	e := startFetchEnv(t, bk, nil)
	const parts = 5
	if _, err := e.b.CreateTopic("mix", parts, map[string]string{"local.retention.bytes": "0"}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	stored := make([][][]byte, parts) // partition -> batches in order
	for p := range int32(parts) {
		for round := range 2 {
			n := 3 + rng.IntN(4)
			for range n {
				b := e.b
				_, end, _ := b.Offsets("mix", p)
				e.appendBatches(t, "mix", p, 1, 1+rng.IntN(5), 20+rng.IntN(300), 1000)
				pp, _ := b.Partition("mix", p)
				res, err := pp.Read(t.Context(), end, 1)
				if err != nil {
					t.Fatal(err)
				}
				h, _ := batch.Peek(res.Records)
				stored[p] = append(stored[p], bytes.Clone(res.Records[:h.Size()]))
			}
			if round == 0 && p%2 == 0 {
				e.tier(t, "mix", p)
			}
		}
	}
	c := e.client(t)
	for iter := range 150 {
		order := rng.Perm(parts)[:1+rng.IntN(parts)]
		offsets := map[int32]int64{}
		var ord []int32
		for _, p := range order {
			bs := stored[p]
			i := rng.IntN(len(bs) + 1)
			var off int64
			if i == len(bs) {
				h, _ := batch.Peek(bs[i-1])
				off = h.NextOffset()
			} else {
				h, _ := batch.Peek(bs[i])
				off = h.BaseOffset + int64(rng.IntN(int(h.NumRecords)))
			}
			offsets[int32(p)] = off
			ord = append(ord, int32(p))
		}
		partMax := []int{0, 50, 300, 700, 2000, 1 << 20}[rng.IntN(6)]
		maxBytes := []int{0, 100, 500, 1200, 3000, 1 << 20}[rng.IntN(6)]
		req := fetchReq("mix", int32(maxBytes), int32(partMax), offsets, ord...)
		resp := request[*kmsg.FetchResponse](t, c, req)
		name := fmt.Sprintf("iter %d (order %v offsets %v partMax %d maxBytes %d)", iter, ord, offsets, partMax, maxBytes)
		remaining, first, total, nb := maxBytes, true, 0, 0
		for i, rp := range resp.Topics[0].Partitions {
			p := ord[i]
			if rp.Partition != p || rp.ErrorCode != 0 {
				t.Fatalf("%s: answer %d: partition %d error %d", name, i, rp.Partition, rp.ErrorCode)
			}
			// Expected: the stored batches from the one holding the offset.
			var want [][]byte
			for _, b := range stored[p] {
				h, _ := batch.Peek(b)
				if h.NextOffset() > offsets[p] {
					want = append(want, b)
				}
			}
			got := rp.RecordBatches
			lim, used, k := min(partMax, remaining), 0, 0
			for len(got) > 0 {
				if k >= len(want) || !bytes.HasPrefix(got, want[k]) {
					t.Fatalf("%s: partition %d: batch %d differs from the stored one", name, p, k)
				}
				sz := len(want[k])
				if used+sz > lim && !(first && k == 0) {
					t.Fatalf("%s: partition %d: batch %d (%d bytes) goes past the limit %d (used %d)", name, p, k, sz, lim, used)
				}
				used += sz
				got = got[sz:]
				k++
			}
			if first && len(want) > 0 && used == 0 {
				t.Errorf("%s: partition %d is the first with data but returned none", name, p)
			}
			if used > 0 {
				first = false
			}
			remaining = max(remaining-used, 0)
			total += used
			nb += k
		}
		if total > maxBytes && nb > 1 {
			t.Fatalf("%s: %d bytes in %d batches over MaxBytes", name, total, nb)
		}
	}
	// The fetches did read both tiers.
	for _, tier := range []string{"hot", "cold"} {
		if n := promtest.ToFloat64(e.srv.m.fetchBytes.WithLabelValues(tier)); n == 0 {
			t.Errorf("no bytes served from the %s tier: the test does not test it", tier)
		}
	}
}
