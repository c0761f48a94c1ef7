package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tierlog/tierlog/audit"
	"github.com/tierlog/tierlog/tiering"
)

type verifyFlags struct {
	bucket      string
	publicKey   string
	checkpoints []string
}

func newVerifyCmd() *cobra.Command {
	var fl verifyFlags
	cmd := &cobra.Command{
		Use:   "verify --bucket URL [TOPIC [PARTITION]] --public-key KEY",
		Short: "Check a bucket's whole history against its signed checkpoints, with no server",
		Long: `Check that the history in the bucket is the history the node signed: nothing
altered, dropped, reordered or rolled back - also by someone with write access
to the bucket who fixed up every checksum. Nothing is written to the bucket and
no server is needed. Without TOPIC every topic is checked, without PARTITION
every partition of TOPIC: the partitions the topic records name, every one
whose prefix holds signed checkpoints, and every one a --checkpoint names.
Only the keys and the --checkpoint files are trusted: a topic record, cluster
marker or manifest that disagrees with the signed history is a finding.

For each partition it
  - checks every kept checkpoint (tlog/checkpoints/*) and the latest one:
    signed by a key given with --public-key, naming this partition's log;
  - recomputes the Merkle tree from the records of the segments the manifest
    names, reading each object once (its SHA-256 must be the manifest's), and
    compares the root at every checkpoint's and manifest entry's tree size;
  - compares every tile the recomputed tree has with the stored tile;
  - verifies a consistency proof from the tiles between consecutive
    checkpoints (the later extends the earlier);
  - checks that the segments reach the newest checkpoint's tree size (a
    rollback or truncation leaves signed offsets with no segment).
A disagreement is reported with the first offset and the object it concerns.

History below the first segment the manifest keeps (deleted by retention)
cannot be recomputed: the tree below it is taken from the tiles and the
checkpoints below it are checked for signature and consistency only. A
rollback that also deleted the newer checkpoints is found only against a
checkpoint kept outside the bucket: pass it with --checkpoint.

KEY is a public key as 'tierlog checkpoint --public-key' prints it
(<name>+<hash>+<key>), or a file of such keys, one per line; a checkpoint
signed by any of them is accepted.

A partition with committed segments but no valid signed checkpoint is a
finding too (its history was deleted, or tiered before it was signed).

Exit codes: 0 every partition verified, 1 a disagreement was found, 2 usage
error or the bucket could not be read (nothing concluded).`,
		Args: maxArgs("TOPIC", "PARTITION"),
	}
	f := cmd.Flags()
	f.StringVar(&fl.bucket, "bucket", "", "the bucket URL (file:///PATH, s3://BUCKET/PREFIX?..., minio://HOST:PORT/BUCKET/PREFIX)")
	f.StringVar(&fl.publicKey, "public-key", "", "the public key checkpoints must be signed by, or a file of keys, one per line")
	f.StringArrayVar(&fl.checkpoints, "checkpoint", nil, "a signed checkpoint kept outside the bucket (a file) the archive must still extend; repeatable")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		err := verify(cmd, &fl, args)
		if _, isUsage := err.(*usageError); err != nil && !isUsage {
			if _, coded := err.(*exitCodeError); !coded {
				err = &exitCodeError{code: exitUsage, err: err}
			}
		}
		return err
	})
	return cmd
}

