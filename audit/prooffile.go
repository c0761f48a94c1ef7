package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/mod/sumdb/note"
)

// Proof file formats (the "format" field of the JSON files `tierlog prove`
// and `tierlog prove-consistency` write and `tierlog verify-proof` reads).
const (
	InclusionFormat   = "tierlog-inclusion-proof-v1"
	ConsistencyFormat = "tierlog-consistency-proof-v1"
)

// ProofFile is a proof file an auditor receives: it is checked with
// nothing but the public keys it must be signed by.
type ProofFile interface {
	// Verify checks the proof and the signatures of its checkpoints with
	// vs. The error says what does not hold.
	Verify(vs note.Verifiers) error
	// String says what the proof proves, for a verifier's report.
	String() string
}

// InclusionFile proves that a record is the leaf at its offset of a
// partition's tree whose size and root a signed checkpoint names.
type InclusionFile struct {
	Format    string `json:"format"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Record    Record `json:"record"`
	// Leaf is the canonical leaf of Record (base64 in JSON): a verifier
	// re-encodes Record and compares.
	Leaf           []byte   `json:"leaf"`
	TreeSize       uint64   `json:"tree_size"`
	InclusionProof [][]byte `json:"inclusion_proof"`
	// Checkpoint is the signed note of the tree of TreeSize leaves.
	Checkpoint string `json:"checkpoint"`
}

// NewInclusionFile is the proof file of r, leaf index r.Offset of the tree
// of size leaves that signed checkpoint names, by proof. Headers are never
// null in the file: a record without headers has an empty list.
func NewInclusionFile(topic string, partition int32, r Record, size uint64, proof [][]byte, signed []byte) *InclusionFile {
	if r.Headers == nil {
		r.Headers = []Header{}
	}
	if proof == nil {
		proof = [][]byte{}
	}
	return &InclusionFile{Format: InclusionFormat, Topic: topic, Partition: partition, Offset: r.Offset, Record: r,
		Leaf: EncodeLeaf(nil, r), TreeSize: size, InclusionProof: proof, Checkpoint: string(signed)}
}

// Verify re-encodes the record and compares it with the leaf, computes the
// root the inclusion proof gives for the leaf's hash at its offset, and
// checks that a checkpoint of this partition signed by a key of vs names
// that root and size.
func (f *InclusionFile) Verify(vs note.Verifiers) error {
	if f.Format != InclusionFormat {
		return fmt.Errorf("audit: format %q, want %q", f.Format, InclusionFormat)
	}
	if f.Record.Offset != f.Offset {
		return fmt.Errorf("audit: the record is offset %d, the proof is for offset %d", f.Record.Offset, f.Offset)
	}
	if leaf := EncodeLeaf(nil, f.Record); !bytes.Equal(leaf, f.Leaf) {
		return fmt.Errorf("audit: the leaf is not the canonical encoding of the record at offset %d", f.Offset)
	}
	if f.Offset < 0 || uint64(f.Offset) >= f.TreeSize {
		return fmt.Errorf("audit: offset %d is not a leaf of a tree of size %d", f.Offset, f.TreeSize)
	}
	c, err := openPartition(f.Checkpoint, f.Topic, f.Partition, vs)
	if err != nil {
		return err
	}
	if c.Size != f.TreeSize {
		return fmt.Errorf("audit: the checkpoint is of tree size %d, the proof of size %d", c.Size, f.TreeSize)
	}
	if err := VerifyInclusion(LeafHash(f.Leaf), uint64(f.Offset), f.TreeSize, f.InclusionProof, c.Hash); err != nil {
		return fmt.Errorf("audit: the record at offset %d is not in the tree the checkpoint signs: %w", f.Offset, oneLine(err))
	}
	return nil
}

func (f *InclusionFile) String() string {
	return fmt.Sprintf("offset %d of %s/%d is in its log of %d records", f.Offset, f.Topic, f.Partition, f.TreeSize)
}

// ConsistencyFile proves that a partition's tree at a later checkpoint
// extends the tree of an earlier one: nothing the earlier one signed was
// altered, dropped or reordered.
type ConsistencyFile struct {
	Format           string   `json:"format"`
	Topic            string   `json:"topic"`
	Partition        int32    `json:"partition"`
	OldCheckpoint    string   `json:"old_checkpoint"`
	NewCheckpoint    string   `json:"new_checkpoint"`
	ConsistencyProof [][]byte `json:"consistency_proof"`
}

// NewConsistencyFile is the proof file that the tree of checkpoint newer
// extends that of older, by proof.
func NewConsistencyFile(topic string, partition int32, older, newer []byte, proof [][]byte) *ConsistencyFile {
	if proof == nil {
		proof = [][]byte{}
	}
	return &ConsistencyFile{Format: ConsistencyFormat, Topic: topic, Partition: partition,
		OldCheckpoint: string(older), NewCheckpoint: string(newer), ConsistencyProof: proof}
}

// Verify checks both checkpoints' signatures with vs, that both are of
// this partition's log, and the consistency proof between their roots.
func (f *ConsistencyFile) Verify(vs note.Verifiers) error {
	if f.Format != ConsistencyFormat {
		return fmt.Errorf("audit: format %q, want %q", f.Format, ConsistencyFormat)
	}
	older, err := openPartition(f.OldCheckpoint, f.Topic, f.Partition, vs)
	if err != nil {
		return fmt.Errorf("old checkpoint: %w", err)
	}
	newer, err := openPartition(f.NewCheckpoint, f.Topic, f.Partition, vs)
	if err != nil {
		return fmt.Errorf("new checkpoint: %w", err)
	}
	if older.Origin != newer.Origin {
		return fmt.Errorf("audit: the checkpoints are of two logs, %q and %q", older.Origin, newer.Origin)
	}
	if older.Size == 0 || older.Size > newer.Size {
		return fmt.Errorf("audit: old checkpoint of size %d, new of size %d: want 0 < old <= new", older.Size, newer.Size)
	}
	if err := VerifyConsistency(older.Size, newer.Size, f.ConsistencyProof, older.Hash, newer.Hash); err != nil {
		return fmt.Errorf("audit: the log at size %d does not extend the log at size %d: %w", newer.Size, older.Size, oneLine(err))
	}
	return nil
}

func (f *ConsistencyFile) String() string {
	older, err1 := PeekCheckpoint([]byte(f.OldCheckpoint))
	newer, err2 := PeekCheckpoint([]byte(f.NewCheckpoint))
	if err1 != nil || err2 != nil {
		return fmt.Sprintf("the log of %s/%d extends an earlier checkpoint", f.Topic, f.Partition)
	}
	return fmt.Sprintf("the log of %s/%d at %d records extends its log at %d records", f.Topic, f.Partition, newer.Size, older.Size)
}

// oneLine says a root mismatch (merkle/proof's error spans lines) in one
// line, the roots in hex; other errors are returned as they are.
func oneLine(err error) error {
	var rm proof.RootMismatchError
	if errors.As(err, &rm) {
		return fmt.Errorf("the proof gives root %x, the checkpoint signs %x", rm.CalculatedRoot, rm.ExpectedRoot)
	}
	return err
}

// ParseProofFile reads a proof file of either format.
func ParseProofFile(data []byte) (ProofFile, error) {
	var head struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("audit: not a proof file: %w", err)
	}
	var f ProofFile
	switch head.Format {
	case InclusionFormat:
		f = &InclusionFile{}
	case ConsistencyFormat:
		f = &ConsistencyFile{}
	default:
		return nil, fmt.Errorf("audit: proof file of format %q, want %q or %q", head.Format, InclusionFormat, ConsistencyFormat)
	}
	// Exactly the documented names, each once (checkShape): a field this
	// version does not check must not pass as checked, nor one the decoder
	// would match to another name.
	if err := checkShape(data, proofShapes[head.Format]); err != nil {
		return nil, fmt.Errorf("audit: %s file: %w", head.Format, err)
	}
	if err := json.Unmarshal(data, f); err != nil {
		return nil, fmt.Errorf("audit: %s file: %w", head.Format, err)
	}
	return f, nil
}

// openPartition checks a checkpoint's signature with vs and that its
// origin names topic/partition (of any cluster: the key says whose).
func openPartition(text, topic string, partition int32, vs note.Verifiers) (*Checkpoint, error) {
	c, err := OpenWith([]byte(text), "", vs)
	if err != nil {
		return nil, err
	}
	_, t, p, err := ParseOrigin(c.Origin)
	if err != nil {
		return nil, err
	}
	if t != topic || p != partition {
		return nil, fmt.Errorf("audit: the checkpoint is of %s/%d (origin %q), the proof of %s/%d", t, p, c.Origin, topic, partition)
	}
	return c, nil
}

// OpenWith is Open with several keys: the checkpoint must carry a valid
// signature by one of vs.
func OpenWith(text []byte, origin string, vs note.Verifiers) (*Checkpoint, error) {
	n, err := note.Open(text, vs)
	if err != nil {
		var unv *note.UnverifiedNoteError
		if errors.As(err, &unv) {
			var names []string
			for _, s := range unv.Note.UnverifiedSigs {
				names = append(names, s.Name)
			}
			return nil, fmt.Errorf("audit: checkpoint signature: signed by %s, none of them a key given", strings.Join(names, ", "))
		}
		return nil, fmt.Errorf("audit: checkpoint signature: %w", err)
	}
	return parseBody(n.Text, origin)
}

// PeekCheckpoint parses a signed checkpoint's body WITHOUT checking any
// signature: for a prover choosing what to prove, never for a verifier.
func PeekCheckpoint(text []byte) (*Checkpoint, error) {
	_, err := note.Open(text, note.VerifierList())
	var unv *note.UnverifiedNoteError
	if !errors.As(err, &unv) {
		return nil, fmt.Errorf("audit: not a signed checkpoint: %w", err)
	}
	return parseBody(unv.Note.Text, "")
}

// LoadPublicKeys reads public keys (Key.Public strings) from arg: a key
// itself, or a file holding one key per line (blank lines and lines
// starting with # are skipped).
func LoadPublicKeys(arg string) (note.Verifiers, error) {
	text := arg
	if !strings.Contains(arg, "+") {
		raw, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("audit: public keys: %q is neither a key (<name>+<hash>+<key>) nor a readable file: %w", arg, err)
		}
		text = string(raw)
	} else if raw, err := os.ReadFile(arg); err == nil {
		text = string(raw) // a file whose name holds a "+"
	}
	var vs []note.Verifier
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := NewVerifier(line)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("audit: public keys: %s holds no key", arg)
	}
	return note.VerifierList(vs...), nil
}
