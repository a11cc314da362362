package executor

import (
	"errors"
	"fmt"
)

// ErrNeedsEntitlement is returned for steps that need an explicit CLI opt-in
// (RUN --network=host when host networking was not allowed).
var ErrNeedsEntitlement = errors.New("executor: step needs an entitlement")

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
