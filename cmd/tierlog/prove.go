package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tierlog/tierlog/api/grpcapi"
	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/fileutil"
	"github.com/tierlog/tierlog/tiering"
)

// prover makes a partition's proofs: from a node over gRPC (serverProver)
// or straight from a bucket (bucketProver). Both end in tiering.Prover -
// the node runs it on its partition, the bucket reader on the archive - so
// a proof made either way is the same file.
type prover interface {
	inclusion(ctx context.Context, topic string, partition int32, offset int64) (*audit.InclusionFile, error)
	consistency(ctx context.Context, topic string, partition int32, size1, size2 uint64) (*audit.ConsistencyFile, error)
	checkpoint(ctx context.Context, topic string, partition int32, size uint64) ([]byte, error)
	close()
}

// proverFlags selects the prover: --bucket, or the --server of the root.
type proverFlags struct {
	client *clientFlags
	bucket string
}

func addProverFlags(cmd *cobra.Command) *proverFlags {
	pf := &proverFlags{client: addClientFlags(cmd)}
	cmd.Flags().StringVar(&pf.bucket, "bucket", "", "make it straight from this bucket URL, with no server (as 'tierlog bucket consume --bucket' takes it)")
	return pf
}

func (pf *proverFlags) open(cmd *cobra.Command) (prover, error) {
	if pf.bucket != "" {
		a, b, closeArchive, err := openArchive(cmd, pf.bucket)
		if err != nil {
			return nil, err
		}
		return &bucketProver{a: a, b: b, closeArchive: closeArchive}, nil
	}
	c, closeConn, err := pf.client.dial()
	if err != nil {
		return nil, err
	}
	return &serverProver{c: c, cf: pf.client, closeConn: closeConn}, nil
}

type serverProver struct {
	c         tierlogv1.TierLogClient
	cf        *clientFlags
	closeConn func()
}

func (s *serverProver) inclusion(ctx context.Context, topic string, partition int32, offset int64) (*audit.InclusionFile, error) {
	resp, err := s.c.Prove(ctx, &tierlogv1.ProveRequest{Topic: topic, Partition: partition, Offset: offset})
	if err != nil {
		return nil, s.cf.rpcError("prove", err)
	}
	return grpcapi.InclusionFileFromProto(topic, partition, resp), nil
}

func (s *serverProver) consistency(ctx context.Context, topic string, partition int32, size1, size2 uint64) (*audit.ConsistencyFile, error) {
	resp, err := s.c.ProveConsistency(ctx, &tierlogv1.ProveConsistencyRequest{Topic: topic, Partition: partition, OldSize: size1, NewSize: size2})
	if err != nil {
		return nil, s.cf.rpcError("prove consistency", err)
	}
	return audit.NewConsistencyFile(topic, partition, []byte(resp.GetOldCheckpoint()), []byte(resp.GetNewCheckpoint()), resp.GetConsistencyProof()), nil
}

func (s *serverProver) checkpoint(ctx context.Context, topic string, partition int32, size uint64) ([]byte, error) {
	resp, err := s.c.Checkpoint(ctx, &tierlogv1.CheckpointRequest{Topic: topic, Partition: partition, Size: size})
	if err != nil {
		return nil, s.cf.rpcError("checkpoint", err)
	}
	return []byte(resp.GetCheckpoint()), nil
}

func (s *serverProver) close() { s.closeConn() }

type bucketProver struct {
	a            *tiering.Archive
	b            cold.Bucket
	closeArchive func()
}

// partition is the prover of a partition the bucket holds.
func (bp *bucketProver) partition(ctx context.Context, topic string, partition int32) (*tiering.Prover, error) {
	if _, err := archivePartitions(ctx, bp.a, bp.b, topic, partition); err != nil {
		return nil, err
	}
	ap, err := bp.a.Partition(ctx, topic, partition)
	if err != nil {
		return nil, err
	}
	return ap.Prover(), nil
}

func (bp *bucketProver) inclusion(ctx context.Context, topic string, partition int32, offset int64) (*audit.InclusionFile, error) {
	pr, err := bp.partition(ctx, topic, partition)
	if err != nil {
		return nil, err
	}
	return pr.Inclusion(ctx, offset)
}

