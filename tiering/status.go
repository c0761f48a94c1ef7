package tiering

import (
	"os"
	"time"
)

// Status is a partition's tiering state for operators.
type Status struct {
	Topic     string
	Partition int32
	Remote    bool // remote.storage.enable

	LocalSegments int
	LocalBytes    int64
	LocalStart    int64
	EndOffset     int64

	RemoteSegments  int
	RemoteBytes     int64 // object bytes (compressed)
	RemoteRawBytes  int64 // segment bytes they hold
	RemoteStart     int64 // -1 when nothing is remote
	ManifestVersion int64

	// Upload lag: sealed local segments not yet committed remotely.
	LagSegments int
	LagBytes    int64
	// LagAge is the age of the oldest of them (since it was sealed).
	LagAge time.Duration

	// LocalMaxBytes is the partition's own local-disk ceiling
	// (local.disk.max.bytes; <= 0: none). ProduceRefused is why producers
	// are refused now (a ceiling is reached), empty while they are not.
	LocalMaxBytes  int64
	ProduceRefused string
}

// Status reports the partition's local and remote holdings and upload lag.
func (p *Partition) Status(now time.Time) Status {
	p.mu.RLock()
	m, remote := p.m.clone(), p.remote
	p.mu.RUnlock()
	st := Status{Topic: p.topic, Partition: p.partition, Remote: remote && p.store != nil,
		LocalStart: p.log.StartOffset(), EndOffset: p.log.EndOffset(), RemoteStart: m.remoteStart(), ManifestVersion: m.Version,
		LocalMaxBytes: p.localMax.Load()}
	if e := p.ceiling(); e != nil {
		st.ProduceRefused = e.Error()
	}
	for _, s := range m.committed() {
		st.RemoteSegments++
		st.RemoteBytes += s.Size
		st.RemoteRawBytes += s.RawSize
	}
	done := m.uploadedUpTo()
	for _, s := range p.log.Segments() {
		st.LocalSegments++
		st.LocalBytes += s.Size
		if st.Remote && s.Sealed && s.BaseOffset >= done {
			st.LagSegments++
			st.LagBytes += s.Size
			if fi, err := os.Stat(s.Path); err == nil && st.LagAge == 0 {
				st.LagAge = now.Sub(fi.ModTime())
			}
		}
	}
	return st
}
