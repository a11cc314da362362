package testenv

import (
	"io"
	"io/fs"
	"os"
	"syscall"
	"testing"
)

// ReadFIFO makes a named pipe at path (mode 0666, for a rootless writer
// too) and reads it whole on another goroutine: the channel gives what
// was written once the writer closes it, nil if the pipe could not be
// opened. A test that finds the pipe replaced (IsFIFO) must not wait on
// the channel: its reader waits for a writer forever.
func ReadFIFO(t testing.TB, path string) <-chan []byte {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		f, err := os.Open(path)
		if err != nil {
			got <- nil
			return
		}
		defer f.Close()
		b, _ := io.ReadAll(f)
		got <- b
	}()
	return got
}

// IsFIFO reports whether path is (still) a named pipe.
func IsFIFO(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&fs.ModeNamedPipe != 0
}
