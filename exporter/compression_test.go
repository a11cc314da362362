package exporter

import (
	"bytes"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

func TestCompressionOptions(t *testing.T) {
	for _, c := range []struct {
		opts    []string
		want    string // String(), or the error
		wantErr bool
	}{
		{opts: nil, want: "gzip"},
		{opts: []string{"compression=zstd"}, want: "zstd"},
		{opts: []string{"compression=zstd", "compression-level=19"}, want: "zstd-19"},
		{opts: []string{"compression=gzip", "compression-level=9", "force-compression=true"}, want: "gzip-9"},
		{opts: []string{"compression=uncompressed"}, want: "uncompressed"},
		{opts: []string{"compression=estargz"}, want: `compression="estargz": want gzip, zstd or uncompressed`, wantErr: true},
		{opts: []string{"compression-level=10"}, want: "gzip takes 0-9", wantErr: true},
		{opts: []string{"compression=zstd", "compression-level=23"}, want: "zstd takes 0-22", wantErr: true},
		{opts: []string{"compression=uncompressed", "compression-level=1"}, want: "has no level", wantErr: true},
		{opts: []string{"compression-level=x"}, want: "not a number", wantErr: true},
		{opts: []string{"force-compression=maybe"}, want: "not a boolean", wantErr: true},
	} {
		var comp Compression
		var err error
		for _, o := range c.opts {
			k, v, _ := strings.Cut(o, "=")
			ok, serr := comp.SetOption(k, v)
			if !ok {
				t.Fatalf("%s: not a compression option", o)
			}
			if serr != nil && err == nil {
				err = serr
			}
		}
		if err == nil {
			err = comp.Validate()
		}
		if c.wantErr {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v: error %v, want %q", c.opts, err, c.want)
			}
			continue
		}
		if err != nil || comp.String() != c.want {
			t.Errorf("%v: %s, %v; want %s", c.opts, comp, err, c.want)
		}
	}
	if ok, _ := new(Compression).SetOption("dest", "x"); ok {
		t.Error("dest= taken as a compression option")
	}
}

func TestCompressionKeeps(t *testing.T) {
	gzip, zstd, plain, docker := types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer, types.DockerLayer
	for _, c := range []struct {
		comp Compression
		mt   types.MediaType
		want bool
	}{
		{Compression{}, plain, false},
		{Compression{}, gzip, true},
		{Compression{}, zstd, true}, // kept without force-compression
		{Compression{Codec: Zstd}, gzip, true},
		{Compression{Codec: Zstd, Force: true}, gzip, false},
		{Compression{Codec: Zstd, Force: true}, zstd, true},
		{Compression{Codec: Zstd, Force: true, Level: 19, LevelSet: true}, zstd, false},
		{Compression{Force: true}, docker, true},
		{Compression{Force: true}, zstd, false},
		{Compression{Codec: Uncompressed}, plain, true},
		{Compression{Codec: Uncompressed}, gzip, true},
		{Compression{Codec: Uncompressed, Force: true}, gzip, false},
	} {
		if got := c.comp.keeps(c.mt); got != c.want {
			t.Errorf("%s (force %v) keeps %s: %v, want %v", c.comp, c.comp.Force, c.mt, got, c.want)
		}
	}
}

