package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// Checkpoint is a checkpoint's body (C2SP tlog-checkpoint): the origin,
// the tree size and the root hash (Hash).
type Checkpoint = log.Checkpoint

// Origin names a partition's log in its checkpoints:
// "tierlog/<cluster id>/<topic>/<partition>".
func Origin(clusterID, topic string, partition int32) string {
	return "tierlog/" + clusterID + "/" + topic + "/" + strconv.Itoa(int(partition))
}

// ParseOrigin splits an origin made by Origin. Kafka topic names hold no
// "/", so the split is unambiguous.
func ParseOrigin(origin string) (clusterID, topic string, partition int32, err error) {
	parts := strings.Split(origin, "/")
	if len(parts) != 4 || parts[0] != "tierlog" || parts[1] == "" || parts[2] == "" {
		return "", "", 0, fmt.Errorf("audit: origin %q is not tierlog/<cluster id>/<topic>/<partition>", origin)
	}
	p, err := strconv.ParseInt(parts[3], 10, 32)
	if err != nil || p < 0 {
		return "", "", 0, fmt.Errorf("audit: origin %q: partition %q is not a partition number", origin, parts[3])
	}
	return parts[1], parts[2], int32(p), nil
}

// Sign returns the signed note of the checkpoint (origin, size, root): the
// text stored in the bucket and handed to verifiers.
func Sign(s note.Signer, origin string, size uint64, root []byte) ([]byte, error) {
	body := Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal()
	msg, err := note.Sign(&note.Note{Text: string(body)}, s)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint of %s at size %d: %w", origin, size, err)
	}
	return msg, nil
}

// Open checks a signed checkpoint with verifier v (a note must carry v's
// signature) and parses its body (formats/log). If origin is not empty the
// checkpoint must be that log's. The root must be a SHA-256 hash.
func Open(text []byte, origin string, v note.Verifier) (*Checkpoint, error) {
	n, err := note.Open(text, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint signature (key %s): %w", v.Name(), err)
	}
	return parseBody(n.Text, origin)
}

// parseBody parses a checkpoint body (formats/log) whose signature was
// checked, of origin if that is not empty, with a SHA-256 root.
func parseBody(text, origin string) (*Checkpoint, error) {
	var c Checkpoint
	if _, err := c.Unmarshal([]byte(text)); err != nil {
		return nil, fmt.Errorf("audit: checkpoint body: %w", err)
	}
	if origin != "" && c.Origin != origin {
		return nil, fmt.Errorf("audit: checkpoint of %q, want %q", c.Origin, origin)
	}
	if len(c.Hash) != HashSize {
		return nil, fmt.Errorf("audit: checkpoint root of %d bytes, want %d", len(c.Hash), HashSize)
	}
	return &c, nil
}

// KeyName is the signing key's name for node id ("tierlog-node-<id>").
func KeyName(nodeID int) string { return "tierlog-node-" + strconv.Itoa(nodeID) }

// Key is a node's signing key: the note signer and its public (verifier)
// key string, "<name>+<hash>+<base64 key>" as note.NewVerifier reads it.
type Key struct {
	note.Signer
	Public string
}

// LoadOrCreateKey reads the private key file at path (note.GenerateKey's
// private key string), or creates it, readable by its owner only and
// fsynced, when it does not exist. name is what a new key is called; a
// key that exists keeps its own name, so one node's signatures go on
// naming one signer (a single node's key, tierlog-node-0, keeps signing
// after the node joins a cluster under another id).
func LoadOrCreateKey(path, name string) (*Key, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		skey, _, gerr := note.GenerateKey(rand.Reader, name)
		if gerr != nil {
			return nil, fmt.Errorf("audit: generate signing key %s: %w", name, gerr)
		}
		if werr := fileutil.WriteFileAtomic(path, []byte(skey+"\n"), 0o600); werr != nil {
			return nil, fmt.Errorf("audit: write signing key %s: %w", path, werr)
		}
		raw, err = []byte(skey), nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read signing key %s: %w", path, err)
	}
	k, err := ParseKey(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("audit: signing key %s: %w", path, err)
	}
	return k, nil
}

// ParseKey reads a private key string (note.GenerateKey's) and derives its
// public key.
func ParseKey(skey string) (*Key, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("not a signing key: %w", err)
	}
	// NewSigner checked the form PRIVATE+KEY+<name>+<hash>+<base64(alg ||
	// seed)>; names hold no "+", base64 may.
	fields := strings.SplitN(skey, "+", 5)
	seed, err := base64.StdEncoding.DecodeString(fields[len(fields)-1])
	if err != nil || len(seed) != 1+ed25519.SeedSize {
		return nil, errors.New("not an Ed25519 signing key")
	}
	pub := ed25519.NewKeyFromSeed(seed[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, err
	}
	return &Key{Signer: s, Public: vkey}, nil
}

