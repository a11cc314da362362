package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/builder-dev/builder/exporter"
	"github.com/builder-dev/builder/internal/attest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"
)

// attestFlags are buildx's attestation options.
type attestFlags struct {
	attest     []string
	provenance string
	sbom       string

	cfg attest.Config // parsed by check
}

// addAttestFlags registers --attest, --provenance and --sbom.
func addAttestFlags(fs *pflag.FlagSet, f *attestFlags) {
	fs.StringArrayVar(&f.attest, "attest", nil, "attestation to attach to the image, BuildKit's in-toto format: type=provenance[,mode=min|max][,version=v1|v0.2][,builder-id=URI][,reproducible=true] or type=sbom; disabled=true turns one off (repeatable)")
	fs.StringVar(&f.provenance, "provenance", "", "shorthand for --attest type=provenance: true, false or mode=min|max,... (default: mode=min on pushed images; $BUILDX_NO_DEFAULT_ATTESTATIONS=1 turns the default off)")
	fs.StringVar(&f.sbom, "sbom", "", "shorthand for --attest type=sbom: true or false (an SPDX SBOM of the image, by the builder-sbom scanner)")
}

// check parses the options (build args may ask for attestations too).
func (f *attestFlags) check(buildArgs []string) error {
	args := map[string]string{}
	for k, v := range buildArgMap(buildArgs) {
		if v != nil && strings.HasPrefix(k, "BUILDKIT_ATTEST_") {
			args[k] = *v
		}
	}
	cfg, err := attest.Parse(attest.Flags{Attest: f.attest, Provenance: f.provenance, SBOM: f.sbom,
		BuildArgs: args, NoDefault: os.Getenv("BUILDX_NO_DEFAULT_ATTESTATIONS")})
	f.cfg = cfg
	return err
}

// attestRun is a build's attestations and where each goes: all of them
// on pushed images; those asked for (not buildx's default provenance,
// which is inline-only) also in the local store, OCI archives, and as
// files beside local and tar outputs. A nil *attestRun makes none.
type attestRun struct {
	atts []attest.Attestation
	// sbomLayers places the files of the image's SBOM in its layers
	// (BuildKit's "layerID:" file comments).
	sbomLayers *layerFinder
	tool       string // "builder-VERSION", the SBOM's creator
	warned     bool
}

// pick is the attestations an output gets: push outputs all, others
// those not inline-only.
func (r *attestRun) pick(push bool) []attest.Attestation {
	if r == nil {
		return nil
	}
	var out []attest.Attestation
	for _, a := range r.atts {
		if push || !a.InlineOnly {
			out = append(out, a)
		}
	}
	return out
}

// forImage returns the statements maker of an image exported under names
// (nil when it gets no attestations).
func (r *attestRun) forImage(names []string, push bool) exporter.Attest {
	atts := r.pick(push)
	if len(atts) == 0 {
		return nil
	}
	return func(img v1.Image, subject v1.Descriptor) ([]exporter.Statement, error) {
		subjects, err := attest.ImageSubjects(names, *subject.Platform, subject.Digest)
		if err != nil {
			return nil, err
		}
		out := make([]exporter.Statement, 0, len(atts))
		for _, a := range atts {
			if a.PredicateType == attest.PredicateSPDX && a.Path == "sbom.spdx.json" && r.sbomLayers != nil {
				if a, err = r.sbomLayers.supplement(img, a, r.tool); err != nil {
					return nil, err
				}
			}
			data, err := attest.Bind(a, subjects).Marshal()
			if err != nil {
				return nil, err
			}
			out = append(out, exporter.Statement{PredicateType: a.PredicateType, Data: data})
		}
		return out, nil
	}
}

// forOutput is the statements maker of an archive output: OCI archives
// hold them (the image's names as subjects); docker-save archives have
// no index to hold them, which is said once.
func (r *attestRun) forOutput(o output, tags []string, notice func(string)) exporter.Attest {
	switch o.typ {
	case "oci":
		return r.forImage(tags, false)
	case "docker":
		if len(r.pick(false)) > 0 && !r.warned {
			r.warned = true
			notice("[warning] attestations are not written to type=docker outputs (a docker-save archive holds no image index); use type=oci or push")
		}
	}
	return nil
}

// push pushes img to name, with its attestations (an image index) when
// it has any.
func (r *attestRun) push(ctx context.Context, st *stores, img v1.Image, name string, ro exporter.RemoteOptions) (v1.Descriptor, error) {
	if a := r.forImage([]string{name}, true); a != nil {
		return st.images.PushAttested(ctx, img, a, name, ro)
	}
	return st.images.PushImage(ctx, img, name, ro)
}

// store keeps the image's attestations in the local store beside it.
func (r *attestRun) store(ctx context.Context, st *stores, img v1.Image, tags []string) error {
	if a := r.forImage(tags, false); a != nil {
		if _, err := st.images.PutAttestations(ctx, img, a); err != nil {
			return fmt.Errorf("store attestations: %w", err)
		}
	}
	return nil
}

