package tiering

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// TestVersioningPermissionWarningOnlyForDeletions: the README's
// Permissions paragraph says that without s3:GetBucketVersioning "the node
// logs so (once per partition and sweep, and once per prefix of a topic's
// deletion)". But every purgeAll has a bucketVersioning of its own, and
// dropPartials calls purgeAll for each superseded partial-tile folder
// after every segment upload (daemon.go, tree.go): a node that follows
// the README (GetBucketVersioning left out, as "optional") logs the WARN
// at every upload that fills a tile - steady-state tiering, no sweep
// deleting anything, no topic deleted. Here: no orphan, no deletion, and
// the warning comes once per superseded folder.
//
// Fix: ask once per Store (or per Daemon) and keep the "unknown" answer
// (and its warning) for the process, or at least share one
// bucketVersioning across a dropPartials call and log the warning only
// once per node; otherwise correct the README ("and at every segment
// upload that supersedes partial tiles").
func TestVersioningPermissionWarningOnlyForDeletions(t *testing.T) {
	m := testutil.StartMinIO(t)
	name := m.NewBucket(t)
	ak, sk, token := m.Restricted(t, name, nodeActions...)
	e := newEnvAs(t, m, name, "minio", cold.Credentials{AccessKeyID: ak, SecretAccessKey: sk, SessionToken: token})
	var logs testutil.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	e.store.logger = logger
	e.daemon.opts.Logger = logger
	e.signWith(filepath.Join(t.TempDir(), "signing.key"))
	p := e.openLocked("warned", ObjectLock{})
	for range 3 {
		produce(t, p, 150)
		e.settle(p)
	}
	const warning = "may not read the bucket's versioning status"
	n := strings.Count(logs.String(), warning)
	t.Logf("%d warnings %q (log lines about orphans: %d, about topic deletion: %d)", n, warning,
		strings.Count(logs.String(), "orphan"), strings.Count(logs.String(), "topic deletion"))
	if n > 1 {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, warning) {
				t.Logf("%.300s", l)
			}
		}
		t.Errorf("tiering a topic (no orphan swept, no topic deleted) logged the s3:GetBucketVersioning warning %d times; the README says once per partition and sweep, and once per prefix of a topic's deletion", n)
	}
}
