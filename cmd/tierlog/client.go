package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tierlogv1 "github.com/tierlog/tierlog/api/tierlogv1"
)

const defaultServer = "127.0.0.1:7070"

// maxRecvMsgBytes bounds one gRPC response. A fetch returns at least one
// whole batch even past max_bytes, and the server caps max_bytes at 64 MiB,
// so leave room above that.
const maxRecvMsgBytes = 80 << 20

// clientFlags are the flags every client command takes.
type clientFlags struct {
	server string
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	cf := &clientFlags{}
	def := defaultServer
	if v := os.Getenv("TIERLOG_SERVER"); v != "" {
		def = v
	}
	cmd.Flags().StringVar(&cf.server, "server", def, "host:port of the tierlog gRPC API (env TIERLOG_SERVER)")
	return cf
}

// dial connects lazily: the first RPC reports an unreachable server.
func (cf *clientFlags) dial() (tierlogv1.TierLogClient, func(), error) {
	conn, err := grpc.NewClient(cf.server,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgBytes)),
	)
	if err != nil {
		return nil, nil, usageErrorf("--server %q: %v", cf.server, err)
	}
	return tierlogv1.NewTierLogClient(conn), func() { _ = conn.Close() }, nil
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

// isCanceled reports whether err is the client's own cancellation (Ctrl-C).
func isCanceled(err error) bool {
	return status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled)
}
