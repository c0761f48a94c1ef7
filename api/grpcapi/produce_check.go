package grpcapi

import (
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	spb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/hot"
	"github.com/tierlog/tierlog/internal/batch"
)

// MaxProduceRecords bounds the records of one Produce request (one batch).
// Each decoded record costs about 130 bytes of structs before the batch is
// built, so 2^17 records cost about 17 MB; a 1 MiB batch of empty records,
// the most the default max.message.bytes lets through, holds about 150,000.
const MaxProduceRecords = 1 << 17

// minRecordBytes is the least a record adds to a batch (length, attributes,
// timestamp and offset deltas, key and value lengths, header count).
const minRecordBytes = 7

// defaultMaxMessageBytes is the default max.message.bytes: requests whose
// estimate stays under it skip the topic config lookup.
const defaultMaxMessageBytes = 1048588

// produceShape is what a scan of a ProduceRequest's wire bytes learns
// without decoding its records.
type produceShape struct {
	topic        string
	partition    int32
	hasPartition bool
	records      int
	recordBytes  int64 // lower bound of the framed records' size
	compression  string
}

// scanProduce reads the top-level fields of a ProduceRequest and sizes its
// records from their key, value and header lengths. It allocates nothing
// per record.
func scanProduce(b []byte) (produceShape, error) {
	var sh produceShape
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return sh, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return sh, protowire.ParseError(n)
			}
			sh.topic = string(v)
			b = b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return sh, protowire.ParseError(n)
			}
			sh.partition, sh.hasPartition = int32(v), true
			b = b[n:]
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return sh, protowire.ParseError(n)
			}
			sh.records++
			sh.recordBytes += minRecordBytes + payloadBytes(v)
			b = b[n:]
		case num == 5 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return sh, protowire.ParseError(n)
			}
			sh.compression = string(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return sh, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return sh, nil
}

// payloadBytes is a lower bound of what one wire Record adds to a batch
// beyond minRecordBytes: its key and value bytes and, for each header, its
// key and value bytes and their two lengths. As proto decoding does, the
// last of a repeated key or value counts. It must not count more than the
// batch holds (the proto tags and lengths of a Header are twice the batch
// bytes of a small one), or checkProduce refuses valid requests.
func payloadBytes(rec []byte) int64 {
	var key, value, headers int64
	eachBytesField(rec, func(num protowire.Number, v []byte) {
		switch num {
		case 3:
			key = int64(len(v))
		case 4:
			value = int64(len(v))
		case 5:
			var hk, hv int64
			eachBytesField(v, func(num protowire.Number, v []byte) {
				switch num {
				case 1:
					hk = int64(len(v))
				case 2:
					hv = int64(len(v))
				}
			})
			headers += 2 + hk + hv
		}
	})
	return key + value + headers
}

// eachBytesField calls f with each length-delimited field of the message
// b, stopping at the first malformed field (proto decoding reports it).
func eachBytesField(b []byte, f func(protowire.Number, []byte)) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return
		}
		if typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			f(num, v)
		}
		b = b[m:]
	}
}

// checkProduce refuses a request from its shape, before its records are
// decoded or a batch is built: a missing topic or partition, too many
// records, or records that cannot fit max.message.bytes (uncompressed) or
// the largest records section a fetch will decompress (compressed).
func (s *Server) checkProduce(sh produceShape) error {
	if sh.topic == "" || sh.records == 0 {
		return nil // the handler explains what is missing
	}
	p := int32(0)
	if sh.hasPartition && sh.partition != -1 {
		p = sh.partition
	}
	if _, err := s.b.Partition(sh.topic, p); err != nil {
		return s.statusFor("Produce", err)
	}
	if sh.records > MaxProduceRecords {
		return invalidf("%d records in one request: at most %d (send several requests)", sh.records, MaxProduceRecords)
	}
	size := int64(batch.HeaderSize) + sh.recordBytes
	if sh.compression != "" && sh.compression != "none" {
		if size > batch.DefaultMaxUncompressed {
			return invalidf("records of about %d bytes before compression: at most %d (send several requests)", size, batch.DefaultMaxUncompressed)
		}
		return nil
	}
	if size <= defaultMaxMessageBytes {
		return nil
	}
	info, err := s.b.Topic(sh.topic)
	if err != nil {
		return s.statusFor("Produce", err)
	}
	if max, err := strconv.ParseInt(info.Config["max.message.bytes"], 10, 64); err == nil && size > max {
		return s.statusFor("Produce", &hot.TooLargeError{Size: int(min(size, 1<<62)), Max: int(max)})
	}
	return nil
}

// rejectField carries a refusal from produceCodec to Produce in the
// request's unknown fields. It is the largest field number, never used by
// the .proto.
const rejectField protowire.Number = protowire.MaxValidNumber

// produceCodec is the "proto" codec with one addition: a ProduceRequest is
// scanned and checked (checkProduce) before its records are decoded, so a
// request of millions of tiny records to a missing topic costs a scan, not
// gigabytes of decoded records. A refused request is decoded without its
// records and carries the refusal to the handler (grpc would turn a codec
// error into INTERNAL).
type produceCodec struct {
	s    *Server
	base encoding.CodecV2
}

func (c produceCodec) Name() string                           { return c.base.Name() }
func (c produceCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c produceCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*tierlogv1.ProduceRequest)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	buf := data.Materialize()
	sh, err := scanProduce(buf)
	if err != nil {
		return proto.Unmarshal(buf, req) // reports the malformed input
	}
	if err := c.s.checkProduce(sh); err != nil {
		req.Reset()
		req.Topic = sh.topic
		st, _ := proto.Marshal(status.Convert(err).Proto())
		req.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, rejectField, protowire.BytesType), st))
		return nil
	}
	return proto.Unmarshal(buf, req)
}

// produceRejected returns the refusal produceCodec left in req, if any.
func produceRejected(req *tierlogv1.ProduceRequest) error {
	for b := req.ProtoReflect().GetUnknown(); len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil
		}
		if num == rejectField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			var st spb.Status
			if err := proto.Unmarshal(v, &st); err != nil {
				return status.Errorf(codes.InvalidArgument, "unreadable field %d", rejectField)
			}
			return status.FromProto(&st).Err()
		}
		b = b[m:]
	}
	return nil
}
