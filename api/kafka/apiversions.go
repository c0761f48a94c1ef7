package kafka

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// apiVersions answers with every API and version range the server
// implements. v3's client software name and version are not checked.
func (s *Server) apiVersions(_ *clientConn, req *kmsg.ApiVersionsRequest) reply {
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	resp.ApiKeys = apiVersionKeys()
	return reply{resp: resp}
}

// apiVersionsUnsupported is the v0 reply to an ApiVersions version the
// server does not know: UNSUPPORTED_VERSION with the supported ranges, from
// which a client picks a version it shares with the server and retries.
func apiVersionsUnsupported() kmsg.Response {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	resp.ErrorCode = kerr.UnsupportedVersion.Code
	resp.ApiKeys = apiVersionKeys()
	return resp
}
