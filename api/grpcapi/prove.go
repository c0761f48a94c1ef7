package grpcapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/audit"
)

// Prove returns the inclusion proof of the record at an offset against the
// checkpoint of the partition's tree after its last tiered segment.
func (s *Server) Prove(ctx context.Context, req *tierlogv1.ProveRequest) (*tierlogv1.ProveResponse, error) {
	if req.GetOffset() < 0 {
		return nil, invalidf("offset %d: want 0 or more", req.GetOffset())
	}
	pr, err := s.b.Prover(req.GetTopic(), req.GetPartition())
	if err != nil {
		return nil, s.statusFor("Prove", err)
	}
	// An offset outside the log is out of range whatever the tree holds.
	start, end, err := s.b.Offsets(req.GetTopic(), req.GetPartition())
	if err != nil {
		return nil, s.statusFor("Prove", err)
	}
	if req.GetOffset() < start || req.GetOffset() >= end {
		return nil, status.Errorf(codes.OutOfRange, "offset %d of %s/%d is outside the log, which holds offsets %d to %d",
			req.GetOffset(), req.GetTopic(), req.GetPartition(), start, end-1)
	}
	f, err := pr.Inclusion(ctx, req.GetOffset())
	if err != nil {
		return nil, s.statusFor("Prove", err)
	}
	return ProveProto(f), nil
}

// ProveConsistency returns the proof that the tree at one checkpoint
// extends the tree at an earlier one.
func (s *Server) ProveConsistency(ctx context.Context, req *tierlogv1.ProveConsistencyRequest) (*tierlogv1.ProveConsistencyResponse, error) {
	pr, err := s.b.Prover(req.GetTopic(), req.GetPartition())
	if err != nil {
		return nil, s.statusFor("ProveConsistency", err)
	}
	f, err := pr.Consistency(ctx, req.GetOldSize(), req.GetNewSize())
	if err != nil {
		return nil, s.statusFor("ProveConsistency", err)
	}
	return &tierlogv1.ProveConsistencyResponse{OldCheckpoint: f.OldCheckpoint, NewCheckpoint: f.NewCheckpoint,
		ConsistencyProof: f.ConsistencyProof}, nil
}

// Checkpoint returns a partition's signed checkpoint at a tree size, or
// the latest.
func (s *Server) Checkpoint(ctx context.Context, req *tierlogv1.CheckpointRequest) (*tierlogv1.CheckpointResponse, error) {
	pr, err := s.b.Prover(req.GetTopic(), req.GetPartition())
	if err != nil {
		return nil, s.statusFor("Checkpoint", err)
	}
	signed, err := pr.Checkpoint(ctx, req.GetSize())
	if err != nil {
		return nil, s.statusFor("Checkpoint", err)
	}
	return &tierlogv1.CheckpointResponse{Checkpoint: string(signed)}, nil
}

// PublicKey returns the node's checkpoint signing key's public key.
func (s *Server) PublicKey(context.Context, *tierlogv1.PublicKeyRequest) (*tierlogv1.PublicKeyResponse, error) {
	k, err := s.b.PublicKey()
	if err != nil {
		return nil, s.statusFor("PublicKey", err)
	}
	return &tierlogv1.PublicKeyResponse{PublicKey: k}, nil
}

// ProveProto is the response carrying proof file f's fields.
func ProveProto(f *audit.InclusionFile) *tierlogv1.ProveResponse {
	r := f.Record
	pr := &tierlogv1.Record{Offset: r.Offset, TimestampMs: r.Timestamp, Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		pr.Headers = append(pr.Headers, HeaderProto(h.Key, h.Value))
	}
	return &tierlogv1.ProveResponse{Record: pr, Control: r.Control, Leaf: f.Leaf, TreeSize: f.TreeSize,
		InclusionProof: f.InclusionProof, Checkpoint: f.Checkpoint}
}

// InclusionFileFromProto is the proof file of a Prove response (the
// reverse of ProveProto), for the partition asked for.
func InclusionFileFromProto(topic string, partition int32, resp *tierlogv1.ProveResponse) *audit.InclusionFile {
	pr := resp.GetRecord()
	r := audit.Record{Offset: pr.GetOffset(), Timestamp: pr.GetTimestampMs(), Key: pr.Key, Value: pr.Value, Control: resp.GetControl()}
	for _, h := range pr.GetHeaders() {
		// Both key forms set is no header the server sends: the empty key
		// then makes a leaf the proof does not verify.
		key, _ := HeaderKey(h)
		r.Headers = append(r.Headers, audit.Header{Key: key, Value: h.Value})
	}
	f := audit.NewInclusionFile(topic, partition, r, resp.GetTreeSize(), resp.GetInclusionProof(), []byte(resp.GetCheckpoint()))
	f.Leaf = resp.GetLeaf() // as the server sent it: the verifier compares it with the record
	return f
}
