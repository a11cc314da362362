//go:build !linux

package sandbox

import (
	"context"
	"errors"
	"runtime"
)

// ErrUnsupported is returned by Run on systems without Linux namespaces.
var ErrUnsupported = errors.New("sandbox: not supported on " + runtime.GOOS)

// Init returns false: there is no sandbox init outside Linux.
func Init() bool { return false }

// Run returns ErrUnsupported.
func Run(ctx context.Context, spec Spec) error { return ErrUnsupported }

func validateChroot(Spec) error { return ErrUnsupported }
