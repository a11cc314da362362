package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/builder-dev/builder/executor"
	"github.com/builder-dev/builder/exporter"
	"github.com/docker/go-units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// cacheSpec is one --cache-from or --cache-to value.
type cacheSpec struct {
	loc  exporter.CacheLocation
	mode executor.CacheMode   // --cache-to only
	comp exporter.Compression // --cache-to only
	// inline is --cache-to type=inline: the records go into the image's
	// config (exporter.InlineCache); --cache-from IMAGE reads them.
	inline bool
	// ignoreError (--cache-to ignore-error=true) makes a failed export a
	// warning, as in BuildKit.
	ignoreError bool
}

// cacheDirection tells which flag a value belongs to: the local type takes
// src= when importing and dest= when exporting, as in BuildKit.
type cacheDirection int

const (
	cacheImport cacheDirection = iota
	cacheExport
)

// parseCacheSpecs parses --cache-from / --cache-to values:
// type=registry,ref=REF[,mode=min|max] or a bare REF (registry), and
// type=local,src=DIR (import) / type=local,dest=DIR (export), with an
// optional tag=NAME in the layout's index (default latest).
func parseCacheSpecs(vals []string, dir cacheDirection) ([]cacheSpec, error) {
	flag := "--cache-from"
	if dir == cacheExport {
		flag = "--cache-to"
	}
	var out []cacheSpec
	for _, v := range vals {
		c, err := parseCacheSpec(v, dir)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", flag, v, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func parseCacheSpec(v string, dir cacheDirection) (cacheSpec, error) {
	c := cacheSpec{mode: executor.CacheMin}
	if !strings.Contains(v, "=") {
		c.loc.Ref = v
		return c, checkNames([]string{v})
	}
	typ, path := "", ""
	fields, err := csvFields(v)
	if err != nil {
		return c, err
	}
	for _, kv := range fields {
		k, val, _ := strings.Cut(kv, "=")
		switch strings.TrimSpace(k) {
		case "type":
			typ = val
		case "ref":
			c.loc.Ref = val
		case "src":
			if dir != cacheImport {
				return c, errors.New("src= belongs to --cache-from (use dest=)")
			}
			path = val
		case "dest":
			if dir != cacheExport {
				return c, errors.New("dest= belongs to --cache-to (use src=)")
			}
			path = val
		case "tag":
			c.loc.Tag = val
		case "mode":
			if err := c.setMode(val, dir); err != nil {
				return c, err
			}
		case "ignore-error":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return c, fmt.Errorf("%s=%q is not a boolean", k, val)
			}
			c.ignoreError = b
		case "oci-mediatypes", "image-manifest":
			// BuildKit's: builder's cache is always an OCI image manifest.
			if _, err := strconv.ParseBool(val); err != nil {
				return c, fmt.Errorf("%s=%q is not a boolean", k, val)
			}
		default:
			ok, err := c.comp.SetOption(strings.TrimSpace(k), val)
			if !ok {
				return c, fmt.Errorf("unknown key %q", k)
			}
			if err != nil {
				return c, err
			}
			if dir != cacheExport {
				return c, fmt.Errorf("%s= belongs to --cache-to", k)
			}
		}
	}
	if err := c.comp.Validate(); err != nil {
		return c, err
	}
	return cacheLocation(c, typ, path, dir)
}

// setMode sets --cache-to's mode=min|max.
func (c *cacheSpec) setMode(val string, dir cacheDirection) error {
	if dir != cacheExport {
		return errors.New("mode= belongs to --cache-to")
	}
	if val != string(executor.CacheMin) && val != string(executor.CacheMax) {
		return fmt.Errorf("mode=%q: want min or max", val)
	}
	c.mode = executor.CacheMode(val)
	return nil
}

