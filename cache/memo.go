package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"os"
	"path/filepath"
	"sync"
)

// The memo is split into memoShards files named by a hash of the absolute
// path, loaded lazily on first use and rewritten whole, only when changed.
// A shard file is:
//
//	"bhm2" | entries | crc32(IEEE, of everything before)
//	entry = uvarint len(path) | path | varint size | varint mtime |
//	        varint ctime | uvarint ino | uvarint dev | uvarint mode | sha256 |
//	        uvarint len(capability) | capability
//
// A shard whose checksum, magic (a "bhm1" shard lacks capabilities) or
// encoding is wrong is ignored (all misses) and replaced at the next flush.
const (
	memoShards = 256
	memoMagic  = "bhm2"
)

// memoEntry is what the memo knows about a file in state st: its content
// digest and its security.capability xattr ("" for none).
type memoEntry struct {
	st         fileStat
	sum        [sha256.Size]byte
	capability string
}

type memoShard struct {
	mu      sync.Mutex
	loaded  bool
	entries map[string]memoEntry
	touched map[string]struct{} // paths put since the last flush
}

type memo struct {
	dir    string
	store  *Store
	shards [memoShards]memoShard
}

func newMemo(dir string, s *Store) *memo { return &memo{dir: dir, store: s} }

func (m *memo) shardOf(path string) (int, *memoShard) {
	h := fnv.New32a()
	h.Write([]byte(path))
	i := int(h.Sum32() % memoShards)
	return i, &m.shards[i]
}

func (m *memo) shardFile(i int) string { return fmt.Sprintf("%02x.memo", i) }

func (m *memo) get(path string, st fileStat) (memoEntry, bool) {
	i, sh := m.shardOf(path)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m.ensureLoaded(i, sh)
	e, ok := sh.entries[path]
	if !ok || e.st != st {
		return memoEntry{}, false
	}
	return e, true
}

func (m *memo) put(path string, e memoEntry) {
	i, sh := m.shardOf(path)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m.ensureLoaded(i, sh)
	sh.entries[path] = e
	sh.touched[path] = struct{}{}
}

// ensureLoaded reads shard i on first use; sh.mu must be held.
func (m *memo) ensureLoaded(i int, sh *memoShard) {
	if !sh.loaded {
		sh.entries = m.load(i)
		sh.touched = make(map[string]struct{})
		sh.loaded = true
	}
}

// load reads shard i; a missing or damaged shard gives an empty map.
func (m *memo) load(i int) map[string]memoEntry {
	data, err := os.ReadFile(filepath.Join(m.dir, m.shardFile(i)))
	if err != nil {
		return make(map[string]memoEntry)
	}
	entries, err := decodeShard(data)
	if err != nil {
		return make(map[string]memoEntry)
	}
	return entries
}

func (m *memo) flush(ctx context.Context) error {
	for i := range m.shards {
		if err := m.flushShard(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

func (m *memo) flushShard(ctx context.Context, i int) error {
	sh := &m.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.touched) == 0 {
		return nil
	}
	merged := m.load(i)
	for p := range sh.touched {
		merged[p] = sh.entries[p]
	}
	err := m.store.writeFile(ctx, m.dir, m.shardFile(i), encodeShard(merged), bestEffort)
	if err != nil {
		return err
	}
	sh.entries = merged
	sh.touched = make(map[string]struct{})
	return nil
}

func encodeShard(entries map[string]memoEntry) []byte {
	var b bytes.Buffer
	b.WriteString(memoMagic)
	var tmp [binary.MaxVarintLen64]byte
	for p, e := range entries {
		b.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(p)))])
		b.WriteString(p)
		b.Write(tmp[:binary.PutVarint(tmp[:], e.st.Size)])
		b.Write(tmp[:binary.PutVarint(tmp[:], e.st.Mtime)])
		b.Write(tmp[:binary.PutVarint(tmp[:], e.st.Ctime)])
		b.Write(tmp[:binary.PutUvarint(tmp[:], e.st.Ino)])
		b.Write(tmp[:binary.PutUvarint(tmp[:], e.st.Dev)])
		b.Write(tmp[:binary.PutUvarint(tmp[:], uint64(e.st.Mode))])
		b.Write(e.sum[:])
		b.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(e.capability)))])
		b.WriteString(e.capability)
	}
	return binary.BigEndian.AppendUint32(b.Bytes(), crc32.ChecksumIEEE(b.Bytes()))
}

var errBadShard = errors.New("bad hash memo shard")

func decodeShard(data []byte) (map[string]memoEntry, error) {
	if len(data) < len(memoMagic)+4 || string(data[:len(memoMagic)]) != memoMagic {
		return nil, errBadShard
	}
	body, tail := data[:len(data)-4], data[len(data)-4:]
	if crc32.ChecksumIEEE(body) != binary.BigEndian.Uint32(tail) {
		return nil, errBadShard
	}
	// Counted first, so that the map is made at its size: grown entry by
	// entry it would be rehashed into ever larger fresh tables, whose new
	// pages cost a fault each (a no-op rebuild of a large context spent
	// a tenth of its faults there).
	n := 0
	for d := (decoder{b: body[len(memoMagic):]}); len(d.b) > 0 && d.err == nil; n++ {
		d.entry()
	}
	d := decoder{b: body[len(memoMagic):]}
	entries := make(map[string]memoEntry, n)
	for len(d.b) > 0 && d.err == nil {
		p, e := d.entry()
		entries[string(p)] = e
	}
	if d.err != nil {
		return nil, d.err
	}
	return entries, nil
}

// entry reads one entry: its path (in d's buffer) and what is kept of it.
func (d *decoder) entry() ([]byte, memoEntry) {
	p := d.bytes(int(d.uvarint()))
	var e memoEntry
	e.st = fileStat{Size: d.varint(), Mtime: d.varint(), Ctime: d.varint(), Ino: d.uvarint(), Dev: d.uvarint(), Mode: uint32(d.uvarint())}
	copy(e.sum[:], d.bytes(sha256.Size))
	if c := d.bytes(int(d.uvarint())); len(c) > 0 {
		e.capability = string(c)
	}
	return p, e
}

// decoder reads varints and byte runs, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if n < 0 || n > len(d.b) {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errBadShard
	}
	d.b = nil
}
