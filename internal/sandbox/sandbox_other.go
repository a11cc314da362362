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

// Cgroups are not supported outside Linux.
type Cgroups struct{}

// NewCgroups returns ErrUnsupported.
func NewCgroups(Limits) (*Cgroups, error) { return nil, ErrUnsupported }

// Close does nothing.
func (*Cgroups) Close() error { return nil }

// OwnCgroupDirs returns ErrUnsupported.
func OwnCgroupDirs(Limits) ([]string, error) { return nil, ErrUnsupported }
