// Package cluster keeps tierlog's cluster metadata in a Raft group of the
// nodes, using hashicorp/raft (an existing consensus engine, not a
// home-made one).
//
// # What is replicated
//
// State holds the registered nodes (id and their Raft, gRPC and Kafka
// addresses), the topics (name, optional topic id, replication factor,
// config) and, per partition, the replica assignment, the leader, the
// leader epoch, the in-sync replica set (ISR) and the remote log start.
// Node liveness is not replicated: heartbeats are the controller's
// in-memory view, so they never cost a Raft write.
//
// State changes only through a Command: a versioned JSON union
// ({"v":1,"set_leader":{...}}) of RegisterNode, CreateTopic, DeleteTopic,
// AlterTopicConfig, AddPartitions, SetLeader, ShrinkISR, ExpandISR and
// SetRemoteLogStart. State.Apply is deterministic and validates before it
// changes anything; a refused command (ErrStaleEpoch, ErrNotInISR, ...) is
// a no-op on every node and its error is Node.Apply's result on the leader.
// Invariants after every command: a leader is NoLeader or in its ISR; the
// ISR is a subset of the replicas; leader epochs only grow (every SetLeader
// bumps the epoch, and SetLeader, ISR changes and SetRemoteLogStart name the
// epoch they were decided in and are refused once it has passed); the
// remote log start only grows. A snapshot is the whole State as JSON,
// checked against the invariants on restore.
//
// # Files
//
// Options.Dir holds raft.db (raft-boltdb/v2: the Raft log and the term and
// vote, fsynced on every write) and snapshots/ (raft's file snapshot store,
// two kept). A node whose Dir has no Raft state bootstraps a new cluster
// from Options.Peers (this node alone when empty: the single-node default);
// any later Open rejoins from the stores and ignores Peers.
//
// # Use
//
//	n, err := cluster.Open(cluster.Options{ID: 1, Dir: "data/cluster",
//		RaftAddr: "127.0.0.1:7072", Peers: peers})
//	...
//	a, _ := cluster.AssignReplicas(nodeIDs, partitions, rf, start)
//	err = n.Apply(ctx, cluster.Command{CreateTopic: &cluster.CreateTopic{
//		Name: "orders", ReplicationFactor: rf, Assignment: a}})
//	// err is a *NotLeaderError (errors.Is ErrNotLeader) on a follower.
//
//	ch, cancel := n.Watch() // signals after every change or Raft leader change
//	for range ch {
//		s := n.State()
//		for _, c := range cluster.LeaderChanges(seen, s) { ... }
//		seen = s
//	}
//
// The controller's decisions are pure functions over State
// (AssignReplicas, ElectLeader, Failover), tested without Raft; the Raft
// leader is the controller and turns their results into commands.
//
// # Not done yet
//
// This package is not yet wired into `tierlog serve`: no --node-id/--peers
// flags, no controller loop (heartbeats, liveness, calling Failover,
// registering nodes), no forwarding of commands from followers to the
// leader, and the broker still keeps its own single-node topic metadata.
// Peer data replication (followers fetching, high watermark, acks=all,
// OffsetForLeaderEpoch truncation) and membership changes after bootstrap
// (adding or removing voters) are not here either.
package cluster