func (bp *bucketProver) consistency(ctx context.Context, topic string, partition int32, size1, size2 uint64) (*audit.ConsistencyFile, error) {
	pr, err := bp.partition(ctx, topic, partition)
	if err != nil {
		return nil, err
	}
	return pr.Consistency(ctx, size1, size2)
}

func (bp *bucketProver) checkpoint(ctx context.Context, topic string, partition int32, size uint64) ([]byte, error) {
	pr, err := bp.partition(ctx, topic, partition)
	if err != nil {
		return nil, err
	}
	return pr.Checkpoint(ctx, size)
}

func (bp *bucketProver) close() { bp.closeArchive() }

func newProveCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "prove TOPIC PARTITION OFFSET",
		Short: "Write the proof that a record is in a partition's history",
		Long: `Write, as one JSON file, the record at OFFSET, its inclusion proof in the
partition's Merkle tree and the signed checkpoint of that tree: the file an
auditor checks with 'tierlog verify-proof FILE --public-key KEY', with no
access to the bucket or a server.

The proof is made against the tree after the partition's last tiered segment
(the tree grows as segments are tiered: an offset not tiered yet cannot be
proved yet). It is made by the node (--server) or straight from the bucket
(--bucket URL, no server); both give the same file.

Exit codes: 0 written, 1 the proof cannot be made (the message says why),
2 usage error.`,
		Args: exactArgs("TOPIC", "PARTITION", "OFFSET"),
	}
	pf := addProverFlags(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the proof to this file (default: standard output)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		partition, err := parsePartition(args[1])
		if err != nil {
			return err
		}
		offset, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil || offset < 0 {
			return usageErrorf("OFFSET %q: want an offset, 0 or more", args[2])
		}
		p, err := pf.open(cmd)
		if err != nil {
			return err
		}
		defer p.close()
		f, err := p.inclusion(cmd.Context(), args[0], partition, offset)
		if err != nil {
			return err
		}
		return writeProof(cmd, out, f)
	})
	return cmd
}

func newProveConsistencyCmd() *cobra.Command {
	var out, fromFile string
	var from, to uint64
	cmd := &cobra.Command{
		Use:   "prove-consistency TOPIC PARTITION --from SIZE|--from-checkpoint FILE [--to SIZE]",
		Short: "Write the proof that a partition's history extends an earlier checkpoint",
		Long: `Write, as one JSON file, the proof that the partition's log at one signed
checkpoint extends the log at an earlier one: nothing the earlier checkpoint
signed was altered, dropped or reordered since. 'tierlog verify-proof FILE
--public-key KEY' checks both signatures and the proof.

  --from SIZE             the checkpoint the node made at tree size SIZE
  --from-checkpoint FILE  a checkpoint kept from before (as 'tierlog
                          checkpoint TOPIC PARTITION' printed it): the proof
                          is made against that copy, so a bucket whose
                          checkpoints were rewritten cannot pass
  --to SIZE               the later checkpoint (default: the latest)

Checkpoints are made after each tiered segment; a size none was made at says
where the nearest are.

Exit codes: 0 written, 1 the proof cannot be made (or the log does not
extend FILE), 2 usage error.`,
		Args: exactArgs("TOPIC", "PARTITION"),
	}
	pf := addProverFlags(cmd)
	f := cmd.Flags()
	f.Uint64Var(&from, "from", 0, "tree size of the earlier checkpoint")
	f.StringVar(&fromFile, "from-checkpoint", "", "a file holding the earlier checkpoint")
	f.Uint64Var(&to, "to", 0, "tree size of the later checkpoint (default: the latest)")
	f.StringVarP(&out, "output", "o", "", "write the proof to this file (default: standard output)")
	cmd.MarkFlagsMutuallyExclusive("from", "from-checkpoint")
	cmd.MarkFlagsOneRequired("from", "from-checkpoint")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		topic := args[0]
		partition, err := parsePartition(args[1])
		if err != nil {
			return err
		}
		var kept []byte
		if fromFile != "" {
			if kept, err = os.ReadFile(fromFile); err != nil {
				return err
			}
			c, err := audit.PeekCheckpoint(kept)
			if err != nil {
				return fmt.Errorf("--from-checkpoint %s: %w", fromFile, err)
			}
			if _, t, p, err := audit.ParseOrigin(c.Origin); err != nil || t != topic || p != partition {
				return fmt.Errorf("--from-checkpoint %s is a checkpoint of %q, not of %s/%d", fromFile, c.Origin, topic, partition)
			}
			from = c.Size
		}
		if from == 0 || to != 0 && from > to {
			return usageErrorf("--from %d --to %d: want 0 < from <= to", from, to)
		}
		p, err := pf.open(cmd)
		if err != nil {
			return err
		}
		defer p.close()
		cf, err := p.consistency(cmd.Context(), topic, partition, from, to)
		if err != nil {
			return err
		}
		if kept != nil {
			// The proof is against the kept copy: a log that does not
			// extend it (a rewritten history) is reported here, and
			// verify-proof would refuse the file.
			cf.OldCheckpoint = string(kept)
			if err := checkExtends(cf); err != nil {
				return fmt.Errorf("the log of %s/%d does not extend the checkpoint in %s: %w", topic, partition, fromFile, err)
			}
		}
		return writeProof(cmd, out, cf)
	})
	return cmd
}

