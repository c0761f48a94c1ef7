package tiering

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/tierlog/tierlog/cold"
)

// Backoff bounds retries of bucket operations.
type Backoff struct {
	Attempts int           // total tries, first included
	Base     time.Duration // delay before the second try; doubles each time
	Max      time.Duration // cap on one delay
}

// DefaultBackoff: 6 tries over about 6 seconds.
var defaultBackoff = Backoff{Attempts: 6, Base: 100 * time.Millisecond, Max: 3 * time.Second}

// retry runs f until it succeeds, returns an error cold.IsRetryable says is
// permanent, the attempts run out, or ctx ends. Delays grow exponentially
// with full jitter, so many partitions retrying after one outage do not
// return in lockstep.
func retry(ctx context.Context, f func() error) error {
	return retryWith(ctx, defaultBackoff, nil, f)
}

func retryWith(ctx context.Context, b Backoff, onRetry func(error), f func() error) error {
	var err error
	delay := b.Base
	for attempt := 1; ; attempt++ {
		if err = f(); err == nil || !cold.IsRetryable(err) || attempt >= b.Attempts {
			return err
		}
		if onRetry != nil {
			onRetry(err)
		}
		sleep := time.Duration(rand.Int64N(int64(delay) + 1))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(sleep):
		}
		delay = min(delay*2, b.Max)
	}
}
