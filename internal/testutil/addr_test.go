package testutil

import (
	"net"
	"testing"
)

// Every address FreeAddr hands out in a process is distinct and bindable.
func TestFreeAddrDistinct(t *testing.T) {
	seen := map[string]bool{}
	for range 500 {
		a := FreeAddr(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
	}
	a := FreeAddr(t)
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("listen on %s: %v", a, err)
	}
	ln.Close()
}
