package executor

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/builder-dev/builder/internal/testenv"
)

// TestWorkdirOwner: the directories a WORKDIR makes belong to the USER
// as BuildKit's file operation resolves it (--chown's rules): a numeric
// user without a group gets gid = uid even where /etc/passwd gives it
// another primary group, or where there is no /etc/passwd; a name gets
// its primary group; a group given wins.
func TestWorkdirOwner(t *testing.T) {
	testenv.RequireRoot(t) // chown
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:100::/home/app:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nusers:x:100:\nstaff:x:50:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bare := t.TempDir() // no /etc/passwd (FROM scratch)
	for _, c := range []struct {
		root, user string
		uid, gid   uint32
	}{
		{root, "1000", 1000, 1000},
		{root, "app", 1000, 100},
		{root, "app:staff", 1000, 50},
		{root, "1000:7", 1000, 7},
		{root, "1000:", 1000, 1000},
		{bare, "1000", 1000, 1000},
	} {
		dir := "/w/" + filepath.Base(c.root) + "/" + c.user
		if err := workdirIn(c.root, dir, c.user, "linux"); err != nil {
			t.Fatalf("USER %s: %v", c.user, err)
		}
		fi, err := os.Stat(filepath.Join(c.root, dir))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("USER %s: WORKDIR owned by %d:%d, want %d:%d", c.user, st.Uid, st.Gid, c.uid, c.gid)
		}
	}
	if err := workdirIn(root, "/x", "nosuchuser", "linux"); err == nil {
		t.Error("USER nosuchuser: WORKDIR made, want an error naming the user")
	}
	// A Windows image's USER is no passwd entry: root's ids, as BuildKit
	// on Linux gives them.
	if err := workdirIn(bare, "/win", "ContainerUser", "windows"); err != nil {
		t.Fatalf("USER ContainerUser of a Windows image: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(bare, "win")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("USER ContainerUser of a Windows image: WORKDIR %v, %v; want root's", fi, err)
	}
}
