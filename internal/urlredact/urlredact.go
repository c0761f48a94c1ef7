// Package urlredact hides the passwords a URL may carry, so bucket URLs can
// appear in logs and errors. Users do put secrets in URLs by mistake: in the
// user info (minio://key:secret@host/...) or inside a URL-valued query
// parameter (s3://b/p?endpoint=http://key:secret@host).
package urlredact

import (
	"net/url"
	"strings"
)

// URL is u as text with every password hidden: the user info's and those
// in URL-valued query parameters.
func URL(u *url.URL) string {
	c := *u
	if c.RawQuery != "" {
		q := c.Query()
		changed := false
		for _, vs := range q {
			for i, v := range vs {
				vu, err := url.Parse(v)
				switch {
				case err == nil && vu.User != nil:
					vs[i], changed = vu.Redacted(), true
				case err != nil && strings.Contains(v, "@"):
					// Unparsed, it may still hold user info.
					vs[i], changed = "(hidden)", true
				}
			}
		}
		if changed {
			c.RawQuery = q.Encode()
		}
	}
	return c.Redacted()
}

// String is URL for a raw string; one that does not parse is hidden whole,
// since it may hold a secret.
func String(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return URL(u)
}
