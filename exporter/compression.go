package exporter

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// Codec names a layer compression, as buildx's compression= option.
type Codec string

// The codecs of compression=.
const (
	Gzip         Codec = "gzip"
	Zstd         Codec = "zstd"
	Uncompressed Codec = "uncompressed"
)

// Compression is how layers are compressed where they leave the machine
// (push, --cache-to, OCI archives). The zero value is gzip at its default
// level, buildx's default.
type Compression struct {
	Codec Codec // "" is Gzip
	// Level is compression-level=N: 0-9 for gzip, 0-22 for zstd (zstd's
	// scale, mapped onto klauspost/compress's four speeds as BuildKit
	// does). LevelSet false means the codec's default.
	Level    int
	LevelSet bool
	// Force is force-compression=true: layers compressed otherwise (a
	// base image's) are compressed again with this codec and level,
	// instead of being sent as they are.
	Force bool
}

// SetOption applies one key=value option of an output or --cache-to
// (compression, compression-level, force-compression) and reports whether
// key was one of them.
func (c *Compression) SetOption(key, val string) (bool, error) {
	switch key {
	case "compression":
		switch Codec(val) {
		case Gzip, Zstd, Uncompressed:
			c.Codec = Codec(val)
		default:
			return true, fmt.Errorf("compression=%q: want gzip, zstd or uncompressed", val)
		}
	case "compression-level":
		n, err := strconv.Atoi(val)
		if err != nil {
			return true, fmt.Errorf("compression-level=%q is not a number", val)
		}
		c.Level, c.LevelSet = n, true
	case "force-compression":
		b, err := strconv.ParseBool(val)
		if err != nil {
			return true, fmt.Errorf("force-compression=%q is not a boolean", val)
		}
		c.Force = b
	default:
		return false, nil
	}
	return true, nil
}

// Validate checks the level against the codec.
func (c Compression) Validate() error {
	if !c.LevelSet {
		return nil
	}
	switch c.codec() {
	case Gzip:
		if c.Level < 0 || c.Level > 9 {
			return fmt.Errorf("compression-level=%d: gzip takes 0-9", c.Level)
		}
	case Zstd:
		if c.Level < 0 || c.Level > 22 {
			return fmt.Errorf("compression-level=%d: zstd takes 0-22", c.Level)
		}
	case Uncompressed:
		return fmt.Errorf("compression-level=%d: compression=uncompressed has no level", c.Level)
	}
	return nil
}

func (c Compression) codec() Codec {
	if c.Codec == "" {
		return Gzip
	}
	return c.Codec
}

// String names the codec and level: "gzip", "zstd-19".
func (c Compression) String() string {
	if c.LevelSet {
		return fmt.Sprintf("%s-%d", c.codec(), c.Level)
	}
	return string(c.codec())
}

// SameBlobs reports whether c and o compress a layer to the same blob:
// the same codec and level (force-compression aside).
func (c Compression) SameBlobs(o Compression) bool { return c.recorded() == o.recorded() }

// mediaType is the OCI layer media type of the codec's blobs.
func (c Compression) mediaType() types.MediaType {
	switch c.codec() {
	case Zstd:
		return types.OCILayerZStd
	case Uncompressed:
		return types.OCIUncompressedLayer
	}
	return types.OCILayer
}

// recordName is the name of the compressed/ record of diffID's blob with
// these settings: <hex>.json for gzip at its default level (the name every
// earlier builder used), <hex>.<codec>[-<level>].json otherwise.
func (c Compression) recordName(hex string) string {
	if c.codec() == Gzip && !c.LevelSet {
		return hex + ".json"
	}
	return hex + "." + c.String() + ".json"
}

// keeps reports whether a layer of media type mt goes out as it is:
// uncompressed layers are compressed, a compressed one is compressed
// again only with force-compression and another codec or an explicit
// level.
func (c Compression) keeps(mt types.MediaType) bool {
	if isUncompressed(mt) {
		return c.codec() == Uncompressed
	}
	if !c.Force {
		return true
	}
	same := (c.codec() == Gzip && (mt == types.OCILayer || mt == types.DockerLayer)) ||
		(c.codec() == Zstd && mt == types.OCILayerZStd)
	return same && !c.LevelSet
}