// checkExtends checks a consistency file's proof between its checkpoints'
// roots, without their signatures (verify-proof checks those with a key).
func checkExtends(cf *audit.ConsistencyFile) error {
	older, err := audit.PeekCheckpoint([]byte(cf.OldCheckpoint))
	if err != nil {
		return err
	}
	newer, err := audit.PeekCheckpoint([]byte(cf.NewCheckpoint))
	if err != nil {
		return err
	}
	return audit.VerifyConsistency(older.Size, newer.Size, cf.ConsistencyProof, older.Hash, newer.Hash)
}

func newVerifyProofCmd() *cobra.Command {
	var keys string
	cmd := &cobra.Command{
		Use:   "verify-proof FILE --public-key KEY",
		Short: "Check a proof file offline, with nothing but the signer's public key",
		Long: `Check a proof file written by 'tierlog prove' or 'tierlog prove-consistency',
with no bucket and no server: the file and the public key are all it needs.

An inclusion proof: the record re-encoded must be the leaf, the leaf's hash
and the proof must give the root of a checkpoint of the file's topic and
partition signed by KEY. A consistency proof: both checkpoints signed by KEY,
of the same log, the later one extending the earlier.

KEY is a public key ('tierlog checkpoint --public-key' prints a node's) or a
file holding keys, one a line (a cluster's nodes each sign with their own).

Exit codes: 0 the proof is valid, 1 it is not (the reason is printed) or the
file cannot be read, 2 usage error.`,
		Args: exactArgs("FILE"),
	}
	cmd.Flags().StringVar(&keys, "public-key", "", "the signer's public key, or a file of public keys (one a line)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if keys == "" {
			return usageErrorf("--public-key is required: the public key of the node that signed the checkpoint ('tierlog checkpoint --public-key' prints it)")
		}
		vs, err := audit.LoadPublicKeys(keys)
		if err != nil {
			return usageErrorf("--public-key: %v", err)
		}
		raw, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		f, err := audit.ParseProofFile(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", args[0], err)
		}
		if err := f.Verify(vs); err != nil {
			return fmt.Errorf("%s: invalid proof: %w", args[0], err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "valid: %s\n", f)
		return nil
	})
	return cmd
}

// writeProof writes a proof file as indented JSON to out, or to stdout.
func writeProof(cmd *cobra.Command, out string, f audit.ProofFile) error {
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	raw = append(raw, '\n')
	if out == "" {
		_, err := cmd.OutOrStdout().Write(raw)
		return err
	}
	if err := fileutil.WriteFileAtomic(out, raw, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %s\n", out, f)
	return nil
}

// parsePartition reads a PARTITION argument.
func parsePartition(s string) (int32, error) {
	p, err := strconv.ParseInt(s, 10, 32)
	if err != nil || p < 0 {
		return 0, usageErrorf("PARTITION %q: want a partition number, 0 or more", s)
	}
	return int32(p), nil
}
