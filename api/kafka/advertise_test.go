package kafka

import (
	"net"
	"os"
	"testing"
)

// Metadata names the listener the way a client can reach it: localhost
// only when the listener was asked for localhost (and so bound every
// loopback family), the bound IP for an explicit one, the machine's name
// for a wildcard bind.
func TestAdvertisedFor(t *testing.T) {
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ listen, bound, want string }{
		{"localhost:9092", "127.0.0.1:9092", "localhost"},
		{"127.0.0.1:0", "127.0.0.1:41234", "127.0.0.1"},
		{"[::1]:0", "[::1]:41234", "::1"},
		{"0.0.0.0:9092", "0.0.0.0:9092", hostname},
		{"10.1.2.3:9092", "10.1.2.3:9092", "10.1.2.3"},
	} {
		a, err := net.ResolveTCPAddr("tcp", c.bound)
		if err != nil {
			t.Fatal(err)
		}
		host, port := AdvertisedFor(c.listen, a)
		if host != c.want || port != int32(a.Port) {
			t.Errorf("AdvertisedFor(%q, %s) = %s:%d, want %s:%d", c.listen, c.bound, host, port, c.want, a.Port)
		}
	}
}
