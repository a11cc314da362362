package executor

import (
	"context"
	"sync"

	"github.com/builder-dev/builder/cache"
)

// Flights runs each step once among concurrent Runs that share it — the
// platforms of a multi-platform build — as BuildKit's solver runs a
// vertex once however many targets need it: a stage FROM
// --platform=$BUILDPLATFORM whose inputs do not depend on the target has
// the same keys in every platform's plan. The first Run to miss a key
// executes the step; the others wait and take its record. It is safe for
// concurrent use.
type Flights struct {
	mu sync.Mutex
	m  map[cache.Key]*flight
}

type flight struct {
	done  chan struct{}
	owner string // who executes it, for the others' records
	rec   *cache.Record
	err   error
}

// NewFlights returns an empty set of flights.
func NewFlights() *Flights { return &Flights{m: map[cache.Key]*flight{}} }

// do executes run for key unless another holder of f is executing or has
// executed it: then it waits for that one and returns its record and its
// owner's name. owner names the caller.
func (f *Flights) do(ctx context.Context, key cache.Key, owner string, run func() (*cache.Record, error)) (rec *cache.Record, sharedFrom string, err error) {
	f.mu.Lock()
	if fl, ok := f.m[key]; ok {
		f.mu.Unlock()
		select {
		case <-fl.done:
		case <-ctx.Done():
			return nil, "", ctx.Err()
		}
		if fl.err != nil {
			// The executing Run failed (and fails the build): try again
			// here, so this Run reports its own error.
			rec, err := run()
			return rec, "", err
		}
		return fl.rec, fl.owner, nil
	}
	fl := &flight{done: make(chan struct{}), owner: owner}
	f.m[key] = fl
	f.mu.Unlock()
	fl.rec, fl.err = run()
	close(fl.done)
	return fl.rec, "", fl.err
}
