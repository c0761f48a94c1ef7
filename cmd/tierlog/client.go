package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

// defaultServerPort is the gRPC port a --server without one gets: serve's
// default --grpc-addr port.
const defaultServerPort = "7070"

const defaultServer = "127.0.0.1:" + defaultServerPort

// serverFlag is the root's persistent flag every client command reads.
const serverFlag = "server"

// maxRecvMsgBytes bounds one gRPC response. A fetch returns at least one
// whole batch even past max_bytes, and the server caps max_bytes at 64 MiB,
// so leave room above that.
const maxRecvMsgBytes = 80 << 20

// clientFlags holds what every client command shares: the --server the
// root defines for all of them, read when the command dials.
type clientFlags struct {
	cmd    *cobra.Command
	server string // host:port, set by dial
}

// addClientFlags returns the client settings of cmd; --server itself is a
// persistent flag of the root (see addServerFlag), so that the root's help
// lists it.
func addClientFlags(cmd *cobra.Command) *clientFlags {
	return &clientFlags{cmd: cmd}
}

// addServerFlag defines --server on the root for every client command.
func addServerFlag(root *cobra.Command) {
	def := defaultServer
	if v := os.Getenv("TIERLOG_SERVER"); v != "" {
		def = v
	}
	root.PersistentFlags().String(serverFlag, def,
		"host:port of the node's gRPC API (serve's --grpc-addr); the port defaults to "+defaultServerPort+" (env TIERLOG_SERVER)")
}

// serverAddr adds the default gRPC port to a --server without one, so that
// "localhost" means localhost:7070 rather than gRPC's default of 443. A
// gRPC target with a scheme (dns:///host:port, unix:path) is left alone.
func serverAddr(s string) string {
	if strings.Contains(s, ":/") || strings.HasPrefix(s, "unix:") {
		return s
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return net.JoinHostPort(host, defaultServerPort)
}

// dial connects lazily: the first RPC reports an unreachable server.
func (cf *clientFlags) dial() (tierlogv1.TierLogClient, func(), error) {
	if f := cf.cmd.Flag(serverFlag); f != nil {
		cf.server = serverAddr(f.Value.String())
	}
	conn, err := dialConn(cf.server)
	if err != nil {
		return nil, nil, err
	}
	return tierlogv1.NewTierLogClient(conn), func() { _ = conn.Close() }, nil
}

// dialConn connects to a node's gRPC address, waiting a little for one
// that is starting.
func dialConn(server string) (*grpc.ClientConn, error) {
	conn, err := newConn(server)
	if err != nil {
		return nil, err
	}
	waitReady(conn, startWait)
	return conn, nil
}

// newConn is a client connection to server that connects on first use,
// without dialConn's wait for a server that is still starting.
func newConn(server string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(server,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgBytes)),
		// Retry a refused connection quickly while waitReady waits.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond,
			Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond}, MinConnectTimeout: time.Second}),
	)
	if err != nil {
		return nil, usageErrorf("--server %q: %v", server, err)
	}
	return conn, nil
}

// startWait is how long a command waits for a server that is not (yet)
// accepting connections: `tierlog serve &` followed at once by a command,
// as the README's first lines do, must not race the server's start.
const startWait = 5 * time.Second

// waitReady waits up to d for conn to connect. If it does not, the first
// RPC fails with the usual "cannot reach server" error.
func waitReady(conn *grpc.ClientConn, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			return
		}
	}
}

// rpcError turns a gRPC error into one line: what was being done, the
// server's message and the status code name.
func (cf *clientFlags) rpcError(what string, err error) error {
	return fmt.Errorf("%s: %w", what, cf.statusError(err))
}

// statusError is the server's message and the status code name, or, when
// the server could not be reached, says so and names it.
func (cf *clientFlags) statusError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if st.Code() == codes.Unavailable && isNotGRPC(st.Message()) {
		return fmt.Errorf("server %s does not speak gRPC: it answered like an HTTP/1 server (%s); --server takes the node's gRPC address (serve's --grpc-addr, port %s by default), not its HTTP address (--http-addr, for /metrics and /healthz)",
			cf.server, st.Message(), defaultServerPort)
	}
	if st.Code() == codes.Unavailable && isConnError(st.Message()) {
		return fmt.Errorf("cannot reach server %s: %s", cf.server, st.Message())
	}
	return fmt.Errorf("%s (%s)", st.Message(), st.Code())
}

// isConnError tells a transport failure (nothing listening, DNS) from an
// UNAVAILABLE the server itself returned (broker closing, log failed).
func isConnError(msg string) bool {
	return strings.Contains(msg, "connection error") || strings.Contains(msg, "name resolver") || strings.Contains(msg, "produced zero addresses")
}

// isNotGRPC tells that the server at the other end is not HTTP/2: an
// HTTP/1 server answers gRPC's connection preface with a plain response,
// which gRPC reads as a frame of an impossible size.
func isNotGRPC(msg string) bool {
	return strings.Contains(msg, "http2: frame too large")
}

// isCanceled reports whether err is the client's own cancellation (Ctrl-C).
func isCanceled(err error) bool {
	return status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled)
}
