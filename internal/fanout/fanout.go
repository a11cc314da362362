// Package fanout runs the parts of a recursive walk on a bounded number of
// goroutines: a tree's directories fan out into their entries, and those
// into theirs, without a fixed pool that nested work could deadlock on.
package fanout

import "sync"

// Limiter bounds the extra goroutines of one walk. Work that finds no free
// slot runs on the goroutine that asked, so nested fan-outs never wait for
// each other.
type Limiter struct {
	slots chan struct{}
}

// New returns a Limiter allowing n extra goroutines at once.
func New(n int) *Limiter {
	return &Limiter{slots: make(chan struct{}, n)}
}

// Do calls fn(0..n-1), each on a new goroutine while a slot is free and
// inline otherwise, waits for all of them and returns the error of the
// lowest index.
func (l *Limiter) Do(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case l.slots <- struct{}{}:
			wg.Add(1)
			go func() {
				defer func() { <-l.slots; wg.Done() }()
				errs[i] = fn(i)
			}()
		default:
			errs[i] = fn(i)
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Batches calls fn(lo, hi) for the ranges [lo, hi) of at most size of
// 0..n-1, through Do.
func (l *Limiter) Batches(n, size int, fn func(lo, hi int) error) error {
	return l.Do((n+size-1)/size, func(b int) error {
		return fn(b*size, min(n, (b+1)*size))
	})
}
