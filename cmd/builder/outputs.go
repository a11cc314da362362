package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/builder-dev/builder/cache"
	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/internal/outfile"
	"github.com/builder-dev/builder/planner"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// output is one -o value, as buildx reads it. dest is the file or
// directory of docker, oci, local and tar outputs ("-": standard output);
// name belongs to image and registry outputs (and names the image of oci
// and docker ones), push to image and registry outputs.
type output struct {
	typ, dest, name string
	push            bool
	comp            exporter.Compression // oci, image and registry outputs
	// tar=false writes an OCI (or docker) layout directory at dest.
	dir bool
	// rewriteTimestamp (rewrite-timestamp=true) clamps the file times of
	// the layers the build made to the epoch, as BuildKit's exporters.
	rewriteTimestamp bool
	// epoch is source-date-epoch=: nil leaves the build's
	// SOURCE_DATE_EPOCH, "" turns the exporter's epoch off.
	epoch *string
	// split is platform-split= of local and tar outputs: nil is
	// BuildKit's default, one directory per platform of a multi-platform
	// build.
	split *bool
}

// platformSplit reports whether a local or tar output of a build, multi
// (a multi-platform build, even of one platform) or not, puts each
// platform's files in a directory of its own, as BuildKit's exporters:
// by default only a multi-platform build's.
func (o output) platformSplit(multi bool) bool {
	if o.split == nil {
		return multi
	}
	return *o.split
}

// parseOutputs parses -o values: type=docker|oci|local|tar,dest=PATH
// (docker without dest loads into the Docker engine; dest=- is standard
// output), type=registry,name=REF (a push), type=image,name=REF[,push=
// true] (a local tag, pushed too with push=true), a bare path meaning
// type=local, "-" meaning type=tar on standard output, and buildx's
// exporter options (compression, tar, rewrite-timestamp,
// source-date-epoch).
func parseOutputs(vals []string) ([]output, error) {
	var outs []output
	for _, v := range vals {
		o, err := parseOutput(v)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", v, err)
		}
		outs = append(outs, o)
	}
	return outs, nil
}

func parseOutput(v string) (output, error) {
	switch {
	case v == "-":
		return output{typ: "tar", dest: "-"}, nil
	case !strings.Contains(v, "="):
		return output{typ: "local", dest: v}, nil
	}
	var o output
	compression := false
	fields, err := csvFields(v)
	if err != nil {
		return o, err
	}
	for _, kv := range fields {
		k, val, _ := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		var err error
		switch k {
		case "type":
			o.typ = val
		case "dest":
			o.dest = val
		case "name":
			o.name = val
		case "push":
			o.push, err = parseBool(val)
		case "tar":
			var tar bool
			tar, err = parseBool(val)
			o.dir = !tar
		case "rewrite-timestamp":
			o.rewriteTimestamp, err = parseBool(val)
		case "platform-split":
			var split bool
			split, err = parseBool(val)
			o.split = &split
		case "source-date-epoch":
			if val != "" {
				if _, perr := strconv.ParseInt(val, 10, 64); perr != nil {
					err = fmt.Errorf("source-date-epoch=%q is not a number of seconds", val)
				}
			}
			o.epoch = &val
		default:
			var ok bool
			ok, err = o.comp.SetOption(k, val)
			if err == nil && !ok {
				err = fmt.Errorf("unknown key %q", k)
			}
			compression = true
		}
		if err != nil {
			return o, fmt.Errorf("%s: %w", k, err)
		}
	}
	if o.typ == "" && o.dest != "" {
		o.typ = "local" // buildx: -o dest=DIR
	}
	return o, o.check(compression)
}

// imageNames are the names --metadata-file gives as image.name: the
// tags, else those of the first oci or docker output with a name=, as
// BuildKit's exporter of that output reports them.
func imageNames(tags []string, outs []output) []string {
	if len(tags) > 0 {
		return tags
	}
	for _, o := range outs {
		if names := o.archiveNames(nil); len(names) > 0 {
			return names
		}
	}
	return tags
}

