package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tierlog/tierlog/api/peer"
	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
	"github.com/tierlog/tierlog/cluster"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect a replicated cluster"}
	cmd.AddCommand(newClusterStatusCmd())
	return cmd
}

func newClusterStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the nodes, the controller and every partition's leader, epoch, in-sync replicas and lag",
		Long: `Show the cluster as the node --server names sees it: the nodes and
whether the controller hears their heartbeats, the controller, and per
partition its replicas, leader, leader epoch and in-sync set (ISR); then,
asked of each partition's leader, its high watermark, log end and each
follower's log end (lag = leader's log end - follower's; ? for a follower
that has not fetched from this leader, e.g. one that is down).`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the status as JSON")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if f := cmd.Flag(serverFlag); f != nil {
			cf.server = serverAddr(f.Value.String())
		}
		st, err := gatherClusterStatus(cmd.Context(), cf.server)
		if err != nil {
			return cf.rpcError("cluster status", err)
		}
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		st.print(cmd.OutOrStdout())
		return nil
	})
	return cmd
}

// clusterStatus is what `cluster status` prints.
type clusterStatus struct {
	Controller int32             `json:"controller"`
	Nodes      []nodeStatus      `json:"nodes"`
	Partitions []partitionStatus `json:"partitions"`
	Errors     map[int32]string  `json:"errors,omitempty"` // nodes that did not answer
	state      *cluster.State    // as the asked node applied it
	led        map[string]*tierlogv1.PartitionReplication
}

type nodeStatus struct {
	ID        int32  `json:"id"`
	GRPCAddr  string `json:"grpc_addr"`
	KafkaAddr string `json:"kafka_addr"`
	// Alive is the controller's view: heard from within its session.
	Alive      bool  `json:"alive"`
	LastSeenMs int64 `json:"last_seen_ms_ago,omitempty"`
}

type partitionStatus struct {
	Topic       string  `json:"topic"`
	Partition   int32   `json:"partition"`
	Leader      int32   `json:"leader"`
	LeaderEpoch int32   `json:"leader_epoch"`
	Replicas    []int32 `json:"replicas"`
	ISR         []int32 `json:"isr"`
	// LogStart is the partition's first offset (in the bucket or local)
	// as its leader last recorded it in the metadata.
	LogStart      int64 `json:"log_start"`
	HighWatermark int64 `json:"high_watermark"`
	LogEnd        int64 `json:"log_end"`
	// Lag maps each follower to the leader's log end - its log end; -1:
	// not known (it has not fetched from this leader).
	Lag map[int32]int64 `json:"lag,omitempty"`
}

// gatherClusterStatus asks the node at server for the metadata, then the
// controller for liveness and every node for the partitions it leads.
func gatherClusterStatus(ctx context.Context, server string) (*clusterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	first, err := nodeStatusAt(ctx, server)
	if err != nil {
		return nil, err
	}
	state := cluster.NewState()
	if err := json.Unmarshal(first.State, state); err != nil {
		return nil, fmt.Errorf("decode the cluster state: %w", err)
	}
	st := &clusterStatus{Controller: first.ControllerId, state: state, Errors: map[int32]string{},
		led: map[string]*tierlogv1.PartitionReplication{}}
	alive := map[int32]int64{}
	var session int64
	for _, a := range askNodes(ctx, state, first) {
		if a.err != nil {
			st.Errors[a.id] = a.err.Error()
			continue
		}
		if a.id == first.ControllerId {
			alive, session = a.resp.Alive, a.resp.SessionTimeoutMs
		}
		for _, p := range a.resp.Partitions {
			st.led[fmt.Sprintf("%s/%d", p.Topic, p.Partition)] = p
		}
	}
	now := time.Now().UnixMilli()
	for _, id := range slices.Sorted(maps.Keys(state.Nodes)) {
		n := state.Nodes[id]
		ns := nodeStatus{ID: id, GRPCAddr: n.GRPCAddr, KafkaAddr: n.KafkaAddr}
		if t, ok := alive[id]; ok {
			ns.LastSeenMs = max(now-t, 0)
			ns.Alive = ns.LastSeenMs < session
		}
		st.Nodes = append(st.Nodes, ns)
	}
	for _, name := range slices.Sorted(maps.Keys(state.Topics)) {
		for i, p := range state.Topics[name].Partitions {
			ps := partitionStatus{Topic: name, Partition: int32(i), Leader: p.Leader, LeaderEpoch: p.LeaderEpoch,
				Replicas: p.Replicas, ISR: p.ISR, LogStart: p.RemoteLogStart, HighWatermark: -1, LogEnd: -1}
			if r, ok := st.led[fmt.Sprintf("%s/%d", name, i)]; ok && r.LeaderEpoch == p.LeaderEpoch {
				ps.HighWatermark, ps.LogEnd = r.HighWatermark, r.LogEndOffset
				for _, rp := range r.Replicas {
					if rp.NodeId != p.Leader {
						if ps.Lag == nil {
							ps.Lag = map[int32]int64{}
						}
						ps.Lag[rp.NodeId] = -1 // not fetched from this leader yet
						if rp.LogEndOffset >= 0 {
							ps.Lag[rp.NodeId] = max(r.LogEndOffset-rp.LogEndOffset, 0)
						}
					}
				}
			}
			st.Partitions = append(st.Partitions, ps)
		}
	}
	return st, nil
}

