package executor

import (
	"errors"
	"fmt"
)

// ErrNeedsEntitlement is returned for steps that need an explicit CLI opt-in
// (RUN --network=host when host networking was not allowed).
var ErrNeedsEntitlement = errors.New("executor: step needs an entitlement")

// ErrSourceChanged is a step's error when a source's content is no longer
// the one its cache key was computed from: a context file or a download
// changed while the build ran. Building again keys it afresh.
var ErrSourceChanged = errors.New("executor: a source changed during the build")

// sourceChanged marks err as ErrSourceChanged.
func sourceChanged(err error) error { return &sourceChangedError{err} }

type sourceChangedError struct{ err error }

func (e *sourceChangedError) Error() string        { return e.err.Error() }
func (e *sourceChangedError) Unwrap() error        { return e.err }
func (e *sourceChangedError) Is(target error) bool { return target == ErrSourceChanged }

// StepError locates a failed step in the Dockerfile.
type StepError struct {
	Path        string // Dockerfile path as the user gave it
	Stage       string // stage name or index
	Line        int    // 1-based line of the instruction
	Instruction string // the instruction's source text
	Err         error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %v", e.Path, e.Line, e.Instruction, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }
