// Package auditgen generates realistic JSON audit events, deterministically:
// the same seed gives the same events, byte for byte, on every machine, so
// benchmarks (compression ratio, replay throughput) are comparable between
// runs and the data set never has to be stored.
//
// An event looks like what an identity or SaaS platform emits for every
// API call:
//
//	{"id":"evt-2a1f3c-9b1e4d2a","time":"2026-01-01T00:00:01.042Z",
//	 "org":"org-0017","actor":{"type":"user","id":"usr-004211",
//	 "email":"user4211@org-0017.example.com","ip":"10.17.42.11",
//	 "user_agent":"Mozilla/5.0 (...)"},"action":"document.read",
//	 "resource":{"type":"document","id":"doc-0088123",
//	 "path":"/orgs/org-0017/documents/doc-0088123"},"outcome":"success",
//	 "status":200,"latency_ms":12,"request_id":"req-5f0c2b...","trace_id":"..."}
//
// Users, organizations, resources and actions follow skewed (roughly
// power-law) popularity, as real traffic does; identifiers such as event,
// request and trace ids are random hex, the part that does not compress.
// Records are keyed by actor id (per-user ordering) and carry a
// "content-type" header.
package auditgen

import (
	"encoding/hex"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/tierlog/tierlog/internal/batch"
)

// Options shape the generated stream. The zero value takes the defaults.
type Options struct {
	Seed uint64
	// Start is the first event's time (default 2026-01-01T00:00:00Z).
	Start time.Time
	// PerSecond is the mean event rate that spaces timestamps (default
	// 2000).
	PerSecond int
	// Orgs and Users are the population sizes (defaults 200 and 20000).
	Orgs, Users int
}

// Generator produces events. It is not safe for concurrent use; give each
// goroutine its own (with its own seed).
type Generator struct {
	rng    *rand.Rand
	opts   Options
	n      int64
	tsUnix int64 // milliseconds
	buf    []byte
}

var defaultStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// New returns a generator.
func New(opts Options) *Generator {
	if opts.Start.IsZero() {
		opts.Start = defaultStart
	}
	if opts.PerSecond <= 0 {
		opts.PerSecond = 2000
	}
	if opts.Orgs <= 0 {
		opts.Orgs = 200
	}
	if opts.Users <= 0 {
		opts.Users = 20000
	}
	return &Generator{
		rng:    rand.New(rand.NewPCG(opts.Seed, 0x617564697467656e)), // "auditgen"
		opts:   opts,
		tsUnix: opts.Start.UnixMilli(),
	}
}

type action struct {
	name, resource string
	write          bool
}

var actions = []action{
	{"document.read", "document", false}, {"document.list", "folder", false},
	{"session.refresh", "session", false}, {"document.update", "document", true},
	{"user.login", "session", true}, {"search.query", "index", false},
	{"document.create", "document", true}, {"document.share", "document", true},
	{"api_key.use", "api_key", false}, {"user.logout", "session", true},
	{"member.invite", "membership", true}, {"document.delete", "document", true},
	{"role.assign", "role", true}, {"billing.view", "invoice", false},
	{"export.start", "export", true}, {"user.mfa_challenge", "session", true},
	{"api_key.create", "api_key", true}, {"org.settings_update", "org", true},
}

var userAgents = []string{
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
	"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
	"tierlog-sdk-go/1.4.2 (linux; amd64)",
	"python-requests/2.32.3",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
	"okhttp/4.12.0",
	"curl/8.11.0",
}

// skewed returns an index in [0, n) where small indexes are much more
// likely (density ~ x^-2/3): a few users, orgs and documents get most of the
// traffic.
func (g *Generator) skewed(n int) int {
	u := g.rng.Float64()
	return min(int(float64(n)*u*u*u), n-1)
}

func (g *Generator) hex(dst []byte, nbytes int) []byte {
	var b [16]byte
	for i := 0; i < nbytes; i += 8 {
		v := g.rng.Uint64()
		for j := 0; j < 8 && i+j < nbytes; j++ {
			b[j] = byte(v >> (8 * j))
		}
		dst = hex.AppendEncode(dst, b[:min(8, nbytes-i)])
	}
	return dst
}

