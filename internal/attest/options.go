package attest

import (
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
)

// Config is what attestations a build makes: a provenance, an SBOM,
// both or none.
type Config struct {
	Provenance *ProvenanceOptions
	SBOM       *SBOMOptions
}

// SBOMOptions are the attributes of --attest type=sbom. Generator is
// BuildKit's scanner image; builder scans with its own syft scanner, the
// library that image runs.
type SBOMOptions struct {
	Generator string
}

// DefaultGenerator is BuildKit's default SBOM generator image, the one
// builder's built-in scanner stands for.
const DefaultGenerator = "docker/buildkit-syft-scanner:stable-1"

// Flags are the attestation options of a build as buildx takes them.
type Flags struct {
	Attest     []string // --attest type=provenance|sbom,KEY=VALUE...
	Provenance string   // --provenance true|false|mode=...,version=...
	SBOM       string   // --sbom true|false|generator=...
	// BuildArgs are the build's --build-arg values: BUILDKIT_ATTEST_PROVENANCE
	// and BUILDKIT_ATTEST_SBOM request attestations too, as in BuildKit.
	BuildArgs map[string]string
	// NoDefault is $BUILDX_NO_DEFAULT_ATTESTATIONS: no provenance unless
	// asked for.
	NoDefault string
}

// Parse resolves the flags into a Config: --provenance and --sbom are
// shorthands for --attest type=provenance and type=sbom and win over
// them, a later --attest of a type over an earlier one; disabled=true
// turns a type off. Without any provenance option, buildx's default
// applies: mode=min, inline-only (attached to pushed images only).
func Parse(f Flags) (Config, error) {
	specs := map[string]map[string]string{} // type → attributes; nil: disabled
	set := func(typ string, attrs map[string]string) { specs[typ] = attrs }
	for _, k := range []string{"provenance", "sbom"} {
		if v, ok := f.BuildArgs["BUILDKIT_ATTEST_"+strings.ToUpper(k)]; ok {
			attrs, err := parseAttrs(v)
			if err != nil {
				return Config{}, fmt.Errorf("build arg BUILDKIT_ATTEST_%s: %w", strings.ToUpper(k), err)
			}
			set(k, attrs)
		}
	}
	vals := append([]string(nil), f.Attest...)
	vals = append(vals, shorthand("provenance", f.Provenance), shorthand("sbom", f.SBOM))
	for _, v := range vals {
		if v == "" {
			continue
		}
		typ, attrs, err := parseAttest(v)
		if err != nil {
			return Config{}, err
		}
		set(typ, attrs)
	}
	var c Config
	if attrs, ok := specs["provenance"]; ok {
		if attrs != nil {
			p, err := provenanceOptions(attrs)
			if err != nil {
				return Config{}, err
			}
			c.Provenance = &p
		}
	} else if noDefault, _ := strconv.ParseBool(f.NoDefault); !noDefault {
		c.Provenance = &ProvenanceOptions{Mode: "min", Version: "v1", InlineOnly: true}
	}
	if attrs := specs["sbom"]; attrs != nil {
		s, err := sbomOptions(attrs)
		if err != nil {
			return Config{}, err
		}
		c.SBOM = &s
	}
	return c, nil
}

// shorthand turns --provenance/--sbom into an --attest value as buildx
// does: true and false enable or disable, anything else is attributes.
func shorthand(typ, v string) string {
	if v == "" {
		return ""
	}
	if b, err := strconv.ParseBool(v); err == nil {
		return fmt.Sprintf("type=%s,disabled=%t", typ, !b)
	}
	return "type=" + typ + "," + v
}

// parseAttest reads one --attest value: type=TYPE plus attributes. The
// attributes are nil when disabled=true.
func parseAttest(v string) (string, map[string]string, error) {
	fields, err := csvFields(v)
	if err != nil {
		return "", nil, fmt.Errorf("--attest %q: %w", v, err)
	}
	typ, disabled := "", false
	attrs := map[string]string{}
	for _, f := range fields {
		k, val, ok := strings.Cut(f, "=")
		if !ok {
			return "", nil, fmt.Errorf("--attest %q: invalid value %s", v, f)
		}
		switch k = strings.TrimSpace(strings.ToLower(k)); k {
		case "type":
			typ = val
		case "disabled":
			if disabled, err = strconv.ParseBool(val); err != nil {
				return "", nil, fmt.Errorf("--attest %q: invalid value %s", v, f)
			}
		default:
			attrs[k] = val
		}
	}
	switch typ {
	case "":
		return "", nil, fmt.Errorf("--attest %q: attestation type not specified", v)
	case "provenance", "sbom":
	default:
		return "", nil, fmt.Errorf("unknown attestation type %q", typ)
	}
	if disabled {
		attrs = nil
	}
	return typ, attrs, nil
}

// parseAttrs reads the KEY=VALUE list of a build arg as BuildKit does
// (a key without value has an empty one).
func parseAttrs(v string) (map[string]string, error) {
	attrs := map[string]string{}
	if v == "" {
		return attrs, nil
	}
	fields, err := csvFields(v)
	if err != nil {
		return nil, err
	}
	for _, f := range fields {
		k, val, _ := strings.Cut(f, "=")
		attrs[k] = val
	}
	return attrs, nil
}

func csvFields(v string) ([]string, error) {
	r := csv.NewReader(strings.NewReader(v))
	r.TrimLeadingSpace = true
	fields, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("invalid value: %w", err)
	}
	return fields, nil
}

// provenanceOptions checks the provenance attributes with BuildKit's
// words: mode min, max (full is max; BuildKit's default), version v1
// (default) or v0.2.
func provenanceOptions(attrs map[string]string) (ProvenanceOptions, error) {
	o := ProvenanceOptions{Mode: "max", Version: "v1"}
	for k, v := range attrs {
		var err error
		switch k {
		case "mode":
			switch v {
			case "min", "max":
				o.Mode = v
			case "full":
				o.Mode = "max"
			default:
				return o, fmt.Errorf("invalid mode %q", v)
			}
		case "version":
			if v != "v1" && v != "v0.2" {
				return o, fmt.Errorf("invalid provenance SLSA version: %s", v)
			}
			o.Version = v
		case "builder-id":
			o.BuilderID = v
		case "filename":
			o.Filename = v
		case "reproducible":
			if o.Reproducible, err = strconv.ParseBool(v); err != nil {
				return o, fmt.Errorf("failed to parse reproducible flag %q", v)
			}
		case "inline-only":
			o.InlineOnly, _ = strconv.ParseBool(v)
		}
	}
	return o, nil
}

// sbomOptions checks the SBOM attributes: builder's scanner is syft, as
// BuildKit's default generator; another generator image cannot run.
func sbomOptions(attrs map[string]string) (SBOMOptions, error) {
	g := attrs["generator"]
	if g != "" && !strings.HasPrefix(g, "docker/buildkit-syft-scanner") && !strings.HasPrefix(g, "docker.io/docker/buildkit-syft-scanner") {
		return SBOMOptions{}, fmt.Errorf("sbom generator %q: builder scans with its built-in syft scanner (BuildKit's default generator, %s); other generator images are not supported", g, DefaultGenerator)
	}
	if g == "" {
		g = DefaultGenerator
	}
	return SBOMOptions{Generator: g}, nil
}
