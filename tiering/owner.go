package tiering

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// One prefix has one writer. The cluster marker (cluster.json) records
// the node that owns the prefix and an owner epoch, and is only ever
// written conditionally (If-None-Match: * to create it, If-Match: the
// ETag last read to change it), so two nodes cannot both claim it. A node
// that finds another owner refuses to start unless told to take over;
// every claim, a restart's included, bumps the epoch, so of two processes
// with one node id (a copied data directory) the later one writes. The
// old owner checks the marker before each of its writes (the Store's
// Bucket does, see ownedBucket) and, finding another owner, is fenced:
// every later write fails with ErrFenced, and the daemon stops. A write that passed its check just before the
// takeover landed can still land after it (one per writer in flight):
// the check narrows the window to one request; it cannot close it.

// ErrFenced is returned (wrapped) by every write of a Store whose node no
// longer owns the bucket prefix.
var ErrFenced = errors.New("tiering: fenced off: another node owns the bucket prefix")

// nodeIDFile holds the id of the node whose data directory it is in.
const nodeIDFile = "node-id"

// StoreOptions configure OpenStore.
type StoreOptions struct {
	// Takeover claims a prefix that another node owns, fencing that node
	// off: for a node restoring the prefix while the old owner may still
	// run. Without it such a start is refused.
	Takeover bool
	// Shared opens the prefix as one node of a cluster (see shared.go):
	// every node of ClusterID shares it, no node owns it, and each
	// partition's leader alone writes that partition's objects, fenced by
	// its leader epoch rather than by an owner. Takeover then converts a
	// prefix a single node owns (an upgrade into a cluster) once.
	Shared bool
	// ClusterID is the cluster's id, required with Shared: the marker must
	// record it (or is created with it).
	ClusterID string
	// ClaimTimeout bounds the whole claim of the prefix at start-up, retries
	// included (default 2 minutes): a store that stalls must not hang the
	// start for the sum of every request's retries and stall timeouts.
	ClaimTimeout time.Duration
	Logger       *slog.Logger
	// Registerer takes the store's metrics (nil: none).
	Registerer prometheus.Registerer
}

type clusterMarker struct {
	ClusterID string    `json:"cluster_id"`
	Created   time.Time `json:"created"`
	// Owner is the node that writes the prefix (absent in markers written
	// before ownership was recorded).
	Owner *ownerRecord `json:"owner,omitempty"`
	// Shared: the prefix belongs to the nodes of a cluster (no Owner).
	Shared bool `json:"shared,omitempty"`
}