func pad(dst []byte, v, width int) []byte {
	s := strconv.Itoa(v)
	for i := len(s); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

// Next returns the next event. Its Key and Value are freshly allocated and
// belong to the caller.
func (g *Generator) Next() batch.Record {
	g.n++
	// Exponential gaps around the mean rate, at millisecond resolution.
	g.tsUnix += int64(g.rng.ExpFloat64() * 1000 / float64(g.opts.PerSecond))
	org := g.skewed(g.opts.Orgs)
	user := g.skewed(g.opts.Users)
	act := actions[g.skewed(len(actions))]
	ts := time.UnixMilli(g.tsUnix).UTC()

	b := g.buf[:0]
	b = append(b, `{"id":"evt-`...)
	b = strconv.AppendInt(b, g.n, 16)
	b = append(b, '-')
	b = g.hex(b, 4)
	b = append(b, `","time":"`...)
	b = ts.AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, `","org":"org-`...)
	b = pad(b, org, 4)
	b = append(b, `","actor":{"type":"`...)
	service := g.rng.IntN(10) == 0
	if service {
		b = append(b, `service","id":"svc-`...)
		b = pad(b, user%50, 3)
	} else {
		b = append(b, `user","id":"usr-`...)
		b = pad(b, user, 6)
		b = append(b, `","email":"user`...)
		b = strconv.AppendInt(b, int64(user), 10)
		b = append(b, `@org-`...)
		b = pad(b, org, 4)
		b = append(b, `.example.com`...)
	}
	b = append(b, `","ip":"`...)
	if service || g.rng.IntN(3) == 0 {
		b = append(b, "10."...)
		b = strconv.AppendInt(b, int64(org%256), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(user%256), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(g.rng.IntN(254)+1), 10)
	} else {
		// Users mostly come from "their" public address.
		h := uint32(user)*2654435761 + uint32(g.skewed(4))
		b = strconv.AppendInt(b, int64(h>>24%223+1), 10)
		for _, s := range []uint32{16, 8, 0} {
			b = append(b, '.')
			b = strconv.AppendInt(b, int64(h>>s&0xff), 10)
		}
	}
	b = append(b, `","user_agent":"`...)
	b = append(b, userAgents[(user+g.skewed(3))%len(userAgents)]...)
	b = append(b, `"},"action":"`...)
	b = append(b, act.name...)
	b = append(b, `","resource":{"type":"`...)
	b = append(b, act.resource...)
	res := g.skewed(200000)
	b = append(b, `","id":"`...)
	b = append(b, act.resource[:3]...)
	b = append(b, '-')
	b = pad(b, res, 7)
	b = append(b, `","path":"/orgs/org-`...)
	b = pad(b, org, 4)
	b = append(b, '/')
	b = append(b, act.resource...)
	b = append(b, "s/"...)
	b = append(b, act.resource[:3]...)
	b = append(b, '-')
	b = pad(b, res, 7)
	b = append(b, `"},"outcome":"`...)
	status := 200
	switch r := g.rng.IntN(100); {
	case r < 3:
		status = 403
	case r < 5:
		status = 404
	case r < 6:
		status = 500
	case act.write && r < 40:
		status = 201
	}
	if status < 400 {
		b = append(b, `success`...)
	} else {
		b = append(b, `failure`...)
	}
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"latency_ms":`...)
	b = strconv.AppendInt(b, int64(g.rng.ExpFloat64()*25)+1, 10)
	b = append(b, `,"request_id":"req-`...)
	b = g.hex(b, 12)
	b = append(b, `","trace_id":"`...)
	b = g.hex(b, 16)
	b = append(b, `"}`...)
	g.buf = b

	val := append([]byte(nil), b...)
	var key []byte
	if service {
		key = pad([]byte("svc-"), user%50, 3)
	} else {
		key = pad([]byte("usr-"), user, 6)
	}
	return batch.Record{
		Timestamp: g.tsUnix,
		Key:       key,
		Value:     val,
		Headers:   []batch.RecordHeader{{Key: "content-type", Value: contentType}},
	}
}

var contentType = []byte("application/json")

// Records returns the next n events.
func (g *Generator) Records(n int) []batch.Record {
	out := make([]batch.Record, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

// Log builds a hot segment's worth of batches: RecordBatch v2 batches of
// perBatch events each, compressed with codec, offsets assigned densely from
// base, back to back, until at least size bytes. It returns the bytes and
// the offset after the last batch.
func (g *Generator) Log(base int64, size, perBatch int, codec batch.Codec) ([]byte, int64, error) {
	var log []byte
	for len(log) < size {
		b, err := batch.Build(g.Records(perBatch), batch.BuildOptions{Codec: codec, BaseOffset: base})
		if err != nil {
			return nil, 0, err
		}
		log = append(log, b...)
		base += int64(perBatch)
	}
	return log, base, nil
}