// writeFiles writes the statements beside a local output as BuildKit's
// local exporter does: one file per attestation (provenance.json,
// sbom.spdx.json), its subjects every regular file of the output.
func (r *attestRun) writeFiles(dir string, epoch *time.Time) error {
	if len(r.pick(false)) == 0 {
		return nil
	}
	subjects, err := dirSubjects(dir)
	if err != nil {
		return err
	}
	return r.writeStatementFiles(dir, "", subjects, epoch)
}

// dirSubjects are the regular files under dir as statement subjects.
func dirSubjects(dir string) ([]attest.Subject, error) {
	var subjects []attest.Subject
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		sum, err := sha256File(p)
		if err != nil {
			return err
		}
		subjects = append(subjects, attest.Subject{Name: filepath.ToSlash(rel), Digest: map[string]string{"sha256": sum}})
		return nil
	})
	return subjects, err
}

// writeStatementFiles writes the statements about subjects into dir, one
// file per attestation named as attestFileName names it.
func (r *attestRun) writeStatementFiles(dir, platform string, subjects []attest.Subject, epoch *time.Time) error {
	for _, a := range r.pick(false) {
		data, err := json.MarshalIndent(attest.Bind(a, subjects), "", "  ")
		if err != nil {
			return err
		}
		p := filepath.Join(dir, attestFileName(a.Path, platform))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return err
		}
		if epoch != nil {
			if err := os.Chtimes(p, *epoch, *epoch); err != nil {
				return err
			}
		}
	}
	return nil
}

// attestFileName is the name of an attestation's file in a local or tar
// output: its path, or, when the platforms of a multi-platform build share
// a directory (platform-split=false), the path with the platform's
// directory name before the extension, as BuildKit names them:
// provenance.linux_amd64.json.
func attestFileName(path, platform string) string {
	name := filepath.Base(path)
	if platform == "" {
		return name
	}
	ext := filepath.Ext(name)
	return strings.TrimSuffix(name, ext) + "." + platform + ext
}

// writeFlattened writes img's root filesystem as one tar (type=tar),
// then the statements as files, as BuildKit's tar exporter does.
func (r *attestRun) writeFlattened(w io.Writer, img v1.Image, epoch *time.Time) error {
	if len(r.pick(false)) == 0 {
		return writeFlattened(w, img)
	}
	tw := tar.NewWriter(w)
	subjects, err := copyRootfs(tw, img, "", true)
	if err != nil {
		return err
	}
	if err := r.writeStatementEntries(tw, "", "", subjects, epoch); err != nil {
		return err
	}
	return tw.Close()
}

// copyRootfs copies the entries of img's root filesystem into tw, under
// the directory dir ("": at the top), and returns its regular files as
// statement subjects (names relative to dir) when hash is set.
func copyRootfs(tw *tar.Writer, img v1.Image, dir string, hash bool) ([]attest.Subject, error) {
	rc := exporter.Flatten(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var subjects []attest.Subject
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return subjects, rc.Close()
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		if dir != "" {
			h.Name = dir + "/" + name
			if h.Typeflag == tar.TypeLink {
				h.Linkname = dir + "/" + strings.TrimPrefix(h.Linkname, "/")
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		sum := sha256.New()
		dst := io.Writer(tw)
		if hash {
			dst = io.MultiWriter(tw, sum)
		}
		if _, err := io.Copy(dst, tr); err != nil {
			return nil, err
		}
		if hash && h.Typeflag == tar.TypeReg {
			subjects = append(subjects, attest.Subject{Name: name, Digest: map[string]string{"sha256": hex.EncodeToString(sum.Sum(nil))}})
		}
	}
}

// writeStatementEntries writes the statements about subjects into tw as
// files under dir, named as attestFileName names them.
func (r *attestRun) writeStatementEntries(tw *tar.Writer, dir, platform string, subjects []attest.Subject, epoch *time.Time) error {
	mtime := time.Now()
	if epoch != nil {
		mtime = *epoch
	}
	for _, a := range r.pick(false) {
		data, err := json.MarshalIndent(attest.Bind(a, subjects), "", "  ")
		if err != nil {
			return err
		}
		name := attestFileName(a.Path, platform)
		if dir != "" {
			name = dir + "/" + name
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return nil
}

func sha256File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// printAttestations prints the stored statements of the image ref whose
// predicate type is typ (provenance, sbom or a URI) as a JSON array.
func printAttestations(ctx context.Context, a *app, st *stores, ref, typ string) error {
	atts, err := st.images.Attestations(ctx, ref)
	if err != nil {
		return err
	}
	want := exporter.PredicateTypeOf(typ)
	out := []json.RawMessage{}
	if atts != nil {
		for _, s := range atts.Statements {
			if strings.HasPrefix(s.PredicateType, want) {
				out = append(out, s.Statement)
			}
		}
	}
	if len(out) == 0 {
		return fmt.Errorf("image %s has no %s attestation (build it with --attest type=provenance or type=sbom)", ref, typ)
	}
	return writeJSON(a.stdout, out)
}
