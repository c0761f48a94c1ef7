package kafka

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/internal/testutil"
)

// A request that closes the connection (a malformed or unknown one, or a
// failed Produce with acks=0: reply.closeConn) must come after the answers
// to the requests ahead of it, as conn.go promises ("closes the connection
// once the answers ahead are sent") and as Kafka does: Kafka mutes a
// connection while a request is in flight, so a long-poll Fetch ahead is
// answered (at MaxWait) before the bad request is even read. tierlog reads
// on, so the connection's waits must not end when its reader stops for a
// request that closes it (they once did: the Fetch ahead returned nil and
// its answer was never written); only a client that is gone ends them.
func TestAnswersAheadOfClosingRequestAreSent(t *testing.T) {
	n := startNode(t, "", Options{})
	if _, err := n.b.CreateTopic("lp", 1, nil); err != nil {
		t.Fatal(err)
	}
	longPoll := func() *kmsg.FetchRequest {
		req := kmsg.NewPtrFetchRequest()
		req.SetVersion(11)
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 1500, 1, 1<<20
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = "lp"
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.LogStartOffset = 0, 0, 1<<20, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		return req
	}
	cases := []struct {
		name    string
		closing func(r *rawConn) []byte
	}{
		{"unknown api key", func(*rawConn) []byte { return sized(append(rawHeader(999, 0, 99, "x"), 0)) }},
		{"failed produce acks=0", func(r *rawConn) []byte {
			b, _ := r.frame(produceReq(9, 0, "lp", map[int32][]byte{7: testutil.Batch(t, 0, 1, 10, 1)}))
			return b
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, n.addr)
			req := longPoll()
			b1, corr := r.frame(req)
			r.write(append(b1, c.closing(r)...))
			got, _, err := r.readFrame()
			if err != nil {
				t.Fatalf("the long-poll Fetch ahead of the closing request was never answered: %v", err)
			}
			if got != corr {
				t.Fatalf("correlation id %d, want the Fetch's %d", got, corr)
			}
			r.expectClosed()
		})
	}
}
