// Command mkcontext writes the context of image/Dockerfile: go run
// ./image/mkcontext BINARY DIR writes DIR/builder.tar, which holds
// usr/local/bin/builder (the static BINARY, mode 0755) with the file
// capabilities chroot isolation needs, so that an ordinary user of the
// image builds as the container's root does. A tar carries the
// capabilities as the xattr security.capability (PAX record), which ADD
// extracts; neither setcap nor root is needed to make it.
package main

import (
	"archive/tar"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// caps are what builder itself uses under isolation chroot, all in
// Docker's default set: chown, mode and owner of any file (extraction,
// COPY), setuid/setgid (RUN as USER), dropping the bounding set, chroot,
// device nodes and file capabilities of image files, signals to RUN
// processes of other users.
var caps = []int{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID,
	unix.CAP_KILL, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETPCAP,
	unix.CAP_SYS_CHROOT, unix.CAP_MKNOD, unix.CAP_SETFCAP,
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mkcontext BINARY DIR")
		os.Exit(2)
	}
	if err := write(os.Args[1], filepath.Join(os.Args[2], "builder.tar")); err != nil {
		fmt.Fprintln(os.Stderr, "mkcontext:", err)
		os.Exit(1)
	}
}

// The security.capability format (linux/capability.h): revision 2,
// effective flag.
const (
	vfsCapRevision2     = 0x02000000
	vfsCapFlagEffective = 0x000001
)

// capability is a revision 2 security.capability value: caps permitted
// and effective, none inheritable.
func capability() string {
	var perm [2]uint32
	for _, c := range caps {
		perm[c/32] |= 1 << (uint(c) % 32)
	}
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], vfsCapRevision2|vfsCapFlagEffective)
	binary.LittleEndian.PutUint32(b[4:], perm[0])
	binary.LittleEndian.PutUint32(b[12:], perm[1])
	return string(b)
}

func write(bin, dest string) error {
	in, err := os.Open(bin)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(dest)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(out)
	epoch := time.Unix(0, 0)
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg, Name: "usr/local/bin/builder", Mode: 0o755, Size: fi.Size(), ModTime: epoch,
		Format: tar.FormatPAX, PAXRecords: map[string]string{"SCHILY.xattr.security.capability": capability()},
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.Copy(tw, in); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return out.Close()
}
