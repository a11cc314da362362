package snapshot_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/builder-dev/builder/internal/fuzztest"
	"github.com/builder-dev/builder/snapshot"
)

// TestFuzzSeeds is the generator of the seed corpora in
// testdata/fuzz/FuzzApply and testdata/fuzz/FuzzDecompress: it fails when a
// seed file is missing, and rewrites them all with
//
//	go test ./snapshot -run TestFuzzSeeds -update-fuzz-seeds
func TestFuzzSeeds(t *testing.T) {
	apply := axApplySeeds(t)
	fuzztest.CheckSeeds(t, "FuzzApply", apply)
	fuzztest.CheckSeeds(t, "FuzzDecompress", axDecompressSeeds(t))
}

// axSlug turns a case name into a seed file name.
func axSlug(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	s := strings.TrimSuffix(b.String(), "-")
	if len(s) > 60 {
		s = strings.TrimSuffix(s[:60], "-")
	}
	return s
}

// axApplySeeds are the layers of every reliability case (lower and layer in
// one tar, as FuzzApply extracts into an empty root) with host paths of a
// made-up world, plus hostile tar shapes the cases do not build.
func axApplySeeds(t *testing.T) []fuzztest.Seed {
	w := axWorld{dir: "/tmp/axfuzz", root: "/tmp/axfuzz/dest", victim: "/tmp/axfuzz/victim"}
	var seeds []fuzztest.Seed
	used := map[string]int{}
	add := func(name string, data []byte) {
		if used[name]++; used[name] > 1 {
			name += "-" + strconv.Itoa(used[name])
		}
		seeds = append(seeds, fuzztest.Seed{Name: name, Args: []any{data}})
	}
	for _, tc := range axReliabilityCases() {
		add("case-"+axSlug(tc.name), axNoEnd(axTar(t, append(append([]axEnt{}, tc.lower...), tc.layer(w)...)...)))
	}
	good := axTar(t, axDir("d/"), axReg("d/a", strings.Repeat("a", 700)), axReg("d/b", "b"))
	pax := axEnt{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "x", "path": "../escape"}}}
	long := strings.Repeat("long/", 30) + "name"
	gnuLong := axReg(long, "l")
	gnuLong.hdr.Format = tar.FormatGNU
	xattrs := axWithMeta(axReg("x", "x"), 0o4755, 0, 0, map[string]string{
		"user.note": "hi", "trusted.overlay.opaque": "y", "trusted.overlay.redirect": "/etc", "security.capability": snapshot.CapXattrForTest(),
	})
	root := axWithMeta(axDir("./"), 0, 1, 1, nil)
	for _, s := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"zero-blocks", make([]byte, 1024)},
		{"truncated-header", good[:100]},
		{"truncated-content", good[:1100]},
		{"corrupt-checksum", append([]byte{'x'}, good[1:]...)},
		{"end-blocks", good},
		{"trailing-garbage", append(append([]byte{}, good...), "garbage after the end"...)},
		{"pax-global-header-with-path", axTar(t, pax, axReg("f", "f"))},
		{"gnu-long-name", axTar(t, gnuLong)},
		{"xattrs-setuid-overlay", axTar(t, xattrs)},
		{"root-entry-mode-0", axTar(t, root, axReg("f", "f"))},
		{"root-entry-not-a-dir", axTar(t, axReg(".", "x"))},
		{"hardlink-to-dir", axTar(t, axDir("d/"), axLink("l", "d"))},
		{"hardlink-to-root", axTar(t, axLink("l", "."))},
		{"hardlink-chain", axTar(t, axReg("a", "a"), axLink("b", "a"), axLink("c", "b"), axReg("a", "replaced"))},
		{"hardlink-through-symlink-dir", axTar(t, axDir("real/"), axReg("real/f", "f"), axSym("s", "real"), axLink("h", "s/f"))},
		{"symlink-then-file-through-it", axTar(t, axSym("s", "../../victim"), axReg("s/x", "pwned"))},
		{"symlink-then-dir-through-it", axTar(t, axSym("s", "/"), axDir("s/etc/"), axReg("s/etc/passwd", "pwned"))},
		{"symlink-then-whiteout-through-it", axTar(t, axSym("s", ".."), axReg("s/.wh.victim", ""))},
		{"symlink-then-opaque-through-it", axTar(t, axSym("s", "../victim"), axReg("s/.wh..wh..opq", ""))},
		{"opaque-at-root", axTar(t, axReg("keep", "k"), axReg(".wh..wh..opq", ""), axReg("new", "n"))},
		{"whiteout-then-recreate", axTar(t, axReg("f", "1"), axReg(".wh.f", ""), axReg("f", "2"))},
		{"whiteout-dir-entry", axTar(t, axDir(".wh.d/"), axReg(".wh.d/f", "f"))},
		{"whiteout-of-dot-dot", axTar(t, axReg("d/.wh...", ""))},
		{"fifo-char-block", axTar(t, axEnt{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p", Mode: 0o644, ModTime: axEpoch}},
			axDev(tar.TypeChar, "c", 1, 3), axDev(tar.TypeBlock, "b", 7, 0))},
		{"file-over-dir-over-symlink", axTar(t, axReg("d/x/y", "y"), axReg("d", "f"), axSym("d", "x"), axDir("d/"))},
		{"dir-then-mode-0-then-child", axTar(t, axWithMeta(axDir("locked/"), 0, 0, 0, nil), axReg("locked/f", "f"))},
		{"declared-size-beyond-limit", axTarHuge(t)},
		{"nul-in-name", axRawName(t, "a\x00b")},
	} {
		if strings.Contains(s.name, "blocks") || strings.Contains(s.name, "trailing") {
			add(s.name, s.data)
		} else {
			add(s.name, axNoEnd(s.data))
		}
	}
	return seeds
}

