package fanout

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
)

// TestDoLowestError: every call runs, and the error returned is the one
// of the lowest index, whichever goroutine finished first.
func TestDoLowestError(t *testing.T) {
	l := New(4)
	var ran atomic.Int64
	err := l.Do(100, func(i int) error {
		ran.Add(1)
		if i%10 == 7 {
			return fmt.Errorf("call %d", i)
		}
		return nil
	})
	if err == nil || err.Error() != "call 7" {
		t.Errorf("error %v, want call 7", err)
	}
	if ran.Load() != 100 {
		t.Errorf("%d calls ran, want 100", ran.Load())
	}
}

// TestDoNested: fan-outs inside fan-outs finish with one slot, or none.
func TestDoNested(t *testing.T) {
	for _, n := range []int{0, 1} {
		l := New(n)
		var leaves atomic.Int64
		var walk func(depth int) error
		walk = func(depth int) error {
			if depth == 0 {
				leaves.Add(1)
				return nil
			}
			return l.Do(3, func(int) error { return walk(depth - 1) })
		}
		if err := walk(5); err != nil {
			t.Fatal(err)
		}
		if leaves.Load() != 243 {
			t.Errorf("slots %d: %d leaves, want 243", n, leaves.Load())
		}
	}
}

// TestBatches: the ranges cover 0..n-1 once each, none longer than size.
func TestBatches(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 200} {
		seen := make([]atomic.Int32, n)
		err := New(2).Batches(n, 64, func(lo, hi int) error {
			if hi-lo > 64 || hi <= lo {
				return errors.New("bad range")
			}
			for i := lo; i < hi; i++ {
				seen[i].Add(1)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range seen {
			if seen[i].Load() != 1 {
				t.Fatalf("n=%d: index %d seen %d times", n, i, seen[i].Load())
			}
		}
	}
}
