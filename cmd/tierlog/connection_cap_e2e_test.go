package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierlog/tierlog/internal/testutil"
)

// TestKafkaAndGRPCShareTheConnectionCap: --fd-reserve (half the
// descriptor limit by default) keeps descriptors for segment files that no
// flood of clients can take: the gRPC and Kafka listeners together are
// capped at RLIMIT_NOFILE - fd_reserve - http_max_connections. (The Kafka
// listener once got the same cap again on top: gRPC and Kafka clients
// together held almost every descriptor, and a topic that fits the reserve
// could no longer be created.)
func TestKafkaAndGRPCShareTheConnectionCap(t *testing.T) {
	dataDir := t.TempDir()
	readyPath := filepath.Join(t.TempDir(), "ready.json")
	// 512 descriptors: reserve 256, gRPC and Kafka capped at 192 together.
	cmd := exec.Command("prlimit", "--nofile=512:512", binary(t), "serve", "--ready-file", readyPath, "--data-dir", dataDir,
		"--grpc-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	cmd.Env = cleanEnv()
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("tierlog serve output:\n%s", out.String())
		}
	})
	var rf readyFile
	eventually(t, "ready file", func() error {
		data, err := os.ReadFile(readyPath)
		if err != nil {
			return err
		}
		return json.Unmarshal(data, &rf)
	})
	n := &node{t: t, grpcAddr: rf.GRPCAddr, kafkaAddr: rf.KafkaAddr, httpAddr: rf.HTTPAddr}

	// Flood both listeners with idle clients, far past the shared cap.
	var grpcHeld, kafkaHeld []net.Conn
	t.Cleanup(func() {
		for _, c := range append(grpcHeld, kafkaHeld...) {
			c.Close()
		}
	})
	for _, to := range []struct {
		addr string
		held *[]net.Conn
	}{{rf.GRPCAddr, &grpcHeld}, {rf.KafkaAddr, &kafkaHeld}} {
		for range 250 {
			c, err := net.Dial("tcp", to.addr)
			if err != nil {
				t.Fatal(err)
			}
			*to.held = append(*to.held, c)
		}
	}
	// Every connection accepted or closed on accept, from /metrics.
	counts := func() (map[string]int, error) {
		_, body, err := httpGet("http://" + rf.HTTPAddr + "/metrics")
		got := map[string]int{}
		for _, l := range strings.Split(body, "\n") {
			var name string
			var v int
			if _, err := fmt.Sscanf(l, "tierlog_server_connections_active{listener=%q} %d", &name, &v); err == nil {
				got["active "+name] = v
			}
			if _, err := fmt.Sscanf(l, "tierlog_server_connections_rejected_total{listener=%q} %d", &name, &v); err == nil {
				got["rejected "+name] = v
			}
		}
		return got, err
	}
	eventually(t, "every connection of the flood accepted or refused", func() error {
		got, err := counts()
		if n := got["active grpc"] + got["active kafka"] + got["rejected grpc"] + got["rejected kafka"]; err != nil || n != 500 {
			return fmt.Errorf("%d of 500 settled: %v %v", n, got, err)
		}
		return nil
	})
	got, _ := counts()
	t.Logf("connections: %v", got)
	if open := got["active grpc"] + got["active kafka"]; open != 192 {
		t.Fatalf("the gRPC and Kafka listeners hold %d connections together (%v), want the shared cap of 192", open, got)
	}

	// The CLI needs a gRPC slot: free one (a held gRPC connection the
	// server accepted sends its HTTP/2 settings; one closed on accept
	// reads EOF).
	freed := false
	for _, c := range grpcHeld {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			c.Close()
			freed = true
			break
		}
	}
	if !freed {
		t.Fatal("no held gRPC connection was accepted")
	}
	// 150 partition files fit in the 256 descriptors of the reserve.
	var r result
	eventually(t, "the CLI gets the freed gRPC slot", func() error {
		r = cli(t, nil, "", "topic", "create", "fits", "--partitions", "150", "--server", n.grpcAddr)
		if r.code != 0 && (strings.Contains(r.stderr, "(Unavailable)") || strings.Contains(r.stderr, "cannot reach server")) {
			return fmt.Errorf("%s", r.stderr)
		}
		return nil
	})
	if r.code != 0 {
		t.Fatalf("topic create with 150 partitions while the listeners are full: exit %d: %s\n"+
			"the listeners' connections came out of --fd-reserve", r.code, r.stderr)
	}
}