// archiveNames are the names an oci or docker output gives its image (in
// the archive's index.json and manifest.json, or in the Docker engine):
// its name= (comma-separated), else the build's tags, as buildx gives an
// exporter without a name the -t tags.
func (o output) archiveNames(tags []string) []string {
	if o.name == "" || (o.typ != "oci" && o.typ != "docker") {
		return tags
	}
	return strings.Split(o.name, ",")
}

func (o *output) check(compression bool) error {
	if err := o.comp.Validate(); err != nil {
		return err
	}
	if compression && o.typ != "oci" && o.typ != "image" && o.typ != "registry" {
		return fmt.Errorf("compression options belong to type=oci, image or registry (type=%s writes uncompressed layers)", o.typ)
	}
	if o.dir && o.typ != "oci" && o.typ != "docker" {
		return fmt.Errorf("tar=false belongs to type=oci and type=docker")
	}
	if o.split != nil && o.typ != "local" && o.typ != "tar" {
		return fmt.Errorf("platform-split belongs to type=local and type=tar")
	}
	if o.name != "" && (o.typ == "oci" || o.typ == "docker") {
		if err := checkNames(o.archiveNames(nil)); err != nil {
			return err
		}
	}
	switch o.typ {
	case "docker":
		// Without dest: load into the Docker engine, as buildx.
		if o.dir && (o.dest == "" || o.dest == "-") {
			return fmt.Errorf("tar=false needs dest=DIR")
		}
	case "oci", "tar":
		if o.dest == "" || (o.dir && o.dest == "-") {
			return fmt.Errorf("dest=PATH is required")
		}
	case "local":
		if o.dest == "" || o.dest == "-" {
			return fmt.Errorf("dest=DIR is required")
		}
	case "image", "registry":
		if o.name == "" {
			return fmt.Errorf("name=REF is required")
		}
		if err := checkNames([]string{o.name}); err != nil {
			return err
		}
		o.push = o.push || o.typ == "registry"
	default:
		return fmt.Errorf("unknown type %q (want docker, oci, local, tar, image or registry)", o.typ)
	}
	return nil
}

// exportEpoch is how output o applies SOURCE_DATE_EPOCH: the build's
// (epoch) unless o names its own, rewriting layer times with
// rewrite-timestamp=true.
func (o output) exportEpoch(epoch *time.Time, base *v1.ConfigFile, tmp string, notice func(string)) exporter.Epoch {
	e := exporter.Epoch{Time: epoch, Rewrite: o.rewriteTimestamp, TempDir: tmp}
	if base != nil {
		e.Base, e.BaseHistory = base.RootFS.DiffIDs, base.History
	}
	if o.epoch != nil {
		e.Time = nil
		if n, err := strconv.ParseInt(*o.epoch, 10, 64); err == nil {
			t := time.Unix(n, 0).UTC()
			e.Time = &t
		}
	}
	if e.Rewrite && e.Time == nil {
		notice("[warning] rewrite-timestamp is specified, but no source-date-epoch was found")
	}
	return e
}

// exported is where a build's image went.
type exported struct {
	local v1.Hash // manifest digest in the local store
	// pushed and oci are the manifests of a pushed image (as the registry
	// resolves it) and of the image in an OCI output; engineID is the image
	// ID a Docker engine that loaded the image shows (--load).
	pushed, oci v1.Descriptor
	engineID    string
	// localDesc is the local store's manifest.
	localDesc v1.Descriptor
	// platforms are the images of a multi-platform build's index.
	platforms []platformDigests
}

// platformDigests is one platform's image of a multi-platform build, in
// the local store (--metadata-file's "platforms").
type platformDigests struct {
	Platform string `json:"platform"`
	Digest   string `json:"image.digest"`
	Config   string `json:"config.digest"`
}

