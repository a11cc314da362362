package buildcontext

import (
	"errors"
	"fmt"
	"io"
)

// MaxFileSize is the size of the largest Dockerfile or ignore file a
// build reads whole: BuildKit's frontend refuses larger ones (its limit is
// the gRPC message size, 16 MiB, for the built-in frontend too).
const MaxFileSize = 16 << 20

// TooLargeError is a file larger than MaxFileSize. Its message is
// BuildKit's.
type TooLargeError struct {
	Name string // the file as the message names it
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s exceeds maximum allowed size of %d bytes", e.Name, MaxFileSize)
}

// IsTooLarge reports whether err is (or wraps) a *TooLargeError.
func IsTooLarge(err error) bool {
	var e *TooLargeError
	return errors.As(err, &e)
}

// ReadLimited reads r to its end, but no more than MaxFileSize+1 bytes: a
// longer input is a *TooLargeError naming it name.
func ReadLimited(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, &TooLargeError{Name: name}
	}
	return data, nil
}
