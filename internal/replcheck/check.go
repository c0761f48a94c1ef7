package replcheck

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/tierlog/tierlog/internal/batch"
)

// Ack is what a producer was told: the record (Key, Value) is stored in
// Partition at Offset.
type Ack struct {
	Partition  int32
	Offset     int64
	Key, Value []byte
}

// Options say what to check and where the replicas are.
type Options struct {
	Topic      string
	Partitions int32
	// Dirs maps node id to that node's data directory (the one holding
	// topics/). A node with no directory for a partition is not a replica
	// of it (Report.Absent).
	Dirs map[int32]string
	// Tiered says history below the replicas' local log start may be in
	// the bucket, which this checker does not read: an ack below the local
	// start of every replica is then Unverified instead of Lost.
	Tiered bool
}

// Dup is an acknowledged record stored at more than one offset: a retry
// the log stored twice.
type Dup struct {
	Partition  int32
	Key, Value []byte
	Acked      int64   // the offset the producer was told
	Offsets    []int64 // every offset holding the record, ascending
}

// Divergence is the first offset at which a replica's stored batch bytes
// differ from the reference replica's over the offsets both hold.
type Divergence struct {
	Partition int32
	Offset    int64 // the first record that differs (the batch's base when records agree)
	Reference int32 // the reference replica's node
	Node      int32 // the node that disagrees with it
	Reason    string
}

// Gap is a range of offsets missing inside a replica's [start, end).
type Gap struct {
	Partition int32
	Node      int32
	From, To  int64 // offsets From..To-1 are missing
}

// Report is what Check found. OK is true when nothing was lost,
// duplicated, divergent or missing.
type Report struct {
	Topic      string
	Lost       []Ack        // acknowledged, but missing or different in the log
	Duplicates []Dup        // an acknowledged record stored at two offsets
	Divergent  []Divergence // replicas with different bytes at the same offset
	Gaps       []Gap        // offsets missing inside a replica's log
	// Unverified are acks below every replica's local log start when
	// Options.Tiered is set (tiered; not read here). Not a failure.
	Unverified []Ack
	// Checked counts per node the records compared: on a reference replica
	// every record it holds, on another the records it shares with the
	// reference.
	Checked map[int32]int64
	// Reference is the reference replica's node per partition.
	Reference map[int32]int32
	// Absent lists per partition the nodes with no log for it.
	Absent map[int32][]int32

	lostWhy []string // parallel to Lost: what was found at the offset
}

// OK says the check found nothing wrong.
func (r Report) OK() bool {
	return len(r.Lost) == 0 && len(r.Duplicates) == 0 && len(r.Divergent) == 0 && len(r.Gaps) == 0
}

// maxLines bounds each kind of finding String lists.
const maxLines = 20

// String is a human summary naming partition, offset and nodes of every
// finding (at most maxLines of each kind).
func (r Report) String() string {
	var b strings.Builder
	verdict := "OK"
	if !r.OK() {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "replcheck %s: topic %q: %d lost, %d duplicated, %d divergent, %d gaps, %d unverified (tiered)\n",
		verdict, r.Topic, len(r.Lost), len(r.Duplicates), len(r.Divergent), len(r.Gaps), len(r.Unverified))
	for _, n := range slices.Sorted(maps.Keys(r.Checked)) {
		fmt.Fprintf(&b, "  node %d: %d records compared\n", n, r.Checked[n])
	}
	for _, p := range slices.Sorted(maps.Keys(r.Reference)) {
		fmt.Fprintf(&b, "  partition %d: reference node %d", p, r.Reference[p])
		if a := r.Absent[p]; len(a) > 0 {
			fmt.Fprintf(&b, "; no log on nodes %v", a)
		}
		b.WriteString("\n")
	}
	lines(&b, len(r.Lost), func(i int) string {
		a := r.Lost[i]
		why := ""
		if i < len(r.lostWhy) {
			why = ": " + r.lostWhy[i]
		}
		return fmt.Sprintf("LOST partition %d offset %d key %q value %s%s", a.Partition, a.Offset, a.Key, short(a.Value), why)
	})
	lines(&b, len(r.Duplicates), func(i int) string {
		d := r.Duplicates[i]
		return fmt.Sprintf("DUPLICATE partition %d: key %q value %s acked at offset %d is stored at offsets %v", d.Partition, d.Key, short(d.Value), d.Acked, d.Offsets)
	})
	lines(&b, len(r.Divergent), func(i int) string {
		d := r.Divergent[i]
		return fmt.Sprintf("DIVERGENT partition %d offset %d: node %d differs from reference node %d: %s", d.Partition, d.Offset, d.Node, d.Reference, d.Reason)
	})
	lines(&b, len(r.Gaps), func(i int) string {
		g := r.Gaps[i]
		return fmt.Sprintf("GAP partition %d node %d: offsets %d to %d missing", g.Partition, g.Node, g.From, g.To-1)
	})
	return strings.TrimSuffix(b.String(), "\n")
}