// compressBlockSize fixes pgzip's block size: the compressed bytes depend
// on it, never on the number of blocks compressed in parallel.
const compressBlockSize = 1 << 20

// encoders is how many blocks are compressed at once: every core, and at
// least 2, because zstd's parallel mode (whose output, split in jobs of a
// size fixed by the level, does not depend on how many run at once) is
// only used with more than one encoder.
func encoders() int { return max(2, runtime.GOMAXPROCS(0)) }

// zstdSample is how much of a layer decides its zstd mode (incompressible).
const zstdSample = 4 << 20

// incompressible reports whether a layer that starts with head is
// incompressible: bytes spread as evenly as random or already compressed
// data (over 7.9 bits of entropy per byte). zstd's job mode, which
// compresses sections of a stream on every core (and is faster on what
// compresses), spends about twice the CPU of its stream mode on such data,
// which the stream mode passes through at about the zstd CLI's speed; both
// give the same bytes whatever the number of cores, and which one a layer
// gets depends on its bytes only.
func incompressible(head []byte) bool {
	if len(head) < 64<<10 {
		return false
	}
	var counts [256]int
	for _, b := range head {
		counts[b]++
	}
	n := float64(len(head))
	bits := 0.0
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			bits -= p * math.Log2(p)
		}
	}
	return bits > 7.9
}

// compress writes r compressed with c to w, on every core. The output is
// a function of r's bytes and c only: gzip has a header without name or
// time and a fixed block size; zstd runs in its job mode, or in its
// stream mode when the layer starts incompressible (incompressible).
func (c Compression) compress(ctx context.Context, w io.Writer, r io.Reader) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	var zw io.WriteCloser
	switch c.codec() {
	case Gzip:
		level := pgzip.DefaultCompression
		if c.LevelSet {
			level = c.Level
		}
		gw, err := pgzip.NewWriterLevel(bw, level)
		if err != nil {
			return err
		}
		// pgzip writes the zero time as 2042 (a wrapped uint32).
		gw.Header.ModTime = time.Unix(0, 0)
		if err := gw.SetConcurrency(compressBlockSize, encoders()); err != nil {
			return err
		}
		zw = gw
	case Zstd:
		level := zstd.SpeedDefault
		if c.LevelSet {
			level = zstd.EncoderLevelFromZstd(c.Level)
		}
		br := bufio.NewReaderSize(r, zstdSample)
		head, _ := br.Peek(zstdSample) // shorter at the end of r; an error surfaces in the copy
		r = br
		opts := []zstd.EOption{zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(encoders())}
		switch {
		case len(head) < zstdSample:
			// The whole layer: one encoder in the stream mode, the
			// same bytes on any number of cores, without the job
			// mode's buffers (about 90 MB, which cost more than
			// compressing a small layer; for a layer all text or all
			// random bytes, the job mode's bytes too:
			// TestZstdSmallLayerModes).
			opts = []zstd.EOption{zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1)}
		case !incompressible(head):
			opts = append(opts, zstd.WithConcurrentBlocks(true))
		}
		ew, err := zstd.NewWriter(bw, opts...)
		if err != nil {
			return err
		}
		zw = ew
	default:
		return fmt.Errorf("compress: codec %q", c.codec())
	}
	if _, err := io.Copy(zw, contextReader{ctx: ctx, r: r}); err != nil {
		zw.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// recorded is c as a compressed record states it: the codec ("" for gzip)
// and the level; force does not change the bytes.
func (c Compression) recorded() Compression {
	r := Compression{Codec: c.codec(), Level: c.Level, LevelSet: c.LevelSet}
	if r.Codec == Gzip {
		r.Codec = ""
	}
	if !r.LevelSet {
		r.Level = 0
	}
	return r
}

// codecOf is the compression of a layer media type's blobs.
func codecOf(mt types.MediaType) Compression {
	switch mt {
	case types.OCILayerZStd:
		return Compression{Codec: Zstd}
	case types.OCILayer, types.DockerLayer:
		return Compression{}
	}
	return Compression{Codec: Uncompressed}
}

// decompress reads the blob r of media type mt uncompressed.
func decompress(r io.Reader, mt types.MediaType) (io.ReadCloser, error) {
	switch codecOf(mt).codec() {
	case Gzip:
		zr, err := pgzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		return zr, nil
	case Zstd:
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(r), nil
}