// axNoEnd drops the two zero blocks that end a tar written by axTar: a
// tar reader stops at the end of the stream as well, and the zeros cost
// 4 KiB in the quoted corpus file format.
func axNoEnd(data []byte) []byte {
	if n := len(data); n >= 1024 && bytes.Count(data[n-1024:], []byte{0}) == 1024 {
		return data[:n-1024]
	}
	return data
}

// axTarHuge is a header declaring more content than any limit, without it.
func axTarHuge(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "huge", Mode: 0o644, Size: 1 << 40, ModTime: axEpoch}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes() // no content, no end blocks
}

// axRawName is a one-entry tar whose name field holds name verbatim
// (archive/tar refuses to write NUL bytes).
func axRawName(t *testing.T, name string) []byte {
	data := axTar(t, axReg(strings.Repeat("n", len(name)), "x"))
	copy(data, name)
	var sum int64
	for i, c := range data[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	copy(data[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return data
}

// axDecompressSeeds are small archives in every format, truncated and
// corrupted streams, and bare magic numbers.
func axDecompressSeeds(t *testing.T) []fuzztest.Seed {
	tarball := axTar(t, axDir("d/"), axReg("d/f", strings.Repeat("hello ", 50)), axSym("d/s", "f"))
	gz, zst := axGzip(t, tarball), axZstd(t, tarball)
	badCRC := append([]byte{}, gz...)
	badCRC[len(badCRC)-8] ^= 0xff
	seeds := []fuzztest.Seed{
		{Name: "empty", Args: []any{[]byte{}}},
		{Name: "tar", Args: []any{tarball}},
		{Name: "gzip-tar", Args: []any{gz}},
		{Name: "zstd-tar", Args: []any{zst}},
		{Name: "gzip-truncated", Args: []any{gz[:len(gz)/2]}},
		{Name: "gzip-bad-crc", Args: []any{badCRC}},
		{Name: "gzip-two-members", Args: []any{append(append([]byte{}, gz...), axGzip(t, []byte("second member"))...)}},
		{Name: "gzip-of-gzip", Args: []any{axGzip(t, gz)}},
		{Name: "gzip-zeros-bomb", Args: []any{axGzip(t, make([]byte, 1<<20))}},
		{Name: "zstd-truncated", Args: []any{zst[:len(zst)/2]}},
		// A zstd frame header asking for the largest window (2^41 bytes).
		{Name: "zstd-huge-window", Args: []any{[]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0x00, 0x00, 0x00}}},
		// A single-segment frame whose header declares 256 KiB of content:
		// the decoder allocates that window before reading any block (up
		// to 512 MiB for a 16-byte input; see fuzzDecompressBounds). Small
		// here: a seed's mutations inherit its cost.
		{Name: "zstd-single-segment-256kib", Args: []any{[]byte{0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0x00, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00}}},
		// A skippable frame, then the tar's frame.
		{Name: "zstd-skippable-frame", Args: []any{append([]byte{0x50, 0x2a, 0x4d, 0x18, 0x04, 0x00, 0x00, 0x00, 's', 'k', 'i', 'p'}, zst...)}},
		{Name: "magic-gzip", Args: []any{[]byte{0x1f, 0x8b, 0x08, 0x00}}},
		{Name: "magic-zstd", Args: []any{[]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00}}},
		{Name: "magic-bzip2", Args: []any{[]byte("BZh91AY&SY")}},
		{Name: "magic-xz", Args: []any{[]byte{0xfd, '7', 'z', 'X', 'Z', 0x00, 0x00, 0x04}}},
	}
	// bzip2 and xz seeds come from the system tools when they are there
	// (CI installs them); the generator output then does not depend on
	// which machine ran it only through those tools' versions.
	for _, tool := range []struct{ name, bin string }{{"bzip2-tar", "bzip2"}, {"xz-tar", "xz"}} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			continue
		}
		out := axCompressCmd(t, tarball, tool.bin, "-c")
		seeds = append(seeds, fuzztest.Seed{Name: tool.name, Args: []any{out}},
			fuzztest.Seed{Name: tool.name + "-truncated", Args: []any{out[:len(out)/2]}})
	}
	return seeds
}
