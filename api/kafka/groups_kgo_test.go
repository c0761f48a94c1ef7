package kafka

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tierlog/tierlog/internal/batch"
	"github.com/tierlog/tierlog/internal/testutil"
)

// groupLedger records what a group's consumers received and committed:
// a record committed by one consumer must never reach another.
type groupLedger struct {
	t         *testing.T
	mu        sync.Mutex
	seen      map[string]map[string]bool // record value -> consumers
	committed map[string]string          // record value -> committing consumer
}

func (l *groupLedger) received(consumer string, rs []*kgo.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range rs {
		v := string(r.Value)
		if by, ok := l.committed[v]; ok && by != consumer {
			l.t.Errorf("record %s (partition %d offset %d) reached %s after %s committed it", v, r.Partition, r.Offset, consumer, by)
		}
		if l.seen[v] == nil {
			l.seen[v] = map[string]bool{}
		}
		l.seen[v][consumer] = true
	}
}

func (l *groupLedger) commit(consumer string, rs []*kgo.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range rs {
		l.committed[string(r.Value)] = consumer
	}
}

func (l *groupLedger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// groupConsumer polls, commits what it polled, and only then lets a
// rebalance take its partitions (BlockRebalanceOnPoll), until stopped.
type groupConsumer struct {
	name string
	cl   *kgo.Client
	stop context.CancelFunc
	done chan struct{}
}

func startGroupConsumer(t *testing.T, n *groupsNode, l *groupLedger, name, group, topic string) *groupConsumer {
	cl, err := kgo.NewClient(kgo.SeedBrokers(n.addr), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(3*time.Second), kgo.HeartbeatInterval(100*time.Millisecond), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.ClientID(name))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &groupConsumer{name: name, cl: cl, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachError(func(topic string, p int32, err error) {
				if ctx.Err() == nil {
					t.Errorf("%s: fetch %s/%d: %v", name, topic, p, err)
				}
			})
			rs := fs.Records()
			l.received(name, rs)
			if len(rs) > 0 {
				if err := cl.CommitRecords(context.Background(), rs...); err != nil {
					// Not committed: another member may read these again.
					t.Logf("%s: commit: %v", name, err)
				} else {
					l.commit(name, rs)
				}
			}
			cl.AllowRebalance()
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *groupConsumer) close() {
	c.stop()
	<-c.done
	c.cl.Close() // leaves the group
}

// A group of two franz-go consumers rebalancing while records arrive:
// one consumer first, a second joining mid-stream, the first leaving.
// Every record is consumed, and no record reaches a consumer after
// another committed it.
func TestGroupConsumersRebalance(t *testing.T) {
	n := startGroupsNode(t)
	const topic, parts, total = "events", 4, 3000
	n.createTopic(topic, parts)
	l := &groupLedger{t: t, seen: map[string]map[string]bool{}, committed: map[string]string{}}

	produced := 0
	produce := func(k int) {
		for range k {
			b, err := batch.Build([]batch.Record{{Value: []byte(strconv.Itoa(produced)), Timestamp: time.Now().UnixMilli()}}, batch.BuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := n.b.Append(topic, int32(produced%parts), b); err != nil {
				t.Fatal(err)
			}
			produced++
		}
	}
	waitConsumed := func(k int) {
		testutil.Eventually(t, 30*time.Second, func() bool { return l.count() >= k }, "%d records consumed (have %d)", k, l.count())
	}

	a := startGroupConsumer(t, n, l, "a", "cg", topic)
	produce(total / 3)
	waitConsumed(total / 3)
	b := startGroupConsumer(t, n, l, "b", "cg", topic)
	produce(total / 3)
	waitConsumed(2 * total / 3)
	testutil.Eventually(t, 30*time.Second, func() bool {
		d := n.b.Groups().Describe("cg")
		return len(d.Members) == 2 && d.State.String() == "Stable"
	}, "both consumers in the group")
	a.close()
	produce(total - produced)
	waitConsumed(total)
	b.close()

	for i := range total {
		if len(l.seen[strconv.Itoa(i)]) == 0 {
			t.Errorf("record %d never consumed", i)
		}
	}
	var byB int
	for _, who := range l.seen {
		if who["b"] {
			byB++
		}
	}
	if byB == 0 || byB == total {
		t.Errorf("b consumed %d of %d records: the group did not share the partitions", byB, total)
	}
	t.Logf("b consumed %d of %d", byB, total)
}