func verify(cmd *cobra.Command, fl *verifyFlags, args []string) error {
	switch {
	case fl.bucket == "":
		return usageErrorf("--bucket is required: the bucket URL, as 'tierlog serve --bucket' takes it")
	case fl.publicKey == "":
		return usageErrorf("--public-key is required: the key checkpoints are signed with ('tierlog checkpoint --public-key' prints it), or a file of keys")
	}
	keys, err := audit.LoadPublicKeys(fl.publicKey)
	if err != nil {
		return usageErrorf("--public-key: %v", err)
	}
	opts := tiering.VerifyOptions{Keys: keys}
	for _, path := range fl.checkpoints {
		text, err := os.ReadFile(path)
		if err != nil {
			return usageErrorf("--checkpoint: %v", err)
		}
		c, err := audit.OpenWith(text, "", keys)
		if err != nil {
			return usageErrorf("--checkpoint %s: %v", path, err)
		}
		opts.Trusted = append(opts.Trusted, tiering.TrustedCheckpoint{Name: path, Checkpoint: c})
	}
	topic, partition := "", int32(-1)
	if len(args) > 0 {
		topic = args[0]
	}
	if len(args) == 2 {
		if partition, err = parsePartition(args[1]); err != nil {
			return err
		}
	}

	ctx := cmd.Context()
	archive, _, closeArchive, err := openArchive(cmd, fl.bucket)
	if err != nil {
		return err
	}
	defer closeArchive()
	// The topic records, the partitions with signed checkpoints and the
	// trusted checkpoints' partitions: the records are unsigned hints.
	targets, err := archive.VerifyTargets(ctx, topic, partition, opts.Trusted)
	if err != nil {
		return err
	}

	out := cmd.OutOrStdout()
	failed := 0
	for _, t := range targets {
		name := fmt.Sprintf("%s/%d", t.Topic, t.Partition)
		pr := newProgress(cmd.ErrOrStderr(), name)
		opts.Progress = pr.update
		rep, err := archive.Verify(ctx, t, opts)
		pr.done()
		if err != nil {
			return fmt.Errorf("verify %s: %w (nothing concluded)", name, err)
		}
		printReport(out, name, rep)
		if len(rep.Findings) > 0 {
			failed++
		}
	}
	if failed > 0 {
		return &exitCodeError{code: exitError, err: fmt.Errorf("verify: %d of %d partitions disagree with their signed history", failed, len(targets))}
	}
	fmt.Fprintf(out, "verified %d partitions: every record, tile and checkpoint agrees\n", len(targets))
	return nil
}

// printReport prints one partition's result.
func printReport(w io.Writer, name string, rep *tiering.VerifyReport) {
	status := "OK"
	if len(rep.Findings) > 0 {
		status = fmt.Sprintf("FAILED (%d findings)", len(rep.Findings))
	}
	fmt.Fprintf(w, "%s: %s: offsets %d to %d recomputed from %d segments (%d records, %s); %d roots compared, %d tiles, %d consistency proofs; %d signed checkpoints (newest: tree size %d",
		name, status, rep.From, rep.End-1, rep.Segments, rep.Records, humanize.IBytes(uint64(rep.Bytes)), rep.Roots, rep.Tiles, rep.Proofs, rep.Checkpoints, rep.Latest)
	if rep.BelowStart > 0 {
		fmt.Fprintf(w, "; %d below the archive's start: signature and consistency only", rep.BelowStart)
	}
	fmt.Fprintln(w, ")")
	for i, f := range rep.Findings {
		label := "  also:"
		if i == 0 {
			label = "  FIRST DISAGREEMENT:"
		}
		fmt.Fprintf(w, "%s offset %d, object %s: %s\n", label, f.Offset, f.Object, f.Problem)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// progress shows a partition's verification on stderr: a bar redrawn in
// place on a terminal, a plain line every few seconds elsewhere.
type progress struct {
	w        io.Writer
	name     string
	tty      bool
	start    time.Time
	mu       sync.Mutex
	last     time.Time
	drawn    bool
	logEvery time.Duration
}

func newProgress(w io.Writer, name string) *progress {
	f, isFile := w.(*os.File)
	p := &progress{w: w, name: name, tty: isFile && term.IsTerminal(int(f.Fd())), start: time.Now(), logEvery: 5 * time.Second}
	p.last = p.start
	return p
}

func (p *progress) update(records, bytes, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	every := p.logEvery
	if p.tty {
		every = 200 * time.Millisecond
	}
	if now.Sub(p.last) < every {
		return
	}
	p.last = now
	secs := max(now.Sub(p.start).Seconds(), 1e-3)
	rate := fmt.Sprintf("%d records, %s, %s/s, %.0f records/s", records, humanize.IBytes(uint64(bytes)), humanize.IBytes(uint64(float64(bytes)/secs)), float64(records)/secs)
	if !p.tty {
		fmt.Fprintf(p.w, "verify %s: %s\n", p.name, rate)
		return
	}
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = min(float64(bytes)/float64(total), 1)
	}
	n := int(frac * width)
	fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %s ", p.name, strings.Repeat("=", n), strings.Repeat(" ", width-n), frac*100, rate)
	p.drawn = true
}

// done clears the bar.
func (p *progress) done() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