// cacheLocation completes a cache spec with its type's location: a
// registry ref, or a local directory (src= or dest=, path).
func cacheLocation(c cacheSpec, typ, path string, dir cacheDirection) (cacheSpec, error) {
	switch typ {
	case "inline":
		if dir != cacheExport {
			return c, errors.New("type=inline belongs to --cache-to (--cache-from IMAGE reads it)")
		}
		c.inline = true
		return c, nil
	case "registry":
		if c.loc.Ref == "" {
			return c, errors.New("ref=REF is required")
		}
		return c, checkNames([]string{c.loc.Ref})
	case "local":
		if path == "" {
			if dir == cacheImport {
				return c, errors.New("src=DIR is required")
			}
			return c, errors.New("dest=DIR is required")
		}
		c.loc.Dir, c.loc.Ref = path, ""
		return c, nil
	}
	return c, fmt.Errorf("unknown type %q (want registry, local or inline)", typ)
}

// importCaches reads the manifests of the --cache-from caches. A cache
// that does not exist yet (the first build) is skipped with a warning.
func importCaches(ctx context.Context, st *stores, specs []cacheSpec, ro exporter.RemoteOptions, notice func(string)) ([]executor.RemoteCache, error) {
	var out []executor.RemoteCache
	for _, c := range specs {
		ic, err := st.images.ImportCache(ctx, c.loc, ro)
		if errors.Is(err, exporter.ErrImageNotFound) {
			notice(fmt.Sprintf("[warning] cache %s not found: %v", c.loc, err))
			continue
		}
		if err != nil {
			return nil, err
		}
		notice(fmt.Sprintf("importing cache %s: %d records", c.loc, ic.Len()))
		out = append(out, ic)
	}
	return out, nil
}

// exportCaches writes the build's cache records to every --cache-to.
func exportCaches(ctx context.Context, st *stores, res *executor.Result, specs []cacheSpec, ro exporter.RemoteOptions, notice func(string)) error {
	for _, c := range specs {
		recs, err := executor.CacheRecords(ctx, st.cache, res, c.mode)
		if err != nil {
			return fmt.Errorf("export cache to %s: %w", c.loc, err)
		}
		notice(fmt.Sprintf("exporting cache to %s (mode=%s, %d records)", c.loc, c.mode, len(recs)))
		var d v1.Hash
		co := ro
		co.Compression = c.comp
		export := func() (err error) {
			d, err = st.images.ExportCache(ctx, recs, c.loc, co)
			return err
		}
		if c.loc.Dir != "" {
			// A layout directory is the user's: their umask, not the
			// build's fixed one (umask_linux.go).
			err = withUserUmask(export)
		} else {
			err = export()
		}
		if err != nil {
			return err
		}
		notice(fmt.Sprintf("exported cache %s@%s", c.loc, d))
	}
	return nil
}

// cacheTrafficLine says what the build moved for remote caches: bytes
// downloaded importing them (cache manifests and configs, and the layers
// fetched when a step or an output needed them, a lazily pulled base
// image's included) and seconds spent, bytes read for upload exporting
// them and seconds spent.
func cacheTrafficLine(t *exporter.Traffic) string {
	return fmt.Sprintf("remote cache: imported %s (%d layers fetched when needed) in %.2fs, exported %s in %.2fs",
		units.HumanSize(float64(t.ImportBytes.Load())), t.ImportLayers.Load(), time.Duration(t.ImportNanos.Load()).Seconds(),
		units.HumanSize(float64(t.ExportBytes.Load())), time.Duration(t.ExportNanos.Load()).Seconds())
}

// inlineCache puts the build's cache records into its image's config when
// a --cache-to is type=inline (mode min: the image's own steps).
func inlineCache(ctx context.Context, st *stores, res *executor.Result, specs []cacheSpec) (v1.Image, error) {
	for _, c := range specs {
		if !c.inline {
			continue
		}
		recs, err := executor.CacheRecords(ctx, st.cache, res, executor.CacheMin)
		if err != nil {
			return nil, fmt.Errorf("inline cache: %w", err)
		}
		return exporter.InlineCache(res.Image, recs)
	}
	return res.Image, nil
}
