package hot

// Durability says what an acknowledged append is known to have reached.
type Durability int

const (
	// DurabilityPageCache: written to the OS page cache; survives a process
	// crash, not a machine crash (flush.policy=os, or interval before the tick).
	DurabilityPageCache Durability = iota
	// DurabilityFsynced: fsynced to the local disk before the acknowledgement.
	DurabilityFsynced
)

func (d Durability) String() string {
	switch d {
	case DurabilityPageCache:
		return "page-cache"
	case DurabilityFsynced:
		return "fsynced"
	}
	return "unknown"
}

// AppendResult describes one appended batch.
type AppendResult struct {
	BaseOffset int64
	LastOffset int64
	// LogAppendTime is the broker time in Unix ms the batch was appended.
	LogAppendTime int64
	// TimestampType is the topic's message.timestamp.type the batch was
	// stored under: LogAppendTime says its records carry LogAppendTime.
	TimestampType TimestampType
	Durability    Durability
	// Duplicate: the batch was an idempotent producer's retry of one
	// already in the log; the offsets are the original's and nothing was
	// written.
	Duplicate bool
}

// FetchResult holds whole batches read from the log.
type FetchResult struct {
	// Records are whole RecordBatch v2 batches, concatenated. The first batch
	// may start before the requested offset (batches are not split); readers
	// skip records below it.
	Records []byte
	// StartOffset and EndOffset are the log's bounds at the time of the read.
	StartOffset, EndOffset int64
}
