package testutil

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// handedOut holds the addresses FreeAddr has returned in this process.
var handedOut sync.Map

// FreeAddr returns a loopback address (127.0.0.1:port) that no listener
// held when it was picked, and that no earlier call in this test process
// returned: for a server that must be told its address before it starts
// (Raft peers, MinIO, a node that comes back on the same port). The port
// is picked by listening on port 0 and closing; the kernel may hand the
// same port to the next such pick, so two peers of one cluster once got
// one address ("found duplicate address in configuration"). Another
// process may still take the port before the server binds it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func freeAddr() (string, error) {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr, nil
		}
	}
	return "", errors.New("no loopback port left that this process was not given before")
}
