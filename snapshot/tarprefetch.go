package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A tarPrefetcher reads ahead of writeLayerTar, on other goroutines, what
// each entry needs from the file system besides its stat: its xattrs, a
// symlink's target and the content of a small regular file. The tar is
// still written (and hashed) in order by one goroutine; the system calls
// and page-cache reads of the entries ahead of it run beside it, which on
// a layer of many small files is most of the work.
type tarPrefetcher struct {
	entries []tarEntry
	keep    func(xattr string) bool // the xattrs the tar holds
	slots   []prefetchSlot
	tokens  chan struct{} // one per entry that may be read ahead
	next    atomic.Int64  // the next entry a worker takes
	budget  atomic.Int64  // bytes of content that may still be held
	maxData int64         // the largest content read ahead
	quit    chan struct{}
	wg      sync.WaitGroup
	bufs    sync.Pool // *[]byte, contents read ahead
}

// prefetchSlot is what was read of one entry; done is closed when it is.
type prefetchSlot struct {
	done   chan struct{}
	xattrs []xattr
	link   string
	data   []byte // the content; nil when not read ahead
	pooled *[]byte
	err    error
}

const (
	prefetchAhead  = 256      // entries
	prefetchBudget = 16 << 20 // bytes of content held at once
	prefetchMax    = 1 << 20  // the largest file read ahead
)

// newTarPrefetcher starts reading ahead of entries. Contents go to a
// writer that takes file ranges (fr) only below rangeMin: larger ones are
// handed over as ranges, never read.
func newTarPrefetcher(ctx context.Context, entries []tarEntry, fr bool, keep func(string) bool) *tarPrefetcher {
	pf := &tarPrefetcher{
		entries: entries,
		keep:    keep,
		slots:   make([]prefetchSlot, len(entries)),
		tokens:  make(chan struct{}, prefetchAhead),
		quit:    make(chan struct{}),
		maxData: prefetchMax,
	}
	if fr {
		pf.maxData = rangeMin - 1
	}
	pf.bufs.New = func() any { b := make([]byte, 0, 64<<10); return &b }
	pf.budget.Store(prefetchBudget)
	for i := range pf.slots {
		pf.slots[i].done = make(chan struct{})
	}
	for range min(prefetchAhead, len(entries)) {
		pf.tokens <- struct{}{}
	}
	workers := min(max(2, runtime.GOMAXPROCS(0)), len(entries))
	pf.wg.Add(workers)
	for range workers {
		go pf.work(ctx)
	}
	return pf
}

func (pf *tarPrefetcher) work(ctx context.Context) {
	defer pf.wg.Done()
	for {
		select {
		case <-pf.tokens:
		case <-pf.quit:
			return
		}
		i := pf.next.Add(1) - 1
		if i >= int64(len(pf.entries)) || ctx.Err() != nil {
			return
		}
		pf.fetch(&pf.slots[i], pf.entries[i])
		close(pf.slots[i].done)
	}
}

// fetch reads what entry e needs into s.
func (pf *tarPrefetcher) fetch(s *prefetchSlot, e tarEntry) {
	if e.kind != kindFile {
		return
	}
	if !e.noXattrs {
		if s.xattrs, s.err = xattrsOf(e.src, pf.keep); s.err != nil {
			return
		}
	}
	switch e.st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		if s.link, s.err = os.Readlink(e.src); s.err != nil {
			s.err = fmt.Errorf("read link %s: %w", e.src, s.err)
		}
	case unix.S_IFREG:
		size := e.st.Size
		if size == 0 || size > pf.maxData || pf.budget.Add(-size) < 0 {
			if size > 0 && size <= pf.maxData {
				pf.budget.Add(size)
			}
			return // written from the file by the tar's writer
		}
		s.pooled = pf.bufs.Get().(*[]byte)
		if int64(cap(*s.pooled)) < size {
			*s.pooled = make([]byte, 0, size)
		}
		s.data = (*s.pooled)[:size]
		s.err = readFull(e.src, s.data)
	}
}

// readFull reads exactly len(buf) bytes from the start of the file src,
// through a plain descriptor (os.OpenFile spends five more system calls
// on a regular file).
func readFull(src string, buf []byte) error {
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		k, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", src, err)
		}
		if k == 0 {
			return fmt.Errorf("read %s: file shrank to %d of %d bytes while serializing", src, n, len(buf))
		}
		n += k
	}
	return nil
}

// get waits for entry i; the caller gives it back with release.
func (pf *tarPrefetcher) get(ctx context.Context, i int) (*prefetchSlot, error) {
	select {
	case <-pf.slots[i].done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &pf.slots[i], pf.slots[i].err
}

// release frees entry i's content and lets the workers read one more
// entry ahead.
func (pf *tarPrefetcher) release(i int) {
	s := &pf.slots[i]
	if s.pooled != nil {
		pf.budget.Add(int64(len(s.data)))
		pf.bufs.Put(s.pooled)
		s.pooled, s.data = nil, nil
	}
	s.xattrs = nil
	pf.tokens <- struct{}{}
}

// stop ends the workers and returns the contents still held.
func (pf *tarPrefetcher) stop() {
	close(pf.quit)
	pf.wg.Wait()
	for i := range pf.slots {
		if s := &pf.slots[i]; s.pooled != nil {
			pf.bufs.Put(s.pooled)
			s.pooled, s.data = nil, nil
		}
	}
}