// id is the image ID to report (-q, --iidfile, containerimage.digest):
// the digest that exists where the image went, as buildx reports it: the
// pushed manifest's, else the ID the engine that loaded it shows, else the
// OCI output's manifest, else the local store's.
func (e exported) id() string {
	if e.engineID != "" && e.pushed.Digest == (v1.Hash{}) {
		return e.engineID
	}
	return e.manifest().Digest.String()
}

// manifest is the image's manifest where it went (containerimage.digest
// and containerimage.descriptor): the pushed one, else the OCI output's,
// else the local store's.
func (e exported) manifest() v1.Descriptor {
	switch {
	case e.pushed.Digest != (v1.Hash{}):
		return e.pushed
	case e.oci.Digest != (v1.Hash{}):
		return e.oci
	}
	return e.localDesc
}

// exportRun is one build's export: the image, where it goes, and what is
// needed on the way.
type exportRun struct {
	st     *stores
	prog   *progress
	ro     exporter.RemoteOptions
	stdout io.Writer
	epoch  *time.Time
	base   *v1.ConfigFile // the final stage's base image's config, or nil
	// platform is the image's platform (of a single-platform build).
	platform v1.Platform
	// windowsLayers are executor.Result.WindowsLayers (of a
	// single-platform build).
	windowsLayers []bool
	done          *[]cache.BuildOutput
	attest        *attestRun // the build's attestations (attest.go); nil: none
	// keeps are the compressions whose blobs the build keeps anyway (its
	// pushes' and cache exports'): an OCI archive with one of them
	// compresses its layers into the store for both.
	keeps []exporter.Compression
}

// keptCompressions lists the compressions of outs' pushes and of the
// (not inline) cache exports specs.
func keptCompressions(outs []output, specs []cacheSpec) []exporter.Compression {
	var keeps []exporter.Compression
	for _, o := range outs {
		if (o.typ == "image" || o.typ == "registry") && o.push {
			keeps = append(keeps, o.comp)
		}
	}
	for _, c := range specs {
		if !c.inline {
			keeps = append(keeps, c.comp)
		}
	}
	return keeps
}

// exportAll writes the requested outputs and pushes, then stores the image
// in the local store under its tags (and the names of type=image outputs),
// so a failed export never leaves a tag behind. Each output written is
// added to done.
func (r *exportRun) exportAll(ctx context.Context, img v1.Image, tags []string, outs []output) (exported, error) {
	var ex exported
	tags = append([]string(nil), tags...)
	for _, o := range outs {
		if o.typ == "image" {
			tags = append(tags, o.name)
		}
		rec, err := r.export(ctx, img, tags, o, &ex)
		if err != nil {
			return ex, fmt.Errorf("export %s: %w", o.typ, err)
		}
		if o.typ != "image" || o.push {
			*r.done = append(*r.done, rec)
		}
	}
	digest, err := r.st.images.Put(ctx, img, tags)
	if err == nil {
		err = r.attest.store(ctx, r.st, img, tags)
	}
	if err != nil {
		return ex, fmt.Errorf("store image: %w", err)
	}
	*r.done = append(*r.done, cache.BuildOutput{Type: "image", Name: strings.Join(tags, ","), Digest: digest.String()})
	for _, t := range tags {
		r.prog.Notice("naming to " + t)
	}
	ex.local = digest
	if d, err := partial.Descriptor(img); err == nil {
		ex.localDesc = *d
	}
	return ex, nil
}

// export writes one output.
// writeOCI writes tagged as output o, an OCI archive or layout, and
// records in ex the descriptor its index names (the digest it reports).
func (r *exportRun) writeOCI(ctx context.Context, o output, tagged []exporter.Tagged, ex *exported) error {
	keep := !o.rewriteTimestamp && slices.ContainsFunc(r.keeps, o.comp.SameBlobs)
	write := func(path string) error { return r.st.images.WriteOCI(ctx, path, tagged, o.comp, keep) }
	return r.writeArchive(ctx, o, write, func(path string) error {
		idx, err := exporter.OCIIndex(path)
		if err == nil && len(idx.Manifests) > 0 {
			// BuildKit's descriptor (containerimage.descriptor) has the
			// creation time, not the names the archive adds.
			ex.oci = idx.Manifests[0]
			created, ok := ex.oci.Annotations[ocispec.AnnotationCreated]
			ex.oci.Annotations = nil
			if ok {
				ex.oci.Annotations = map[string]string{ocispec.AnnotationCreated: created}
			}
		}
		return err
	})
}