// TestCompressedPerCodec: the compressed blob of a layer is remembered per
// codec and level: each setting compresses the layer once, to its own
// blob, media type and record, and a second call of any of them reads
// only the record. force-compression does not change the bytes.
func TestCompressedPerCodec(t *testing.T) {
	tars := &countingTars{fakeLayers: newFakeLayers()}
	data := layerTar(t, map[string]string{"big": strings.Repeat("0123456789", 300000)})
	diffID, size := tars.put(data)
	l, err := LayerFromStore(t.Context(), tars, diffID, size)
	if err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	settings := []Compression{{}, {Codec: Zstd}, {Codec: Zstd, Level: 19, LevelSet: true}, {Level: 1, LevelSet: true}}
	digests := map[v1.Hash]string{}
	for round := range 2 {
		for _, c := range settings {
			cl, err := st.Compressed(t.Context(), l, c, nil)
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			d, _ := cl.Digest()
			mt, _ := cl.MediaType()
			if mt != c.mediaType() {
				t.Errorf("%s: media type %s, want %s", c, mt, c.mediaType())
			}
			rc, err := cl.Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			back, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(back) != string(data) {
				t.Fatalf("%s: the blob does not decompress to the layer (%v)", c, err)
			}
			if round == 0 {
				if prev, ok := digests[d]; ok {
					t.Errorf("%s and %s gave the same blob", c, prev)
				}
				digests[d] = c.String()
			} else if digests[d] != c.String() {
				t.Errorf("%s: second call gave blob %s (%q)", c, d, digests[d])
			}
		}
		if tars.count() != len(settings) {
			t.Errorf("round %d: layer serialized %d times, want %d (once per setting)", round, tars.count(), len(settings))
		}
	}
	h, _ := v1.NewHash(diffID)
	names := map[string]bool{}
	entries, _ := os.ReadDir(st.compressedDir)
	for _, e := range entries {
		names[e.Name()] = true
	}
	for _, want := range []string{h.Hex + ".json", h.Hex + ".zstd.json", h.Hex + ".zstd-19.json", h.Hex + ".gzip-1.json"} {
		if !names[want] {
			t.Errorf("no record %s among %v", want, names)
		}
	}
	forced, err := st.Compressed(t.Context(), l, Compression{Codec: Zstd, Force: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := forced.Digest(); digests[d] != "zstd" || tars.count() != len(settings) {
		t.Errorf("force-compression of an uncompressed layer: blob %s (%q), %d serializations", d, digests[d], tars.count())
	}
	// fsck accepts every record.
	if probs, err := st.fsckCompressed(t.Context(), false); err != nil || len(probs) != 0 {
		t.Errorf("fsck of the records: %v %v", probs, err)
	}
}

// TestZstdSmallLayerModes: a layer smaller than zstd's sample is
// compressed by one encoder in the stream mode: the same bytes on any
// number of cores, which decompress to the layer, and for a layer all
// text or all random bytes the bytes the job mode (random: the stream
// mode on every core) gave it before, so such blobs of earlier builders
// keep their digests; a layer that mixes both may now differ by a few
// bytes.
func TestZstdSmallLayerModes(t *testing.T) {
	inputs := map[string][]byte{"empty": nil, "small": reproData(100 << 10), "text": reproData(zstdSample - 1),
		"random": randomData(zstdSample - 1), "mixed": append(reproData(1<<20), randomData(2<<20)...)}
	saved := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(saved) })
	for _, c := range []Compression{{Codec: Zstd}, {Codec: Zstd, Level: 1, LevelSet: true}, {Codec: Zstd, Level: 19, LevelSet: true}} {
		level := zstd.SpeedDefault
		if c.LevelSet {
			level = zstd.EncoderLevelFromZstd(c.Level)
		}
		for name, data := range inputs {
			var ref []byte
			for _, procs := range []int{1, 2, 8} {
				runtime.GOMAXPROCS(procs)
				var out bytes.Buffer
				if err := c.compress(t.Context(), &out, bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
				if ref == nil {
					ref = out.Bytes()
				} else if !bytes.Equal(out.Bytes(), ref) {
					t.Errorf("%s, %s, GOMAXPROCS=%d: %d bytes differ from GOMAXPROCS=1's %d", c, name, procs, out.Len(), len(ref))
				}
			}
			zr, err := zstd.NewReader(bytes.NewReader(ref))
			if err != nil {
				t.Fatal(err)
			}
			back, err := io.ReadAll(zr)
			zr.Close()
			if err != nil || !bytes.Equal(back, data) {
				t.Errorf("%s, %s: decompressed %d bytes (%v), want the %d compressed", c, name, len(back), err, len(data))
			}
			if name == "mixed" {
				continue
			}
			opts := []zstd.EOption{zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(2)}
			if !incompressible(data) {
				opts = append(opts, zstd.WithConcurrentBlocks(true))
			}
			var before bytes.Buffer
			zw, err := zstd.NewWriter(&before, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := zw.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ref, before.Bytes()) {
				t.Errorf("%s, %s (%d bytes): %d bytes, the earlier mode's %d", c, name, len(data), len(ref), before.Len())
			}
		}
	}
}
