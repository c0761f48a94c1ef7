package grpcapi

import (
	"context"
	"time"

	"github.com/tierlog/tierlog/api/tierlogv1"
)

// TierStatus reports each partition's local and remote holdings and upload
// lag.
func (s *Server) TierStatus(ctx context.Context, req *tierlogv1.TierStatusRequest) (*tierlogv1.TierStatusResponse, error) {
	sts, err := s.b.TierStatus(req.GetTopic())
	if err != nil {
		return nil, s.statusFor("TierStatus", err)
	}
	disk := s.b.DiskStatus()
	resp := &tierlogv1.TierStatusResponse{CacheHitRate: s.b.CacheHitRate(), Bucket: s.b.BucketName(),
		LocalBytes: disk.Used, LocalPendingUploadBytes: disk.Pending, LocalMaxBytes: max(disk.Limit, 0)}
	for _, st := range sts {
		resp.Partitions = append(resp.Partitions, &tierlogv1.PartitionTierStatus{
			Topic: st.Topic, Partition: st.Partition, Remote: st.Remote,
			LocalSegments: int32(st.LocalSegments), LocalBytes: st.LocalBytes, LocalStartOffset: st.LocalStart,
			LogEndOffset: st.EndOffset, RemoteSegments: int32(st.RemoteSegments), RemoteBytes: st.RemoteBytes,
			RemoteRawBytes: st.RemoteRawBytes, RemoteStartOffset: st.RemoteStart,
			UploadLagSegments: int32(st.LagSegments), UploadLagBytes: st.LagBytes, UploadLagAgeMs: st.LagAge.Milliseconds(),
			ManifestVersion: st.ManifestVersion, LocalMaxBytes: st.LocalMaxBytes, ProduceRefused: st.ProduceRefused,
		})
	}
	return resp, nil
}

// defaultTierUploadTimeout is TierUpload's wait when the request sets none.
const defaultTierUploadTimeout = 30 * time.Second

// TierUpload rolls and uploads a topic's partitions now and waits, up to the
// request's timeout, until the bucket's manifest names their records.
func (s *Server) TierUpload(ctx context.Context, req *tierlogv1.TierUploadRequest) (*tierlogv1.TierUploadResponse, error) {
	if req.GetTimeoutMs() < 0 {
		return nil, invalidf("timeout_ms %d: want 0 (the default, 30 s) or a positive number of milliseconds", req.GetTimeoutMs())
	}
	timeout := defaultTierUploadTimeout
	if req.GetTimeoutMs() > 0 {
		timeout = time.Duration(req.GetTimeoutMs()) * time.Millisecond
	}
	partition := int32(-1)
	if req.Partition != nil {
		if req.GetPartition() < 0 {
			return nil, invalidf("partition %d: want 0 or more, or unset for every partition", req.GetPartition())
		}
		partition = req.GetPartition()
	}
	// Past the timeout the answer says what is done and what is not; the
	// uploads go on in the daemon.
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ups, err := s.b.UploadNow(wctx, req.GetTopic(), partition)
	if err != nil {
		return nil, s.statusFor("TierUpload", err)
	}
	resp := &tierlogv1.TierUploadResponse{}
	for _, u := range ups {
		pu := &tierlogv1.PartitionUpload{Partition: u.Partition, TargetOffset: u.Target,
			RemoteEndOffsetBefore: u.Before, RemoteEndOffset: u.After, Done: u.Err == nil}
		if u.Err != nil {
			pu.Error = u.Err.Error()
		}
		resp.Partitions = append(resp.Partitions, pu)
	}
	return resp, nil
}
