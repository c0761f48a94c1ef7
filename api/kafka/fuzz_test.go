package kafka

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tierlog/tierlog/broker"
)

// stateless reports whether a decoded request can run against the fuzz
// node without changing it: reads, answers for features tierlog lacks,
// and validate-only admin requests.
func stateless(req kmsg.Request) bool {
	switch r := req.(type) {
	case *kmsg.ApiVersionsRequest, *kmsg.MetadataRequest, *kmsg.DescribeConfigsRequest, *kmsg.DescribeClusterRequest,
		*kmsg.DescribeACLsRequest, *kmsg.CreateACLsRequest, *kmsg.DeleteACLsRequest,
		*kmsg.AddPartitionsToTxnRequest, *kmsg.AddOffsetsToTxnRequest, *kmsg.EndTxnRequest, *kmsg.TxnOffsetCommitRequest,
		*kmsg.DescribeTransactionsRequest, *kmsg.ListTransactionsRequest, *kmsg.SASLHandshakeRequest, *kmsg.SASLAuthenticateRequest:
		return true
	case *kmsg.CreateTopicsRequest:
		return r.ValidateOnly
	case *kmsg.CreatePartitionsRequest:
		return r.ValidateOnly
	case *kmsg.IncrementalAlterConfigsRequest:
		return r.ValidateOnly
	case *kmsg.AlterConfigsRequest:
		return r.ValidateOnly
	}
	return false
}

// fuzzSeeds are one request of each kind the table has, at its lowest and
// highest version, framed as they arrive (without the size).
func fuzzSeeds() [][]byte {
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("fuzz"))
	var out [][]byte
	for key, a := range apis {
		for _, v := range []int16{a.min, a.max} {
			req := kmsg.RequestForKey(key)
			req.SetVersion(v)
			switch r := req.(type) {
			case *kmsg.CreateTopicsRequest:
				r.ValidateOnly = true
				t := kmsg.NewCreateTopicsRequestTopic()
				t.Topic, t.NumPartitions, t.ReplicationFactor = "t2", -1, -1
				t.Configs = []kmsg.CreateTopicsRequestTopicConfig{{Name: "retention.ms", Value: strPtr("1000")}}
				r.Topics = append(r.Topics, t)
			case *kmsg.CreatePartitionsRequest:
				r.ValidateOnly = true
				r.Topics = []kmsg.CreatePartitionsRequestTopic{{Topic: "t", Count: 4}}
			case *kmsg.IncrementalAlterConfigsRequest:
				r.ValidateOnly = true
				r.Resources = []kmsg.IncrementalAlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "t",
					Configs: []kmsg.IncrementalAlterConfigsRequestResourceConfig{{Name: "segment.ms", Value: strPtr("1000")}}}}
			case *kmsg.AlterConfigsRequest:
				r.ValidateOnly = true
				r.Resources = []kmsg.AlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "t",
					Configs: []kmsg.AlterConfigsRequestResourceConfig{{Name: "segment.ms", Value: strPtr("1000")}}}}
			case *kmsg.DescribeConfigsRequest:
				r.IncludeSynonyms, r.IncludeDocumentation = true, true
				r.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "t"},
					{ResourceType: kmsg.ConfigResourceTypeBroker, ResourceName: "0"}}
			case *kmsg.MetadataRequest:
				r.Topics = []kmsg.MetadataRequestTopic{{Topic: strPtr("t")}}
			}
			out = append(out, f.AppendRequest(nil, req, 1)[4:])
		}
	}
	return out
}

// FuzzRequest feeds arbitrary request frames through what a connection
// does with one: header parse, table lookup, kmsg decode and, for the
// kinds that change nothing, the handler and the response encoding. No
// input may panic, and every response the server writes must decode as
// the client would read it.
func FuzzRequest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	b, err := broker.Open(context.Background(), broker.Options{Dir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic("t", 2, map[string]string{"retention.ms": "60000"}); err != nil {
		f.Fatal(err)
	}
	s := New(b, Options{})
	defer s.Close()
	c := newClientConn(s, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		hdr, a, req, err := decodeRequest(body)
		if err != nil {
			return // the connection closes
		}
		var resp kmsg.Response
		if req == nil {
			hdr.version = 0
			resp = apiVersionsUnsupported()
		} else {
			if !stateless(req) {
				return
			}
			rep, err := c.handle(a, req)
			if err != nil {
				t.Fatalf("%s v%d: handler panicked: %v", kmsg.NameForKey(hdr.key), hdr.version, err)
			}
			if rep.later != nil || rep.none {
				t.Fatalf("%s: a stateless kind answered later or not at all", kmsg.NameForKey(hdr.key))
			}
			resp = rep.resp
		}
		frame := appendResponse(nil, hdr, resp)
		if int(binary.BigEndian.Uint32(frame)) != len(frame)-4 || int32(binary.BigEndian.Uint32(frame[4:])) != hdr.correlationID {
			t.Fatalf("%s: response frame size or correlation id wrong", kmsg.NameForKey(hdr.key))
		}
		back := resp.RequestKind().ResponseKind()
		back.SetVersion(hdr.version)
		rest := frame[8:]
		if back.IsFlexible() && hdr.key != kmsg.ApiVersions.Int16() {
			rest = rest[1:]
		}
		if err := back.ReadFrom(rest); err != nil {
			t.Fatalf("%s v%d: the response does not decode: %v", kmsg.NameForKey(hdr.key), hdr.version, err)
		}
	})
}
