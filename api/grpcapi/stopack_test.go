package grpcapi

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/internal/batch"
)

// TestStopAnswersEveryStoredProduce: a Produce that Stop lets finish
// (it was in flight when shutdown began) has its answer delivered: a
// client told its produce failed retries it and stores the records twice.
// Only requests Stop refused (UNAVAILABLE "shutting down", never stored)
// may fail.
func TestStopAnswersEveryStoredProduce(t *testing.T) {
	for round := range 20 {
		e := newEnv(t)
		e.createTopic(t, "t", 1, nil)
		const producers = 16
		var mu sync.Mutex
		failed := map[string]error{}
		var wg sync.WaitGroup
		started := make(chan struct{}, producers)
		for p := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					v := fmt.Sprintf("p%d-%d", p, i)
					_, err := e.c.Produce(context.Background(), &tierlogv1.ProduceRequest{Topic: "t", Partition: new(int32),
						Records: []*tierlogv1.Record{{Value: []byte(v)}}})
					if i == 3 {
						started <- struct{}{}
					}
					if err != nil {
						if !strings.Contains(err.Error(), "shutting down") || status.Code(err) != codes.Unavailable {
							mu.Lock()
							failed[v] = err
							mu.Unlock()
						}
						return
					}
				}
			}()
		}
		for range producers {
			<-started
		}
		e.srv.Stop(e.g, time.Minute)
		wg.Wait()
		res, err := e.b.Fetch(context.Background(), "t", 0, 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := batch.DecodeAll(res.Records)
		if err != nil {
			t.Fatal(err)
		}
		stored := 0
		for _, r := range recs {
			if err, ok := failed[string(r.Value)]; ok {
				stored++
				t.Errorf("round %d: produce of %q failed (%v) but its record is stored at offset %d", round, r.Value, err, r.Offset)
			}
		}
		t.Logf("round %d: %d records stored, %d produces failed other than refused, %d of them stored", round, len(recs), len(failed), stored)
	}
}
