package kafka

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// api is one request kind the server answers: the versions it implements
// (and advertises in ApiVersions) and its handler.
type api struct {
	min, max int16
	handle   func(s *Server, c *clientConn, req kmsg.Request) reply
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
		kmsg.ApiVersions.Int16(): {0, 3, typed((*Server).apiVersions)},
		kmsg.Metadata.Int16():    {0, 12, typed((*Server).metadata)},
	}
}

// apiVersionKeys lists the table for an ApiVersions response, by key.
func apiVersionKeys() []kmsg.ApiVersionsResponseApiKey {
	keys := make([]kmsg.ApiVersionsResponseApiKey, 0, len(apis))
	for k := range int16(100) {
		a, ok := apis[k]
		if !ok {
			continue
		}
		keys = append(keys, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: a.min, MaxVersion: a.max})
	}
	return keys
}
