package grpcapi

import (
	"context"

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