type ownerRecord struct {
	NodeID  string    `json:"node_id"`
	Epoch   int64     `json:"epoch"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	DataDir string    `json:"data_dir"`
	Since   time.Time `json:"since"`
}

func (o *ownerRecord) String() string {
	return fmt.Sprintf("node %s (host %s, pid %d, data directory %s) at owner epoch %d since %s",
		o.NodeID, o.Host, o.PID, o.DataDir, o.Epoch, o.Since.Format(time.RFC3339))
}

// ownership is what a Store knows of its claim.
type ownership struct {
	b      cold.Bucket // the raw bucket
	me     ownerRecord
	logger *slog.Logger

	mu     sync.Mutex
	etag   string // of the marker as we last saw it ours
	fenced error
	// checked is when the last check that found the prefix ours began.
	checked time.Time
}

// readMarker reads the marker and the ETag of what it read (HEAD before
// GET: if the marker changes in between, a write conditional on the ETag
// fails rather than acting on stale content). found is false if there is
// none.
func readMarker(ctx context.Context, b cold.Bucket) (m clusterMarker, etag string, found bool, err error) {
	var attrs cold.Attributes
	err = retry(ctx, func() (err error) { attrs, err = b.Attributes(ctx, clusterMarkerKey); return err })
	if errors.Is(err, cold.ErrNotFound) {
		return m, "", false, nil
	}
	if err != nil {
		return m, "", false, fmt.Errorf("tiering: read cluster marker in %s: %w", b.Name(), err)
	}
	var raw []byte
	err = retry(ctx, func() error {
		rc, err := b.Get(ctx, clusterMarkerKey)
		if err != nil {
			return err
		}
		defer rc.Close()
		raw, err = io.ReadAll(rc)
		return err
	})
	if errors.Is(err, cold.ErrNotFound) {
		return m, "", false, nil // deleted in between: as if never there
	}
	if err != nil {
		return m, "", false, fmt.Errorf("tiering: read %s/%s: %w", b.Name(), clusterMarkerKey, err)
	}
	if err := json.Unmarshal(raw, &m); err != nil || m.ClusterID == "" {
		return m, "", false, fmt.Errorf("tiering: %s/%s is not a tierlog cluster marker", b.Name(), clusterMarkerKey)
	}
	return m, attrs.ETag, true, nil
}

// claim makes this node the owner of the prefix, returning the cluster id.
// local is the cluster id the data directory records ("" for a new or
// restoring node).
func (o *ownership) claim(ctx context.Context, local, dataDir string, takeover bool) (string, error) {
	cu, ok := o.b.(cold.ConditionalUploader)
	if !ok {
		return "", fmt.Errorf("tiering: bucket %s cannot upload conditionally, which one writer per prefix needs", o.b.Name())
	}
	for range 10 {
		m, etag, found, err := readMarker(ctx, o.b)
		if err != nil {
			return "", err
		}
		switch {
		case found && local != "" && m.ClusterID != local:
			return "", fmt.Errorf("tiering: bucket %s belongs to cluster %s, but data directory %s belongs to cluster %s: one prefix has one writer; use another bucket prefix",
				o.b.Name(), m.ClusterID, dataDir, local)
		case found && m.Shared:
			return "", fmt.Errorf("tiering: bucket %s is shared by the nodes of cluster %s: a single node cannot own it; start this node as a member of that cluster, or use another bucket prefix",
				o.b.Name(), m.ClusterID)
		case found && m.Owner != nil && m.Owner.NodeID == o.me.NodeID:
			// Ours: a restart, our own write whose reply was lost, or a
			// copy of this data directory (a volume snapshot, a cloned
			// VM) that carries the node id. Every start takes a new
			// epoch below, so an older incarnation still running is
			// fenced off at its next write instead of writing on beside
			// this one.
		case found && takeover && m.Owner != nil && local != "":
			// This directory has a history of its own (an old owner
			// restarted with --takeover left on, say): its manifests are
			// behind the bucket, and its start-up sweep would delete
			// segments the current owner committed.
			return "", fmt.Errorf("tiering: bucket %s is owned by %s, and data directory %s holds data of its own, behind the bucket: --takeover restores into an empty data directory only. Move this one aside and start again with an empty --data-dir and --takeover",
				o.b.Name(), m.Owner.String(), dataDir)
		case found && !takeover && (m.Owner != nil || local == ""):
			owner := "a node that is not recorded (the marker predates owner records)"
			if m.Owner != nil {
				owner = m.Owner.String()
			}
			return "", fmt.Errorf("tiering: bucket %s is owned by %s: one prefix has one writer. If that node is gone, or is to stop writing because this node restores its data, start this node with --takeover: the old owner is then fenced off and stops writing to the bucket",
				o.b.Name(), owner)
		}
		next := clusterMarker{ClusterID: local, Created: time.Now().UTC()}
		cond := cold.Condition{IfAbsent: true}
		o.me.Epoch = 1
		if found {
			next.ClusterID, next.Created, cond = m.ClusterID, m.Created, cold.Condition{IfMatch: etag}
			if m.Owner != nil {
				o.me.Epoch = m.Owner.Epoch + 1
			}
		} else if next.ClusterID == "" {
			next.ClusterID = newID() + newID()
		}
		o.me.Since = time.Now().UTC()
		me := o.me
		next.Owner = &me
		raw, _ := json.MarshalIndent(next, "", "  ")
		var attrs cold.Attributes
		err = retry(ctx, func() (err error) {
			attrs, err = cu.UploadIf(ctx, clusterMarkerKey, bytes.NewReader(raw), int64(len(raw)), cond)
			return err
		})
		if errors.Is(err, cold.ErrPreconditionFailed) {
			continue // changed under us (or our own lost reply): read again
		}
		if err != nil {
			return "", fmt.Errorf("tiering: write cluster marker to %s: %w", o.b.Name(), err)
		}
		if found && m.Owner != nil && m.Owner.NodeID != o.me.NodeID {
			o.logger.Warn("took over the bucket prefix: the old owner is fenced off", "bucket", o.b.Name(),
				"old_owner", m.Owner.String(), "epoch", o.me.Epoch)
		}
		o.etag = attrs.ETag
		return next.ClusterID, nil
	}
	return "", fmt.Errorf("tiering: claim %s/%s: it kept changing under us; is another node claiming it?", o.b.Name(), clusterMarkerKey)
}

// check returns nil if this node still owns the prefix, ErrFenced
// (wrapped, and from then on always) if another node took it over, or a
// transient error if the marker could not be read.
func (o *ownership) check(ctx context.Context) error {
	o.mu.Lock()
	fenced, etag := o.fenced, o.etag
	o.mu.Unlock()
	if fenced != nil {
		return fenced
	}
	// One request, no retry of its own: the write it guards is retried by
	// its caller, check included (nested retries multiplied attempts).
	attrs, err := o.b.Attributes(ctx, clusterMarkerKey)
	switch {
	case errors.Is(err, cold.ErrNotFound):
		return o.fence("the owner record %s was deleted", clusterMarkerKey)
	case err != nil:
		return fmt.Errorf("tiering: check ownership of %s: %w", o.b.Name(), err)
	case attrs.ETag == etag:
		return nil
	}
	m, etag, found, err := readMarker(ctx, o.b)
	switch {
	case err != nil:
		return fmt.Errorf("tiering: check ownership of %s: %w", o.b.Name(), err)
	case !found:
		return o.fence("the owner record %s was deleted", clusterMarkerKey)
	case m.Owner == nil || m.Owner.NodeID != o.me.NodeID || m.Owner.Epoch != o.me.Epoch:
		owner := "an unrecorded owner"
		if m.Owner != nil {
			owner = m.Owner.String()
		}
		return o.fence("%s took it over", owner)
	}
	o.mu.Lock()
	o.etag = etag // rewritten with the same owner and epoch
	o.mu.Unlock()
	return nil
}

// checkRecent is check, answered by the last successful one if that began
// less than within ago. Only for writes another owner could not make
// differently: a Merkle tile's bytes follow from the leaves below it, so
// one marker HEAD per batch of tiles (32 in flight) stands for all of
// them instead of doubling their requests. The tiles a fenced node writes
// in that window are at worst rewritten by the owner (tiering/tree.go);
// its checkpoints and manifests are still checked one by one.
func (o *ownership) checkRecent(ctx context.Context, within time.Duration) error {
	o.mu.Lock()
	fenced, last := o.fenced, o.checked
	o.mu.Unlock()
	if fenced != nil {
		return fenced
	}
	if time.Since(last) < within {
		return nil
	}
	began := time.Now()
	if err := o.check(ctx); err != nil {
		return err
	}
	o.mu.Lock()
	if began.After(o.checked) {
		o.checked = began
	}
	o.mu.Unlock()
	return nil
}

func (o *ownership) fence(format string, args ...any) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fenced == nil {
		why := fmt.Sprintf(format, args...)
		o.fenced = fmt.Errorf("%w: bucket %s: %s; this node (%s) writes nothing more to it", ErrFenced, o.b.Name(), why, o.me.String())
		o.logger.Error("fenced off the bucket prefix: another node owns it; tiering stops", "bucket", o.b.Name(), "why", why)
	}
	return o.fenced
}

func (o *ownership) isFenced() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.fenced
}

// ownedBucket is the bucket as the Store writes to it: each upload and
// delete first checks that this node still owns the prefix.
type ownedBucket struct {
	cold.Bucket
	o *ownership
}

func (b ownedBucket) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	if err := b.o.check(ctx); err != nil {
		return cold.Attributes{}, err
	}
	return b.Bucket.Upload(ctx, key, r, size)
}

// UploadIf is a conditional upload, after the same check.
func (b ownedBucket) UploadIf(ctx context.Context, key string, r io.Reader, size int64, cond cold.Condition) (cold.Attributes, error) {
	if err := b.o.check(ctx); err != nil {
		return cold.Attributes{}, err
	}
	return b.Bucket.(cold.ConditionalUploader).UploadIf(ctx, key, r, size, cond)
}

func (b ownedBucket) Delete(ctx context.Context, key string) error {
	if err := b.o.check(ctx); err != nil {
		return err
	}
	return b.Bucket.Delete(ctx, key)
}

// ownedAborter is an ownedBucket on a backend with multipart uploads.
type ownedAborter struct{ ownedBucket }

func (b ownedAborter) AbortIncompleteUploads(ctx context.Context, prefix string, olderThan time.Duration) (int, error) {
	if err := b.o.check(ctx); err != nil {
		return 0, err
	}
	return b.Bucket.(cold.MultipartAborter).AbortIncompleteUploads(ctx, prefix, olderThan)
}

// tileCheck is how long one ownership check stands for the tile writes
// after it (see checkRecent).
const tileCheck = time.Second

// tileBucket is an ownedBucket whose uploads share recent checks.
type tileBucket struct{ ownedBucket }

func (b tileBucket) Upload(ctx context.Context, key string, r io.Reader, size int64) (cold.Attributes, error) {
	if err := b.o.checkRecent(ctx, tileCheck); err != nil {
		return cold.Attributes{}, err
	}
	return b.Bucket.Upload(ctx, key, r, size)
}

// UploadLocked is ownedBucket's, after the shared check.
func (b tileBucket) UploadLocked(ctx context.Context, key string, r io.Reader, size int64, ret cold.Retention, legalHold bool) (cold.Attributes, error) {
	l, err := b.locker()
	if err != nil {
		return cold.Attributes{}, err
	}
	if err := b.o.checkRecent(ctx, tileCheck); err != nil {
		return cold.Attributes{}, err
	}
	return l.UploadLocked(ctx, key, r, size, ret, legalHold)
}

func (o *ownership) bucket() cold.Bucket {
	ob := ownedBucket{Bucket: o.b, o: o}
	if _, ok := o.b.(cold.MultipartAborter); ok {
		return ownedAborter{ob}
	}
	return ob
}

// nodeID returns the id of the node whose data directory dataDir is,
// creating it (durably, before the node claims anything with it).
func nodeID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, nodeIDFile)
	raw, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(raw)) != "" {
		return strings.TrimSpace(string(raw)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	id := newID()
	if err := fileutil.MkdirAllDurable(dataDir); err != nil {
		return "", err
	}
	if err := fileutil.WriteFileAtomic(path, []byte(id+"\n"), 0o644); err != nil {
		return "", err
	}
	return id, nil
}

func registerOwnerMetrics(reg prometheus.Registerer, o *ownership) {
	if reg == nil {
		return
	}
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tierlog_tiering_fenced",
		Help: "1 when another node took over the bucket prefix and this node stopped writing to it.",
	}, func() float64 {
		if o.isFenced() != nil {
			return 1
		}
		return 0
	})
}