func lines(b *strings.Builder, n int, line func(int) string) {
	for i := range min(n, maxLines) {
		b.WriteString("  " + line(i) + "\n")
	}
	if n > maxLines {
		fmt.Fprintf(b, "  ... and %d more\n", n-maxLines)
	}
}

// short quotes a value, cut to 40 bytes.
func short(v []byte) string {
	if len(v) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", v[:40], len(v))
	}
	return fmt.Sprintf("%q", v)
}

// Check reads every replica of every partition of o.Topic and checks the
// acknowledged records against them. An error means the check could not
// be made (bad options, an unreadable log), not that it failed: findings
// are in the Report.
func Check(acks []Ack, o Options) (Report, error) {
	if o.Partitions <= 0 || len(o.Dirs) == 0 {
		return Report{}, fmt.Errorf("replcheck: need at least one partition and one node (got %d partitions, %d nodes)", o.Partitions, len(o.Dirs))
	}
	byPart := make(map[int32][]Ack)
	for _, a := range acks {
		if a.Partition < 0 || a.Partition >= o.Partitions {
			return Report{}, fmt.Errorf("replcheck: ack for partition %d at offset %d, but the topic has partitions 0 to %d", a.Partition, a.Offset, o.Partitions-1)
		}
		byPart[a.Partition] = append(byPart[a.Partition], a)
	}
	r := Report{Topic: o.Topic, Checked: map[int32]int64{}, Reference: map[int32]int32{}, Absent: map[int32][]int32{}}
	nodes := slices.Sorted(maps.Keys(o.Dirs))
	for _, n := range nodes {
		r.Checked[n] = 0
	}
	for p := range o.Partitions {
		var reps []*replica
		for _, n := range nodes {
			rep, err := readReplica(n, o.Dirs[n], o.Topic, p)
			if errors.Is(err, fs.ErrNotExist) {
				r.Absent[p] = append(r.Absent[p], n)
				continue
			}
			if err != nil {
				return Report{}, err
			}
			reps = append(reps, rep)
		}
		r.checkPartition(p, reps, byPart[p], o.Tiered)
	}
	return r, nil
}

// checkPartition adds what it finds in one partition to r.
func (r *Report) checkPartition(p int32, reps []*replica, acks []Ack, tiered bool) {
	slices.SortFunc(acks, func(a, b Ack) int { return cmp.Compare(a.Offset, b.Offset) })
	if len(reps) == 0 {
		for _, a := range acks {
			r.lose(a, "no node holds a log for the partition")
		}
		return
	}
	// The reference holds the most: the largest end, then the lowest
	// start, then the lowest node id (reps are in node order).
	ref := reps[0]
	for _, rep := range reps[1:] {
		if rep.end > ref.end || rep.end == ref.end && rep.start < ref.start {
			ref = rep
		}
	}
	r.Reference[p] = ref.node
	r.Checked[ref.node] += int64(len(ref.records))
	for _, rep := range reps {
		for _, g := range rep.gaps {
			g.Partition = p
			r.Gaps = append(r.Gaps, g)
		}
		if rep != ref {
			r.compare(p, ref, rep)
		}
	}

	// The log as a consumer would read it: the reference, and below its
	// local start whatever another replica still holds.
	log := make(map[int64]Record, len(ref.records))
	lowest := ref.start
	for _, rec := range ref.records {
		log[rec.Offset] = rec
	}
	for _, rep := range reps {
		lowest = min(lowest, rep.start)
		for _, rec := range rep.records {
			if rec.Offset >= ref.start {
				break
			}
			if _, ok := log[rec.Offset]; !ok {
				log[rec.Offset] = rec
			}
		}
	}

	acked := make(map[string]int64) // record identity -> the offset acked for it
	for i, a := range acks {
		if i > 0 && acks[i-1].Offset == a.Offset && sameRecord(acks[i-1], a) {
			continue // the same ack listed twice
		}
		acked[identity(a.Key, a.Value)] = a.Offset
		rec, ok := log[a.Offset]
		switch {
		case !ok && tiered && a.Offset < lowest:
			r.Unverified = append(r.Unverified, a)
		case !ok:
			r.lose(a, fmt.Sprintf("offset not in the reference node %d's log [%d, %d)", ref.node, ref.start, ref.end))
		case !bytes.Equal(rec.Key, a.Key) || !bytes.Equal(rec.Value, a.Value):
			r.lose(a, fmt.Sprintf("the log holds key %q value %s there", rec.Key, short(rec.Value)))
		}
	}

	// Every offset holding an acknowledged record, in offset order.
	seen := make(map[string][]int64)
	for _, off := range slices.Sorted(maps.Keys(log)) {
		rec := log[off]
		id := identity(rec.Key, rec.Value)
		if _, ok := acked[id]; ok {
			seen[id] = append(seen[id], off)
		}
	}
	for _, a := range acks {
		id := identity(a.Key, a.Value)
		offs := seen[id]
		if len(offs) > 1 {
			r.Duplicates = append(r.Duplicates, Dup{Partition: p, Key: a.Key, Value: a.Value, Acked: acked[id], Offsets: offs})
			delete(seen, id) // reported once, whatever the number of acks
		}
	}
}

