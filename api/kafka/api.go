package kafka

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// api is one request kind the server answers: the versions it implements
// (and advertises in ApiVersions) and its handler.
type api struct {
	min, max int16
	handle   func(s *Server, c *clientConn, req kmsg.Request) reply
	// hidden answers the kind (with the Kafka error for a feature tierlog
	// lacks, such as transactions or SASL) without advertising it, so
	// clients do not choose it but get a clear error, not a closed
	// connection, if they send it anyway.
	hidden bool
}

// typed adapts a handler of one request type to the table.
func typed[R kmsg.Request](f func(*Server, *clientConn, R) reply) func(*Server, *clientConn, kmsg.Request) reply {
	return func(s *Server, c *clientConn, req kmsg.Request) reply { return f(s, c, req.(R)) }
}

// apis is every request kind the server answers, by key. A key not here
// closes the connection, as Kafka does for an API it does not know.
var apis map[int16]api

func init() {
	apis = map[int16]api{
		kmsg.ApiVersions.Int16(): {min: 0, max: 3, handle: typed((*Server).apiVersions)},
		kmsg.Metadata.Int16():    {min: 0, max: 12, handle: typed((*Server).metadata)},
	}
}

// apiVersionKeys lists the table for an ApiVersions response, by key.
func apiVersionKeys() []kmsg.ApiVersionsResponseApiKey {
	keys := make([]kmsg.ApiVersionsResponseApiKey, 0, len(apis))
	for k := range int16(100) {
		a, ok := apis[k]
		if !ok || a.hidden {
			continue
		}
		keys = append(keys, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: a.min, MaxVersion: a.max})
	}
	return keys
}
