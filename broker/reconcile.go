package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tierlog/tierlog/cluster"
	"github.com/tierlog/tierlog/internal/fileutil"
)

// In a cluster the topics are the metadata's: an admin call proposes the
// change to the controller and waits for this node to follow it; every
// node follows each change on its own (reconcileTopics), creating,
// altering, growing and deleting its local copies.

// importedMarkerFile, in the data directory, says the node's topics from
// before it joined a cluster were put into the cluster metadata. From then
// on a local topic the metadata lacks was deleted while the node was away.
const importedMarkerFile = "cluster-imported"

// proposeTimeout bounds one metadata change's round trip to the
// controller.
const proposeTimeout = 15 * time.Second

// importLocalTopics puts the topics of a data directory that predates the
// cluster into the metadata, with this node as their only replica, once:
// a single node upgraded to a cluster keeps everything it held.
func (rm *replicaManager) importLocalTopics() (imported []*topic, err error) {
	marker := filepath.Join(rm.b.opts.Dir, importedMarkerFile)
	if _, err := os.Stat(marker); err == nil {
		return nil, nil
	}
	for _, t := range rm.b.topicList() {
		n := len(t.partitions())
		if ct, ok := rm.o.Node.View().Topics[t.name]; ok {
			if err := rm.adoptImported(t, ct); err != nil {
				return nil, err
			}
			imported = append(imported, t)
			continue
		}
		// The id is recorded locally before the proposal, so a retry (the
		// proposal's answer lost, the node restarted) proposes the same
		// topic and recognises it.
		if t.id == "" {
			if err := rm.b.setTopicID(t, newTopicID(), 1); err != nil {
				return nil, err
			}
		}
		assign := make([][]int32, n)
		for i := range assign {
			assign[i] = []int32{rm.self}
		}
		ctx, cancel := context.WithTimeout(rm.ctx, time.Minute)
		err := rm.o.Controller.Propose(ctx, cluster.Command{CreateTopic: &cluster.CreateTopic{Name: t.name, ID: t.id,
			ReplicationFactor: 1, Config: t.settings.Load().overrides, Assignment: assign}})
		cancel()
		if errors.Is(err, cluster.ErrTopicExists) {
			if ct, ok := rm.o.Node.View().Topics[t.name]; ok {
				err = rm.adoptImported(t, ct)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("broker: put topic %s into the cluster metadata: %w", t.name, err)
		}
		imported = append(imported, t)
		rm.log.Info("topic imported into the cluster", "topic", t.name, "partitions", n, "replica", rm.self)
	}
	return imported, fileutil.WriteFileAtomic(marker, nil, 0o644)
}

// adoptImported accepts a cluster topic of a local topic's name as that
// topic's import: one this node proposed (its recorded id), or, for a
// local topic without one, one with this node as the only replica of each
// of its partitions (an import whose id was not recorded). Any other is a
// different topic of the same name: the node does not settle (nor delete
// anything) until an operator renames or deletes one of them.
func (rm *replicaManager) adoptImported(t *topic, ct *cluster.Topic) error {
	if t.id != "" && ct.ID == t.id {
		return nil
	}
	mine := t.id == "" && len(ct.Partitions) == len(t.partitions())
	for _, p := range ct.Partitions {
		mine = mine && len(p.Replicas) == 1 && p.Replicas[0] == rm.self
	}
	if !mine {
		return fmt.Errorf("broker: topic %s of this node's data directory and the cluster's topic %s (id %s) are different topics: delete or rename one", t.name, ct.Name, ct.ID)
	}
	return rm.b.setTopicID(t, ct.ID, 1)
}

// topicList returns the live topics.
func (b *Broker) topicList() []*topic {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return slices.Collect(maps.Values(b.topics))
}

// setTopicID records the cluster's id and replication factor of a local
// topic in its topic.json.
func (b *Broker) setTopicID(t *topic, id string, rf int) error {
	t.metaMu.Lock()
	defer t.metaMu.Unlock()
	st := t.settings.Load()
	m := topicMeta{Name: t.name, Partitions: int32(len(t.partitions())), Config: st.overrides, Created: t.created, ReplicationFactor: rf, ID: id}
	if err := writeTopicMeta(b.topicDir(t.name), m); err != nil {
		return fmt.Errorf("broker: topic %s: %w", t.name, err)
	}
	t.id, t.rf = id, rf
	return nil
}

func newTopicID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// reconcileTopics makes the local topics those of the metadata. Failures
// are logged; the next pass (a second later at most) retries.
func (rm *replicaManager) reconcileTopics(s *cluster.State) (ok bool) {
	b := rm.b
	ok = rm.settled.Load()
	for _, t := range rm.b.topicList() {
		if !rm.settled.Load() {
			break
		}
		if ct, found := s.Topics[t.name]; found && ct.ID == t.id {
			continue
		}
		// Deleted while this node was away, or deleted and created again.
		if err := b.deleteLocal(t.name); err != nil && !errors.Is(err, ErrUnknownTopic) {
			rm.log.Warn("cannot delete topic the cluster deleted; retrying", "topic", t.name, "err", err)
			ok = false
		} else {
			rm.log.Info("topic deleted, as the cluster did", "topic", t.name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.Topics)) {
		ct := s.Topics[name]
		t, err := b.topic(name)
		if err != nil {
			m := topicMeta{Name: name, Partitions: int32(len(ct.Partitions)), Config: maps.Clone(ct.Config),
				ReplicationFactor: ct.ReplicationFactor, ID: ct.ID}
			if m.Config == nil {
				m.Config = map[string]string{}
			}
			if _, err := b.createLocal(m); err != nil && !errors.Is(err, ErrTopicExists) {
				rm.log.Warn("cannot create topic the cluster created; retrying", "topic", name, "err", err)
				ok = false
			}
			continue
		}
		if t.id != ct.ID {
			ok = false // the older topic's deletion is still pending
			continue
		}
		if n := int32(len(ct.Partitions)); n > int32(len(t.partitions())) {
			if _, err := b.addLocal(name, n); err != nil {
				rm.log.Warn("cannot add partitions the cluster added; retrying", "topic", name, "err", err)
				ok = false
			}
		}
		have := t.settings.Load().overrides
		if !maps.Equal(have, ct.Config) {
			var del []string
			for k := range have {
				if _, kept := ct.Config[k]; !kept {
					del = append(del, k)
				}
			}
			if _, err := b.alterLocal(name, maps.Clone(ct.Config), del); err != nil {
				rm.log.Warn("cannot apply topic config the cluster set; retrying", "topic", name, "err", err)
				ok = false
			}
		}
	}
	return ok
}

// propose sends a metadata change to the controller.
func (rm *replicaManager) propose(cmd cluster.Command) error {
	ctx, cancel := context.WithTimeout(rm.ctx, proposeTimeout)
	defer cancel()
	err := rm.o.Controller.Propose(ctx, cmd)
	switch {
	case errors.Is(err, cluster.ErrTopicExists):
		return fmt.Errorf("%w: %v", ErrTopicExists, err)
	case errors.Is(err, cluster.ErrUnknownTopic):
		return fmt.Errorf("%w: %v", ErrUnknownTopic, err)
	}
	return err
}

func (rm *replicaManager) createTopic(name string, partitions int32, rf int, config map[string]string) (TopicInfo, error) {
	// The voters, not the registered nodes: this node's copy of the
	// registrations may lag the controller's (a node that just started).
	nodes := rm.o.Node.Voters()
	if rf <= 0 {
		rf = rm.b.DefaultReplicationFactor()
	}
	if rf > nodes {
		return TopicInfo{}, fmt.Errorf("%w: %d replicas asked, the cluster has %d nodes", ErrInvalidReplication, rf, nodes)
	}
	id := newTopicID()
	ctx, cancel := context.WithTimeout(rm.ctx, proposeTimeout)
	err := rm.o.Controller.CreateTopic(ctx, name, id, partitions, rf, config)
	cancel()
	if errors.Is(err, cluster.ErrTopicExists) {
		return TopicInfo{}, fmt.Errorf("%w: %s", ErrTopicExists, name)
	}
	if errors.Is(err, cluster.ErrInvalidCommand) {
		// Fewer nodes alive than replicas asked for (the controller's view).
		return TopicInfo{}, fmt.Errorf("%w: %v", ErrInvalidReplication, err)
	}
	if err != nil {
		return TopicInfo{}, err
	}
	var info TopicInfo
	err = rm.waitFor("create "+name, func() bool {
		t, err := rm.b.topic(name)
		if err != nil || t.id != id {
			return false
		}
		info = t.info()
		return true
	})
	if err == nil {
		rm.waitOthers(name)
	}
	return info, err
}

// othersWait bounds how long an admin change waits for the other alive
// nodes to follow it.
const othersWait = 5 * time.Second

// waitOthers waits, at most othersWait, until every node the controller
// hears from has reconciled its topics with the metadata as this node sees
// it now: a client told "created" then finds the topic on any node it
// asks. A node that lags past it only delays clients, which retry.
func (rm *replicaManager) waitOthers(what string) {
	target := rm.o.Node.View().Index
	deadline := time.Now().Add(othersWait)
	for time.Now().Before(deadline) && rm.ctx.Err() == nil {
		done := map[int32]uint64(rm.o.Controller.Reconciled())
		behind := false
		for id := range rm.o.Controller.Alive() {
			if done[id] < target {
				behind = true
			}
		}
		if !behind {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	rm.log.Info("admin change: not every node followed it within the wait; clients retry meanwhile", "change", what, "index", target)
}

func (rm *replicaManager) deleteTopic(name string) error {
	if _, ok := rm.o.Node.View().Topics[name]; !ok {
		return fmt.Errorf("%w: %s", ErrUnknownTopic, name)
	}
	if err := rm.propose(cluster.Command{DeleteTopic: &cluster.DeleteTopic{Name: name}}); err != nil {
		return err
	}
	return rm.waitFor("delete "+name, func() bool {
		_, err := rm.b.topic(name)
		return err != nil
	})
}

func (rm *replicaManager) alterTopic(name string, set map[string]string, del []string) (TopicInfo, error) {
	if err := rm.propose(cluster.Command{AlterTopicConfig: &cluster.AlterTopicConfig{Name: name, Set: set, Delete: del}}); err != nil {
		return TopicInfo{}, err
	}
	var info TopicInfo
	err := rm.waitFor("alter "+name, func() bool {
		ct, ok := rm.o.Node.View().Topics[name]
		t, err := rm.b.topic(name)
		if !ok || err != nil || !maps.Equal(t.settings.Load().overrides, ct.Config) {
			return false
		}
		info = t.info()
		return true
	})
	return info, err
}

func (rm *replicaManager) addPartitions(name string, total int32) (TopicInfo, error) {
	if err := rm.propose(cluster.Command{AddPartitions: &cluster.AddPartitions{Name: name, Total: total}}); err != nil {
		return TopicInfo{}, err
	}
	var info TopicInfo
	err := rm.waitFor("add partitions to "+name, func() bool {
		t, err := rm.b.topic(name)
		if err != nil || int32(len(t.partitions())) < total {
			return false
		}
		info = t.info()
		return true
	})
	if err == nil {
		rm.waitOthers(name)
	}
	return info, err
}