func (r *exportRun) export(ctx context.Context, img v1.Image, tags []string, o output, ex *exported) (cache.BuildOutput, error) {
	rec := cache.BuildOutput{Type: o.typ, Dest: o.dest, Name: o.name}
	tmp, err := r.st.cache.ScratchDir()
	if err != nil {
		return rec, err
	}
	epoch := o.exportEpoch(r.epoch, r.base, tmp, r.prog.Notice)
	if img, err = epoch.Apply(img); err != nil {
		return rec, err
	}
	platform, err := exporter.ImagePlatform(img)
	if err != nil {
		return rec, err
	}
	names := o.archiveNames(tags)
	tagged := []exporter.Tagged{{Image: img, Tags: names, Attest: r.attest.forOutput(o, names, r.prog.Notice), Created: epoch.Created(), Platform: platform}}
	if o.dest != "" && o.dest != "-" {
		r.prog.Notice(fmt.Sprintf("exporting to %s %s", o.typ, o.dest))
	}
	switch o.typ {
	case "docker":
		if o.dest == "" {
			ex.engineID, err = loadIntoEngine(ctx, r.st, tagged, r.prog)
			return rec, err
		}
		err = r.writeArchive(ctx, o, func(path string) error { return exporter.WriteDocker(ctx, path, tagged) }, nil)
	case "oci":
		err = r.writeOCI(ctx, o, tagged, ex)
	case "local":
		var sub string
		if o.platformSplit(false) {
			sub = platformDir(r.platform)
		}
		if err = exporter.WriteLocalOutput(ctx, o.dest, sub, filesImage(img, r.windowsLayers)); err == nil {
			err = r.attest.writeFiles(filepath.Join(o.dest, sub), r.epoch)
		}
	case "tar":
		err = r.writeStream(o.dest, func(w io.Writer) error {
			return r.attest.writeFlattened(w, filesImage(img, r.windowsLayers), r.epoch)
		})
	case "image", "registry":
		if !o.push {
			return rec, nil
		}
		r.prog.Notice("pushing " + o.name)
		po := r.ro
		po.Compression = o.comp
		var d v1.Descriptor
		if d, err = r.attest.push(ctx, r.st, img, o.name, po); err == nil {
			r.prog.Notice(fmt.Sprintf("pushed %s@%s", o.name, d.Digest))
			rec.Type, rec.Digest, ex.pushed = "registry", d.Digest.String(), d
		}
	}
	return rec, err
}

// writeArchive writes an archive output: at dest, to standard output
// (dest=-) or into a device or pipe through a temporary file, or as a
// layout directory (tar=false); then calls written, if not nil, with the
// archive's path (which written may read back).
func (r *exportRun) writeArchive(ctx context.Context, o output, write, written func(path string) error) error {
	if written == nil {
		written = func(string) error { return nil }
	}
	out := r.stdout
	var dest *os.File // a device or pipe written in place
	if o.dest != "-" && !o.dir {
		inPlace, err := outfile.Target(o.dest)
		if err != nil {
			return err
		}
		if !inPlace {
			if err := write(o.dest); err != nil {
				return err
			}
			return written(o.dest)
		}
		if dest, err = os.OpenFile(o.dest, os.O_WRONLY, 0); err != nil {
			return err
		}
		defer dest.Close()
		out = dest
	}
	dir, err := r.st.cache.ScratchDir()
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "archive.tar")
	defer os.Remove(tmp)
	if err := write(tmp); err != nil {
		return err
	}
	if err := written(tmp); err != nil {
		return err
	}
	if o.dir {
		return exporter.ExtractLayout(ctx, tmp, o.dest)
	}
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err = io.Copy(out, f); err != nil {
		return err
	}
	if dest != nil {
		return dest.Close()
	}
	return nil
}

