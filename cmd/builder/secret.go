package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/builder-dev/builder/internal/sandbox"
)

// readSecrets reads the --secret values as docker buildx does:
// id=ID[,src|source=PATH][,env=VAR][,type=file|env]. With neither src nor
// env, an environment variable named ID is used if set, else the file ID.
func readSecrets(specs []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, spec := range specs {
		id, data, err := readSecret(spec)
		if err != nil {
			return nil, fmt.Errorf("--secret %s: %w", secretSpecName(spec), err)
		}
		out[id] = data
	}
	return out, nil
}

func readSecret(spec string) (string, []byte, error) {
	var id, typ, src, env string
	fields, err := csvFields(spec)
	if err != nil {
		return "", nil, err
	}
	for _, field := range fields {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return "", nil, fmt.Errorf("invalid field %q: want key=value", field)
		}
		switch strings.ToLower(k) {
		case "id":
			id = v
		case "type":
			typ = v
		case "src", "source":
			src = v
		case "env":
			env = v
		default:
			return "", nil, fmt.Errorf("unexpected key %q (want id, src, env or type)", k)
		}
	}
	if id == "" {
		return "", nil, errors.New("id is required")
	}
	switch typ {
	case "", "file", "env":
	default:
		return "", nil, fmt.Errorf("unsupported type %q (want file or env)", typ)
	}
	if typ == "env" && env == "" {
		env, src = src, ""
	}
	if src == "" && env == "" {
		if _, ok := os.LookupEnv(id); ok && typ != "file" {
			env = id
		} else {
			src = id
		}
	}
	if env != "" {
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", nil, fmt.Errorf("environment variable %s is not set", env)
		}
		return id, []byte(v), checkSecretSize([]byte(v))
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", nil, err
	}
	return id, b, checkSecretSize(b)
}

func checkSecretSize(b []byte) error {
	if len(b) > sandbox.MaxFileSize {
		return fmt.Errorf("secret is larger than %d bytes", sandbox.MaxFileSize)
	}
	return nil
}

// secretSpecName names a --secret value in errors by its id only.
func secretSpecName(spec string) string {
	fields, err := csvFields(spec)
	if err != nil {
		fields = strings.Split(spec, ",")
	}
	for _, field := range fields {
		if k, v, ok := strings.Cut(field, "="); ok && k == "id" {
			return "id=" + v
		}
	}
	return spec
}