// NewVerifier reads a public key string (Key.Public).
func NewVerifier(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("audit: public key %q: %w", vkey, err)
	}
	return v, nil
}

// PublicKeyKey is the bucket key (under the store's root prefix) of the
// public key named name.
func PublicKeyKey(name string) string { return "_tierlog/keys/" + name + ".vkey" }

// PutPublicKey writes k's public key to the bucket (under the store's root).
func PutPublicKey(ctx context.Context, b cold.Bucket, k *Key) error {
	return putObject(ctx, b, PublicKeyKey(k.Name()), []byte(k.Public+"\n"))
}

// GetPublicKey reads the public key named name from the bucket.
func GetPublicKey(ctx context.Context, b cold.Bucket, name string) (note.Verifier, error) {
	data, err := getObject(ctx, b, PublicKeyKey(name))
	if err != nil {
		return nil, err
	}
	return NewVerifier(string(data))
}

// LatestCheckpointKey is the key of a partition's latest checkpoint;
// CheckpointKey that of its checkpoint at size, kept for good.
func LatestCheckpointKey(prefix string) string { return prefix + Dir + "checkpoint" }

// CheckpointKey: see LatestCheckpointKey.
func CheckpointKey(prefix string, size uint64) string {
	return fmt.Sprintf("%s%scheckpoints/%020d", prefix, Dir, size)
}

// ErrForkedCheckpoint: the bucket keeps a checkpoint of the size being
// written with another root. Writing over it would sign a tree that the
// kept checkpoint (which verifiers may hold) is not a prefix of: a fork.
var ErrForkedCheckpoint = errors.New("the bucket keeps a checkpoint of that size with another root")

// PutCheckpoint writes a signed checkpoint of size under prefix: the
// numbered copy first, then the latest, so "latest" never names a
// checkpoint that is not kept. A numbered checkpoint is never replaced by
// one with another root: if the bucket keeps one of size, the same root
// leaves it as it is (a retry, or the same tree signed again) and another
// root fails with ErrForkedCheckpoint, writing nothing. The check reads the
// kept copy before the write (one GET per checkpoint, so per uploaded
// segment) instead of a conditional (If-None-Match) upload: the numbered
// copies go up with the topic's Object Lock retention and legal hold (b
// adds them to Upload), which cold's UploadIf does not carry. The
// partition's single writer (its node, or its leader on a shared prefix)
// makes the read-then-write safe.
func PutCheckpoint(ctx context.Context, b cold.Bucket, prefix string, size uint64, signed []byte) error {
	c, err := PeekCheckpoint(signed)
	if err != nil {
		return err
	}
	if c.Size != size {
		return fmt.Errorf("audit: a checkpoint of tree size %d written as the one of size %d", c.Size, size)
	}
	key := CheckpointKey(prefix, size)
	kept, err := getObject(ctx, b, key)
	switch {
	case errors.Is(err, cold.ErrNotFound):
		if err := putObject(ctx, b, key, signed); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		old, perr := PeekCheckpoint(kept)
		if perr != nil || old.Size != size || !bytes.Equal(old.Hash, c.Hash) {
			var had string
			if perr != nil {
				had = perr.Error()
			} else {
				had = fmt.Sprintf("size %d root %x", old.Size, old.Hash)
			}
			return fmt.Errorf("audit: %s: %w (kept: %s; new: root %x)", key, ErrForkedCheckpoint, had, c.Hash)
		}
	}
	return putObject(ctx, b, LatestCheckpointKey(prefix), signed)
}

// GetCheckpoint reads the signed checkpoint of size under prefix, or the
// latest one if size is negative. It does not check it: see Open.
func GetCheckpoint(ctx context.Context, b cold.Bucket, prefix string, size int64) ([]byte, error) {
	if size < 0 {
		return getObject(ctx, b, LatestCheckpointKey(prefix))
	}
	return getObject(ctx, b, CheckpointKey(prefix, uint64(size)))
}

// ListCheckpoints returns the sizes of the checkpoints kept under prefix,
// in increasing order.
func ListCheckpoints(ctx context.Context, b cold.Bucket, prefix string) ([]uint64, error) {
	var sizes []uint64
	dir := prefix + Dir + "checkpoints/"
	err := b.Iter(ctx, dir, func(key string) error {
		n, err := strconv.ParseUint(strings.TrimPrefix(key, dir), 10, 64)
		if err != nil {
			return nil // not a checkpoint (a temporary file of the backend)
		}
		sizes = append(sizes, n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: list checkpoints under %s: %w", dir, err)
	}
	return sizes, nil
}
