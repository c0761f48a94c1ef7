package batch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeBroker speaks just enough of the Kafka protocol, over in-memory pipes,
// for a real franz-go producer to send it batches: ApiVersions, Metadata for
// one topic with one partition, and Produce. It keeps every produced batch
// byte for byte as the client encoded it. Versions are capped below the
// flexible Metadata and Produce versions so headers stay simple.
type fakeBroker struct {
	wg sync.WaitGroup

	mu      sync.Mutex
	batches [][]byte
	errs    []error
}

const (
	fakeTopic = "t"
	fakeNode  = 1
)

func (f *fakeBroker) dial(_ context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer server.Close()
		if err := f.serve(server); err != nil {
			f.mu.Lock()
			f.errs = append(f.errs, err)
			f.mu.Unlock()
		}
	}()
	return client, nil
}

// serve answers requests until the client hangs up.
func (f *fakeBroker) serve(c net.Conn) error {
	for {
		var size [4]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return nil // client closed the connection
		}
		req := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(c, req); err != nil {
			return nil
		}
		resp, err := f.handle(req)
		if err != nil {
			return err
		}
		if _, err := c.Write(resp); err != nil {
			return nil
		}
	}
}

func (f *fakeBroker) handle(b []byte) ([]byte, error) {
	if len(b) < 10 {
		return nil, fmt.Errorf("fake broker: request of %d bytes", len(b))
	}
	key, version := int16(binary.BigEndian.Uint16(b)), int16(binary.BigEndian.Uint16(b[2:]))
	corr := binary.BigEndian.Uint32(b[4:])
	clientIDLen := int16(binary.BigEndian.Uint16(b[8:]))
	b = b[10+max(int(clientIDLen), 0):]

	req := kmsg.RequestForKey(key)
	if req == nil {
		return nil, fmt.Errorf("fake broker: unknown api key %d", key)
	}
	req.SetVersion(version)
	if req.IsFlexible() {
		if len(b) == 0 || b[0] != 0 {
			return nil, errors.New("fake broker: request header tags unsupported")
		}
		b = b[1:]
	}
	if err := req.ReadFrom(b); err != nil {
		return nil, fmt.Errorf("fake broker: api key %d v%d: %w", key, version, err)
	}

	var resp kmsg.Response
	switch r := req.(type) {
	case *kmsg.ApiVersionsRequest:
		v := kmsg.NewPtrApiVersionsResponse()
		v.ApiKeys = []kmsg.ApiVersionsResponseApiKey{
			{ApiKey: int16(kmsg.Produce), MinVersion: 3, MaxVersion: 8},
			{ApiKey: int16(kmsg.Metadata), MinVersion: 1, MaxVersion: 8},
			{ApiKey: int16(kmsg.ApiVersions), MinVersion: 0, MaxVersion: 3},
			{ApiKey: int16(kmsg.InitProducerID), MinVersion: 0, MaxVersion: 1},
		}
		resp = v
	case *kmsg.MetadataRequest:
		v := kmsg.NewPtrMetadataResponse()
		v.Brokers = []kmsg.MetadataResponseBroker{{NodeID: fakeNode, Host: "fake", Port: 9092}}
		v.ControllerID = fakeNode
		p := kmsg.NewMetadataResponseTopicPartition()
		p.Leader, p.LeaderEpoch, p.Replicas, p.ISR = fakeNode, 0, []int32{fakeNode}, []int32{fakeNode}
		topic := kmsg.NewMetadataResponseTopic()
		topic.Topic = kmsg.StringPtr(fakeTopic)
		topic.Partitions = []kmsg.MetadataResponseTopicPartition{p}
		v.Topics = []kmsg.MetadataResponseTopic{topic}
		resp = v
	case *kmsg.InitProducerIDRequest:
		// An idempotent producer asks for its id first.
		v := kmsg.NewPtrInitProducerIDResponse()
		v.ProducerID, v.ProducerEpoch = 4711, 0
		resp = v
	case *kmsg.ProduceRequest:
		v := kmsg.NewPtrProduceResponse()
		for _, t := range r.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				f.mu.Lock()
				f.batches = append(f.batches, p.Records)
				f.mu.Unlock()
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rt.Partitions = append(rt.Partitions, rp)
			}
			v.Topics = append(v.Topics, rt)
		}
		resp = v
	default:
		return nil, fmt.Errorf("fake broker: api key %d not served", key)
	}
	resp.SetVersion(version)

	out := make([]byte, 4, 64)
	out = binary.BigEndian.AppendUint32(out, corr)
	// Response header v1 (with tags) for flexible responses, except
	// ApiVersions, whose response header is always v0.
	if resp.IsFlexible() && key != int16(kmsg.ApiVersions) {
		out = append(out, 0)
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, nil
}

