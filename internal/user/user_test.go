package user

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testRoot = "testdata/rootfs"

func TestResolve(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec    string
		want    Identity
		wantErr string
	}{
		{spec: "", want: Identity{Name: "root", Home: "/root", AdditionalGids: []uint32{10}}},
		{spec: "root", want: Identity{Name: "root", Home: "/root", AdditionalGids: []uint32{10}}},
		{spec: "app", want: Identity{Name: "app", UID: 1000, GID: 1000, Home: "/home/app", AdditionalGids: []uint32{10, 50, 999}}},
		{spec: "1000", want: Identity{Name: "app", UID: 1000, GID: 1000, Home: "/home/app", AdditionalGids: []uint32{10, 50, 999}}},
		{spec: "daemon", want: Identity{Name: "daemon", UID: 1, GID: 1, Home: "/usr/sbin", AdditionalGids: []uint32{50}}},
		{spec: "nohome", want: Identity{Name: "nohome", UID: 1001, GID: 2000, Home: "/"}},
		{spec: "4242", want: Identity{UID: 4242, GID: 0, Home: "/"}},
		{spec: "app:staff", want: Identity{Name: "app", UID: 1000, GID: 50, Home: "/home/app"}},
		{spec: "app:77", want: Identity{Name: "app", UID: 1000, GID: 77, Home: "/home/app"}},
		{spec: "1000:docker", want: Identity{Name: "app", UID: 1000, GID: 999, Home: "/home/app"}},
		{spec: "4242:4343", want: Identity{UID: 4242, GID: 4343, Home: "/"}},
		{spec: "4242:wheel", want: Identity{UID: 4242, GID: 10, Home: "/"}},
		{spec: "app:", want: Identity{Name: "app", UID: 1000, GID: 1000, Home: "/home/app", AdditionalGids: []uint32{10, 50, 999}}},
		{spec: "nosuch", wantErr: "unable to find user nosuch: no matching entries in passwd file"},
		{spec: "app:nosuch", wantErr: "unable to find group nosuch: no matching entries in group file"},
		{spec: "broken", wantErr: "passwd:7: invalid uid or gid"},
		{spec: "app:oddgroup", wantErr: "group:7: invalid gid"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := Resolve(testRoot, tt.spec)
			checkErr(t, err, tt.wantErr)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Resolve(%q) mismatch (-want +got):\n%s", tt.spec, diff)
			}
		})
	}
}

func TestResolveChown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec     string
		uid, gid int
		wantErr  string
	}{
		{spec: "app", uid: 1000, gid: 1000},
		{spec: "daemon", uid: 1, gid: 1},
		{spec: "nohome", uid: 1001, gid: 2000},
		{spec: "1234", uid: 1234, gid: 1234},
		{spec: "1234:5", uid: 1234, gid: 5},
		{spec: "app:staff", uid: 1000, gid: 50},
		{spec: "1234:wheel", uid: 1234, gid: 10},
		{spec: "nosuchuser", wantErr: "unable to find user nosuchuser: no matching entries in passwd file"},
		{spec: "app:nosuchgroup", wantErr: "unable to find group nosuchgroup"},
		// An empty user is root with gid 0, as buildkitd resolves it.
		{spec: ":staff", uid: 0, gid: 50},
		{spec: ":7", uid: 0, gid: 7},
		{spec: ":", uid: 0, gid: 0},
		{spec: ":nosuchgroup", wantErr: "unable to find group nosuchgroup"},
		{spec: "app:", uid: 1000, gid: 1000},
		{spec: "nohome:", uid: 1001, gid: 2000},
		{spec: "1234:", uid: 1234, gid: 1234},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			uid, gid, err := ResolveChown(testRoot, tt.spec)
			checkErr(t, err, tt.wantErr)
			if uid != tt.uid || gid != tt.gid {
				t.Errorf("ResolveChown(%q) = %d:%d, want %d:%d", tt.spec, uid, gid, tt.uid, tt.gid)
			}
		})
	}
}

// TestResolveChownWindows: for a Windows image, a name passwd or group
// lacks is no id (BuildKit's readUser), found names and broken files are
// as ResolveChown has them.
func TestResolveChownWindows(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		root, spec string
		uid, gid   int
		wantErr    string
	}{
		{root: testRoot, spec: "ContainerUser"},
		{root: t.TempDir(), spec: "ContainerAdministrator"},
		{root: testRoot, spec: "app", uid: 1000, gid: 1000},
		{root: testRoot, spec: "app:nosuchgroup", uid: 1000, gid: 1000},
		{root: testRoot, spec: "nosuchuser:staff", uid: 0, gid: 50},
		{root: testRoot, spec: "1234:nosuchgroup", uid: 1234, gid: 1234},
		{root: testRoot, spec: "broken", wantErr: "invalid uid or gid"},
	} {
		uid, gid, err := ResolveChownWindows(tt.root, tt.spec)
		checkErr(t, err, tt.wantErr)
		if uid != tt.uid || gid != tt.gid {
			t.Errorf("ResolveChownWindows(%q) = %d:%d, want %d:%d", tt.spec, uid, gid, tt.uid, tt.gid)
		}
	}
}

// TestNoDatabase checks a rootfs without /etc: numeric ids work, names fail.
func TestNoDatabase(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	id, err := Resolve(root, "123:456")
	if err != nil || id.UID != 123 || id.GID != 456 || id.Home != "/" {
		t.Fatalf("Resolve numeric without passwd = %+v, %v", id, err)
	}
	if uid, gid, err := ResolveChown(root, "77"); err != nil || uid != 77 || gid != 77 {
		t.Fatalf("ResolveChown numeric without passwd = %d:%d, %v", uid, gid, err)
	}
	if _, err := Resolve(root, "app"); err == nil {
		t.Fatal("Resolve(app) without passwd: want error")
	}
	if _, _, err := ResolveChown(root, "app"); err == nil {
		t.Fatal("ResolveChown(app) without passwd: want error")
	}
}

// TestAbsoluteSymlinkStaysInRoot makes /etc an absolute symlink inside the
// rootfs; the lookup must follow it inside the rootfs, never on the host.
func TestAbsoluteSymlinkStaysInRoot(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write(t, filepath.Join(root, "real/etc/passwd"), "web:x:33:33::/var/www:/bin/sh\n")
	write(t, filepath.Join(root, "real/etc/group"), "www:x:33:web\n")
	if err := os.Symlink("/real/etc", filepath.Join(root, "etc")); err != nil {
		t.Fatal(err)
	}
	id, err := Resolve(root, "web")
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{Name: "web", UID: 33, GID: 33, Home: "/var/www", AdditionalGids: []uint32{33}}
	if diff := cmp.Diff(want, id); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	// A symlink pointing at the host's /etc must resolve to <root>/etc (absent).
	escape := t.TempDir()
	if err := os.Symlink("/etc", filepath.Join(escape, "etc")); err == nil {
		if _, err := Resolve(escape, "root"); err == nil {
			t.Error("Resolve(root) read the host /etc/passwd through an escaping symlink")
		}
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("want error containing %q, got nil", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}