// writeStream writes a stream output to dest ("-": standard output),
// replacing dest atomically.
func (r *exportRun) writeStream(dest string, fill func(io.Writer) error) error {
	if dest == "-" {
		return fill(r.stdout)
	}
	return writeFileWith(dest, 0o600, fill)
}

// filesImage is img as its files are read for a local or tar output or a
// scan: those of its layers in the Windows layer format
// (executor.Result.WindowsLayers) are below Files/
// (exporter.WindowsFiles).
func filesImage(img v1.Image, windowsLayers []bool) v1.Image {
	if windowsLayers != nil {
		return exporter.WindowsFiles(img, windowsLayers)
	}
	return img
}

// writeFlattened writes img's root filesystem as one tar (type=tar).
func writeFlattened(w io.Writer, img v1.Image) error {
	rc := exporter.Flatten(img)
	defer rc.Close()
	_, err := io.Copy(w, rc)
	return err
}

// loadIntoEngine streams the image, as a docker-save archive, into the
// Docker engine of $DOCKER_HOST (--load, -o type=docker without dest) and
// returns the ID the engine shows for it.
func loadIntoEngine(ctx context.Context, st *stores, tagged []exporter.Tagged, prog *progress) (string, error) {
	eng, err := exporter.NewEngine("")
	if err != nil {
		return "", err
	}
	prog.Notice("loading into the docker engine at " + eng.Host())
	dir, err := st.cache.ScratchDir()
	if err != nil {
		return "", err
	}
	archive := filepath.Join(dir, "load.tar")
	defer os.Remove(archive)
	if err := exporter.WriteDocker(ctx, archive, tagged); err != nil {
		return "", err
	}
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	lines, err := eng.Load(ctx, f)
	if err != nil {
		return "", err
	}
	for _, l := range lines {
		prog.Notice(l)
	}
	ref := tagged[0].Tags
	if len(ref) == 0 {
		// Untagged: the engine knows the image by its config digest.
		cfg, err := tagged[0].Image.ConfigName()
		if err != nil {
			return "", err
		}
		return eng.ImageID(ctx, cfg.String())
	}
	return eng.ImageID(ctx, ref[0])
}

// baseConfig is the config of the image the stage is built on, through
// the stages it is built on (nil for scratch): its layers and history
// entries are those an exporter never rewrites.
func baseConfig(st *planner.Stage) *v1.ConfigFile {
	for st.Base.Stage != nil {
		st = st.Base.Stage
	}
	if img := st.Base.Image; img != nil {
		return img.Config
	}
	return nil
}

// parseAnnotations reads --annotation values as buildx does: KEY=VALUE
// or manifest:KEY=VALUE annotate the image manifest. Annotations of an
// image index (index:, index-descriptor:, manifest-descriptor:) belong to
// multi-platform builds.
func parseAnnotations(vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, v := range vals {
		kv, val, ok := strings.Cut(v, "=")
		if !ok || kv == "" {
			return nil, fmt.Errorf("--annotation %q: want KEY=VALUE", v)
		}
		if typ, key, typed := strings.Cut(kv, ":"); typed && !strings.Contains(typ, ".") {
			if typ != "manifest" {
				return nil, fmt.Errorf("--annotation %q: %s annotations need an image index (a multi-platform build)", v, typ)
			}
			kv = key
		}
		out[kv] = val
	}
	return out, nil
}

// annotate returns img with its manifest annotated (--annotation).
func annotate(img v1.Image, ann map[string]string) v1.Image {
	if len(ann) == 0 {
		return img
	}
	return mutate.Annotations(img, ann).(v1.Image)
}

func parseBool(v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%q is not a boolean", v)
	}
	return b, nil
}
