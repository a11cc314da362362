package cache

import (
	"bufio"
	"context"
	"io"
	"testing"
	"time"
)

func TestLockSharedAndExclusive(t *testing.T) {
	s := openStore(t)
	ctx := t.Context()
	r1, err := s.RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.RLock(ctx)
	if err != nil {
		t.Fatal("second RLock:", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.Lock(short); err == nil {
		t.Fatal("Lock succeeded while RLock held")
	}
	r1()
	r2()
	r2() // double unlock is harmless
	w, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := s.RLock(short2); err == nil {
		t.Fatal("RLock succeeded while Lock held")
	}
	w()
}

// TestLockReleasedWhenHolderDies is CACHE-08: a killed holder leaves no
// stale lock.
func TestLockReleasedWhenHolderDies(t *testing.T) {
	s := openStore(t)
	pr, pw := io.Pipe()
	cmd := startHelper(t, "lock", s.Root(), pw)
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.RLock(short); err == nil {
		t.Fatal("RLock succeeded while helper holds Lock")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	pw.Close()
	ctx, cancel2 := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel2()
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after holder died: %v", err)
	}
	unlock()
}
