package main

import (
	"github.com/spf13/pflag"
)

// legacyFlags accepts the flags of `docker build` that have no effect in a
// BuildKit build (docker accepts and ignores them too), so scripts written
// for docker build run unchanged. They are hidden from the usage.
func legacyFlags(fs *pflag.FlagSet) {
	for _, f := range []struct {
		name string
		def  bool
	}{
		{"rm", true},                    // intermediate containers: there are none
		{"force-rm", false},             // same
		{"compress", false},             // the context is read in place, never sent
		{"disable-content-trust", true}, // docker content trust is not used
	} {
		fs.Bool(f.name, f.def, "no effect (accepted as docker build does)")
		_ = fs.MarkHidden(f.name)
	}
}
