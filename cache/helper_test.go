package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a helper process for cross-process tests:
// with CACHE_TEST_HELPER set, TestMain runs that helper instead of tests.
const helperEnv = "CACHE_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode, os.Getenv("CACHE_TEST_ROOT")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperPayload is the content both processes write in CACHE-03 tests.
var helperPayload = bytes.Repeat([]byte("builder cache-03 payload\n"), 40000)

func helperRecord(s *Store, digest string) *Record {
	return &Record{
		Key:       KeyOf(Key{}, Inputs{Op: "RUN", Fields: []Field{{Name: "instruction", Value: "RUN make"}}}),
		Inputs:    Inputs{Op: "RUN", Fields: []Field{{Name: "instruction", Value: "RUN make"}}},
		DiffID:    digest,
		Size:      int64(len(helperPayload)),
		CreatedBy: "RUN make",
		Blobs:     []string{digest},
		Created:   time.Unix(1700000000, 0).UTC(),
	}
}

func runHelper(mode, root string) error {
	ctx := context.Background()
	s, err := Open(root)
	if err != nil {
		return err
	}
	defer s.Close()
	switch mode {
	case "write":
		for range 20 {
			d, _, err := s.WriteBlob(ctx, bytes.NewReader(helperPayload), "")
			if err != nil {
				return err
			}
			if err := s.Put(ctx, helperRecord(s, d)); err != nil {
				return err
			}
		}
		return nil
	case "scratch":
		// Make a build's scratch directories and a temp file, say where,
		// and wait to be killed: they are left as a SIGKILL leaves them.
		var dirs []string
		for _, a := range []Area{Temp, Active} {
			sc, err := s.NewScratch(a, "build")
			if err != nil {
				return err
			}
			if err := os.WriteFile(sc.Path()+"/file", []byte("x"), 0o600); err != nil {
				return err
			}
			dirs = append(dirs, sc.Path())
		}
		f, err := s.createTemp()
		if err != nil {
			return err
		}
		fmt.Println(strings.Join(append(dirs, f.Name()), " "))
		time.Sleep(time.Minute)
		return nil
	case "lock":
		if _, err := s.Lock(ctx); err != nil {
			return err
		}
		fmt.Println("locked")
		time.Sleep(time.Minute)
		return nil
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// startHelper runs the test binary as a helper process on root.
func startHelper(t *testing.T, mode, root string, stdout io.Writer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "CACHE_TEST_ROOT="+root)
	cmd.Stdout = stdout
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", mode, err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("helper %s stderr: %s", mode, stderr.String())
		}
	})
	return cmd
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func mustWriteBlob(t *testing.T, s *Store, data []byte) string {
	t.Helper()
	d, _, err := s.WriteBlob(t.Context(), bytes.NewReader(data), "")
	if err != nil {
		t.Fatal(err)
	}
	return d
}
