package main

import (
	"fmt"
	"strconv"
)

// buildArgBool is a boolean build arg of BuildKit's frontend
// (BUILDKIT_GIT_ADVICE, BUILDKIT_CONTEXT_KEEP_GIT_DIR): false when unset
// or empty, an error naming it when it is no boolean.
func buildArgBool(vals []string, k string) (bool, error) {
	v := buildArgValue(vals, k)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("failed to parse build-arg:%s: %w", k, err)
	}
	return b, nil
}