func (r *Report) lose(a Ack, why string) {
	r.Lost = append(r.Lost, a)
	r.lostWhy = append(r.lostWhy, why)
}

func sameRecord(a, b Ack) bool { return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) }

// identity is a map key for a record's key and value (a null and an empty
// one are the same).
func identity(key, value []byte) string {
	return fmt.Sprintf("%d:%s%s", len(key), key, value)
}

// compare checks rep against the reference batch by batch over the offsets
// both hold, [max of the starts, rep's end): a follower appends its
// leader's batches unchanged, so the same offsets must lie in batches with
// the same bytes (base offset and leader epoch included). It records the
// first difference only: after it, the logs differ anyway.
func (r *Report) compare(p int32, ref, rep *replica) {
	lo, hi := max(ref.start, rep.start), min(ref.end, rep.end)
	for _, b := range rep.batches {
		if b.next <= lo {
			continue
		}
		if b.base >= hi {
			break
		}
		diverge := func(off int64, why string) {
			r.Divergent = append(r.Divergent, Divergence{Partition: p, Offset: off, Reference: ref.node, Node: rep.node, Reason: why})
		}
		i := sort.Search(len(ref.batches), func(i int) bool { return ref.batches[i].next > b.base })
		if b.base < lo || i == len(ref.batches) || ref.batches[i].base != b.base {
			at := max(b.base, lo)
			refRange := "nothing"
			if i < len(ref.batches) {
				refRange = fmt.Sprintf("offsets %d to %d", ref.batches[i].base, ref.batches[i].next-1)
			}
			diverge(at, fmt.Sprintf("batch boundaries differ: node %d holds a batch of offsets %d to %d, the reference holds %s there", rep.node, b.base, b.next-1, refRange))
			return
		}
		rb := ref.batches[i]
		if !bytes.Equal(rb.bytes, b.bytes) {
			off, why := firstDifference(rb, b)
			diverge(off, why)
			return
		}
		r.Checked[rep.node] += b.next - b.base
	}
}

// firstDifference says where and how two batches at the same base offset
// differ: the first record that differs, else the batch header.
func firstDifference(ref, other storedBatch) (int64, string) {
	if ref.epoch != other.epoch {
		return ref.base, fmt.Sprintf("leader epoch %d on the reference, %d on the node", ref.epoch, other.epoch)
	}
	if ref.next != other.next {
		return ref.base, fmt.Sprintf("batch boundaries differ: the batch at offset %d ends at %d on the reference, at %d on the node", ref.base, ref.next-1, other.next-1)
	}
	_, a, errA := batch.Decode(ref.bytes)
	_, b, errB := batch.Decode(other.bytes)
	if errA != nil || errB != nil {
		return ref.base, fmt.Sprintf("batch bytes differ (decode: %v, %v)", errA, errB)
	}
	for i := range min(len(a), len(b)) {
		x, y := a[i], b[i]
		switch {
		case x.Offset != y.Offset:
			return min(x.Offset, y.Offset), fmt.Sprintf("record %d of the batch has offset %d on the reference, %d on the node", i, x.Offset, y.Offset)
		case !bytes.Equal(x.Key, y.Key):
			return x.Offset, fmt.Sprintf("key %q on the reference, %q on the node", x.Key, y.Key)
		case !bytes.Equal(x.Value, y.Value):
			return x.Offset, fmt.Sprintf("value %s on the reference, %s on the node", short(x.Value), short(y.Value))
		case x.Timestamp != y.Timestamp:
			return x.Offset, fmt.Sprintf("timestamp %d on the reference, %d on the node", x.Timestamp, y.Timestamp)
		case !slices.EqualFunc(x.Headers, y.Headers, func(h, k batch.RecordHeader) bool { return h.Key == k.Key && bytes.Equal(h.Value, k.Value) }):
			return x.Offset, "record headers differ"
		}
	}
	return ref.base, fmt.Sprintf("the batch at offset %d differs in its header (attributes, timestamps, producer fields) or compression", ref.base)
}