// produceWithKgo produces recs through a real franz-go client with the
// given codec and returns the batches the client put on the wire.
func produceWithKgo(t *testing.T, codec kgo.CompressionCodec, recs []Record) [][]byte {
	t.Helper()
	return produceWithKgoOpts(t, codec, recs, kgo.DisableIdempotentWrite())
}

// produceWithKgoOpts is produceWithKgo with extra client options; without
// kgo.DisableIdempotentWrite the client is an idempotent producer (kgo's
// default), whose batches carry a producer id, epoch and sequence.
func produceWithKgoOpts(t *testing.T, codec kgo.CompressionCodec, recs []Record, extra ...kgo.Opt) [][]byte {
	t.Helper()
	f := &fakeBroker{}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers("fake:9092"),
		kgo.Dialer(f.dial),
		kgo.DefaultProduceTopic(fakeTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(50 * time.Millisecond), // only batching, never correctness, depends on it
	}, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	krecs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		kr := &kgo.Record{Key: r.Key, Value: r.Value, Timestamp: time.UnixMilli(r.Timestamp), Partition: 0}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		krecs[i] = kr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	produceErr := cl.ProduceSync(ctx, krecs...).FirstErr()
	cl.Close()
	f.wg.Wait()
	if produceErr != nil {
		t.Fatalf("kgo produce: %v", produceErr)
	}
	for _, err := range f.errs {
		t.Errorf("fake broker: %v", err)
	}
	return f.batches
}

// TestDecodeKgoBatches decodes batches encoded by franz-go's producer, a
// real Kafka client, for every codec. kgo writes snappy as one raw block
// (its xerial framing appears only when it merges a backlog of batches
// under StreamingCompression, which a test cannot trigger without relying
// on timing); golden_test.go covers the xerial framing the Java producer
// writes.
func TestDecodeKgoBatches(t *testing.T) {
	recs := kgoRecords()
	for _, tc := range []struct {
		codec kgo.CompressionCodec
		want  Codec
	}{
		{kgo.NoCompression(), None},
		{kgo.GzipCompression(), Gzip},
		{kgo.SnappyCompression(), Snappy},
		{kgo.Lz4Compression(), LZ4},
		{kgo.ZstdCompression(), Zstd},
	} {
		t.Run(tc.want.String(), func(t *testing.T) {
			batches := produceWithKgo(t, tc.codec, recs)
			if len(batches) == 0 {
				t.Fatal("the client sent no batches")
			}
			var got []Record
			for i, b := range batches {
				h, rs, err := Decode(b)
				if err != nil {
					t.Fatalf("batch %d: %v", i, err)
				}
				if h.Codec() != tc.want {
					t.Errorf("batch %d: codec %s, want %s", i, h.Codec(), tc.want)
				}
				if h.ProducerID != -1 {
					t.Errorf("batch %d: producer id %d, want -1 (idempotence off)", i, h.ProducerID)
				}
				// kgo numbers each batch from 0; make offsets
				// continuous to compare against the input order.
				for j := range rs {
					rs[j].Offset += int64(len(got))
				}
				got = append(got, rs...)
			}
			sameRecords(t, got, wantDecoded(recs, 0))
		})
	}
}

// kgoRecords is sampleRecords with small values padded, so that every
// batch kgo cuts is worth compressing.
func kgoRecords() []Record {
	recs := sampleRecords()
	for i := range recs {
		if recs[i].Value != nil && len(recs[i].Value) < 100 {
			recs[i].Value = append(recs[i].Value, strings.Repeat(" padding", 40)...)
		}
	}
	return recs
}
