package tiering

import (
	"context"
	"time"

	"github.com/tierlog/tierlog/cold"
)

// Backoff bounds retries of bucket operations (cold.Retry's).
type Backoff = cold.Backoff

// DefaultBackoff: 6 tries over about 6 seconds.
var defaultBackoff = Backoff{Attempts: 6, Base: 100 * time.Millisecond, Max: 3 * time.Second}

// retry runs f until it succeeds, returns an error cold.IsRetryable says is
// permanent, the attempts run out, or ctx ends.
func retry(ctx context.Context, f func() error) error {
	return retryWith(ctx, defaultBackoff, nil, f)
}

func retryWith(ctx context.Context, b Backoff, onRetry func(error), f func() error) error {
	return cold.Retry(ctx, b, onRetry, f)
}