func nodeStatusAt(ctx context.Context, addr string) (*tierlogv1.NodeStatusResponse, error) {
	conn, err := dialConn(addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return peer.Status(ctx, conn)
}

// peerStatusTimeout bounds the question to each node other than the one
// asked first: a node that is down or cut off from this machine is
// reported as not answering, without holding up the others.
const peerStatusTimeout = 3 * time.Second

// nodeAnswer is one node's NodeStatus answer, or why there is none.
type nodeAnswer struct {
	id   int32
	resp *tierlogv1.NodeStatusResponse
	err  error
}

// askNodes asks every node of state for its status, all at once (first
// already answered), and returns the answers in node id order.
func askNodes(ctx context.Context, state *cluster.State, first *tierlogv1.NodeStatusResponse) []nodeAnswer {
	ids := slices.Sorted(maps.Keys(state.Nodes))
	out := make([]nodeAnswer, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		out[i] = nodeAnswer{id: id, resp: first}
		if id == first.NodeId {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, peerStatusTimeout)
			defer cancel()
			conn, err := newConn(state.Nodes[id].GRPCAddr)
			if err == nil {
				defer conn.Close()
				out[i].resp, err = peer.Status(ctx, conn)
			}
			out[i].err = err
		})
	}
	wg.Wait()
	return out
}

func (st *clusterStatus) print(out io.Writer) {
	fmt.Fprintf(out, "Controller: node %d\n\n", st.Controller)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tGRPC\tKAFKA\tSTATUS")
	for _, n := range st.Nodes {
		status := "down (no heartbeat)"
		switch {
		case n.Alive:
			status = fmt.Sprintf("up (heartbeat %d ms ago)", n.LastSeenMs)
		case n.LastSeenMs > 0:
			status = fmt.Sprintf("down (last heartbeat %.1f s ago)", float64(n.LastSeenMs)/1000)
		}
		if e, ok := st.Errors[n.ID]; ok {
			status += "; not answering: " + e
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", n.ID, n.GRPCAddr, n.KafkaAddr, status)
	}
	w.Flush()
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TOPIC\tPARTITION\tLEADER\tEPOCH\tREPLICAS\tISR\tLOG START\tHIGH WATERMARK\tLOG END\tFOLLOWER LAG")
	for _, p := range st.Partitions {
		leader := fmt.Sprint(p.Leader)
		if p.Leader == cluster.NoLeader {
			leader = "none"
		}
		hw, end := "?", "?"
		if p.HighWatermark >= 0 {
			hw, end = fmt.Sprint(p.HighWatermark), fmt.Sprint(p.LogEnd)
		}
		var lag []string
		for _, id := range slices.Sorted(maps.Keys(p.Lag)) {
			if p.Lag[id] < 0 {
				lag = append(lag, fmt.Sprintf("%d:?", id))
			} else {
				lag = append(lag, fmt.Sprintf("%d:%d", id, p.Lag[id]))
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%v\t%v\t%d\t%s\t%s\t%s\n", p.Topic, p.Partition, leader, p.LeaderEpoch,
			ids(p.Replicas), ids(p.ISR), p.LogStart, hw, end, strings.Join(lag, " "))
	}
	w.Flush()
}

func ids(v []int32) string {
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ",")
}
