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
// in-memory view, so they never cost a Raft write (only the admission of
// a restarted node's new incarnation does, once per restart).
//
// State changes only through a Command: a versioned JSON union
// ({"v":1,"set_leader":{...}}) of SetClusterID, SetRaftID (the Raft
// group's name, identity.go), RegisterNode, CreateTopic, DeleteTopic,
// AlterTopicConfig, AddPartitions, SetLeader, ShrinkISR, ExpandISR,
// SetRemoteLogStart and CommitGroupOffsets. State.Apply is deterministic and validates before it
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
// two kept). A node whose Dir has no Raft state asks its peers first
// (admission.go, a small probe protocol on the Raft port): when none holds
// more than the bootstrap configuration and a majority answer, it
// bootstraps a new cluster from Options.Peers (this node alone when empty:
// the single-node default); when the cluster exists, the node lost its
// state, and it waits until the Raft leader removes it from the voters and
// adds it back. Snapshots without a raft.db are a lost state too: they
// move to snapshots.lost-<unix time>. Any later Open rejoins from the
// stores and ignores Peers. raft.db's stable store also keeps the Raft
// group's id (identity.go): nodes of two groups formed from the same peers
// refuse each other's Raft connections.
//
// # Use
//
//	n, err := cluster.Open(ctx, cluster.Options{ID: 1, Dir: "data/cluster",
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
// # Controller
//
// StartController runs on every node and acts only while the node is the
// Raft leader. Liveness is in memory: Heartbeat(beat, now) on any node
// says node beat.Node.ID is alive; a node is dead after SessionTimeout
// (serve's session_timeout, 2 s) without one; the controller's own node is
// alive unless retired or restarted (below). Every node gets every node's heartbeats (api/peer), so a node
// that becomes Raft leader judges each by its last beat; only a node it
// never heard from gets SessionTimeout from that moment before failing it
// over. Dead in-sync replicas of live leaders leave the ISR (ShrinkDead).
// Heartbeats carry the node's process incarnation (random per start); the
// state records the one the controller admitted. A node whose beats carry
// another restarted (perhaps on a wiped disk): it counts as dead - out of
// every leadership and ISR - until the controller admits the new
// incarnation, which any later controller then knows.
// Every Tick (200 ms), and on every state or Raft leader change, the
// leader registers itself (Self) and any node whose heartbeats carry
// addresses the state lacks, then applies Failover: partitions of dead
// leaders move to the first alive in-sync replica in assignment order
// (epoch + 1), or to NoLeader (unless the topic allows unclean election);
// an offline partition gets a leader once an ISR member is alive. Refused
// or failed commands are decided again on the next tick. A node that
// heartbeats again is simply alive (a restarted one once admitted); its
// partition leaders, not the controller, take it back into their ISRs.
//
// Controller.Propose applies a command on the Raft leader: locally, or
// through the forwarder (SetForwarder; the peer service sends the command,
// JSON-encoded, to the leader, which runs its own Propose). Requests that
// need the leader's liveness view go the same way: CreateTopic with
// Partitions and no Assignment, AddPartitions with Total and no Assignment
// (the leader assigns over the alive registered nodes), and RetireNode
// (Retire: a controlled shutdown that moves the node's leaderships to
// other alive in-sync replicas and takes it for dead until it heartbeats
// again). These requests never reach the Raft log; the FSM refuses them.
//
// # Use in tierlog serve
//
// `tierlog serve --node-id N --peers ...` (cmd/tierlog/cluster.go) opens
// a Node, starts the Controller, and gives both to the broker
// (broker/cluster.go), which follows the State: it creates and deletes
// its local topics, leads or follows each partition it holds a replica
// of, and proposes ISR changes. The peer gRPC service (api/peer) carries
// heartbeats, forwarded commands and the replicas' data. Consumer groups'
// committed offsets are kept beside the State (groups.go).
//
// # Not done
//
// Partition reassignment, and membership changes after bootstrap (adding
// or removing voters) other than re-admitting a node that lost its Raft
// state, are not here.
package cluster
