package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/builder-dev/builder/snapshot"
	securejoin "github.com/cyphar/filepath-securejoin"
)

// addIsArchive reports whether the file at host is a tar archive,
// compressed or not, by content as BuildKit does: its first tar header.
func addIsArchive(host string) (bool, error) {
	f, err := os.OpenFile(host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", host, err)
	}
	defer f.Close()
	ok, _, err := snapshot.IsArchive(f)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", host, err)
	}
	return ok, nil
}

// addExtract unpacks the local archive of s into the destination, the way
// BuildKit's ADD does through moby's chrootarchive: the destination is the
// root of the extraction, so entry names, hardlinks and symlinks in it
// cannot reach outside it, and a ".." past it stops there ("../up" is
// "up"), as in the chroot BuildKit extracts in. Entries
// keep the archive's ownership unless --chown is set, ".wh." names are
// ordinary files, and device nodes that cannot be created (EPERM in a user
// namespace) are recorded beside a stand-in (snapshot's override), so the
// layer holds them as a root build's does.
func (p *copyPlan) addExtract(ctx context.Context, rootfs string, s *copySource, own copyOwner) error {
	// BuildKit's unpack makes the destination 0755 whatever --chmod says.
	if err := mkdirAllIn(rootfs, p.dest, 0o755, own); err != nil {
		return err
	}
	root, err := securejoin.SecureJoin(rootfs, p.dest)
	if err != nil {
		return fmt.Errorf("resolve %s in rootfs: %w", p.dest, err)
	}
	f, err := os.OpenFile(s.entries[0].host, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open archive %s: %w", s.written, err)
	}
	defer f.Close()
	if err := copySameFile(copyFD{fd: int(f.Fd()), name: f.Name()}, &s.entries[0]); err != nil {
		return fmt.Errorf("extract %s: %w", s.written, err)
	}
	// The bytes extracted are hashed on the way: they must be those the
	// step's cache key was computed from (copyUnchanged).
	h := sha256.New()
	read := io.TeeReader(f, h)
	rc, _, err := snapshot.Decompress(read)
	if err != nil {
		return fmt.Errorf("extract %s: %w", s.written, err)
	}
	defer rc.Close()
	opts := []snapshot.ApplyOption{snapshot.WithNoWhiteouts(), snapshot.WithChrootNames()}
	if p.req.Warn != nil {
		opts = append(opts, snapshot.WithWarn(p.req.Warn))
	}
	if p.req.Chown != "" {
		opts = append(opts, snapshot.WithChown(own.uid, own.gid))
	}
	if _, err := snapshot.Apply(ctx, root, rc, opts...); err != nil {
		return fmt.Errorf("extract %s: %w", s.written, err)
	}
	if want := s.entries[0].digest; want != "" {
		if _, err := io.Copy(io.Discard, read); err != nil {
			return fmt.Errorf("read archive %s: %w", s.written, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("extract %s: %w", s.written, changedSinceHash(s.entries[0].host, want, got))
		}
	}
	return nil
}
