package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tierlog/tierlog/cluster"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// clusterIDFile holds the cluster id of a node without a bucket, written
// once at the first open.
const clusterIDFile = "cluster_id"

// loadClusterID reads the data directory's cluster id, creating one (as
// Kafka's: 16 random bytes, URL-safe base64 without padding) if it has none.
func loadClusterID(dir string) (string, error) {
	path := filepath.Join(dir, clusterIDFile)
	data, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(data)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("broker: read cluster id: %w", err)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := fileutil.WriteFileAtomic(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("broker: write cluster id: %w", err)
	}
	return id, nil
}

// ClusterID is the id Kafka clients see in Metadata and DescribeCluster:
// the bucket prefix's cluster id when the node tiers (tiering.OpenStore
// keeps it in DATA/cluster-id and adopts it on a restore), else the
// node's own from DATA/cluster_id.
func (b *Broker) ClusterID() string {
	if b.store != nil && b.rm == nil {
		return b.store.ClusterID
	}
	return b.clusterID
}

// waitClusterID waits until the cluster metadata names the cluster (its
// first controller does, once a quorum elected it).
func waitClusterID(ctx context.Context, n *cluster.Node) (string, error) {
	watch, unwatch := n.Watch()
	defer unwatch()
	for {
		if id := n.View().ClusterID; id != "" {
			return id, nil
		}
		select {
		case <-watch:
		case <-ctx.Done():
			return "", fmt.Errorf("broker: waiting for the cluster to elect a controller and name itself: %w", ctx.Err())
		}
	}
}
