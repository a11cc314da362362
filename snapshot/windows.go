package snapshot

import (
	"archive/tar"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"
)

// The Windows layer format. A Windows image's layer tar keeps the image's
// files below Files/ (registry hives, a utility VM and the rest beside
// them). BuildKit on Linux unpacks such a layer from its Files/ entries
// alone, and writes every layer it stacks on a Windows base image in that
// format (moby/buildkit util/winlayers): a Hives and a Files directory
// entry first, dated when the diff is made, then the diff's entries with
// Files/ before their names and link targets, the file type bits in the
// modes of directories and regular files, and PAX records for the file
// attributes (MSWINDOWS.fileattr), the creation time
// (LIBARCHIVE.creationtime, the mtime) and a fixed security descriptor
// (MSWINDOWS.rawsd). The store keeps such a layer as its tar lays it out:
// the files below fs/Files, an empty fs/Hives; layer.json records the
// format and the time of the two leading entries.
const (
	windowsFiles = "Files"
	windowsHives = "Hives"

	paxFileAttr     = "MSWINDOWS.fileattr"
	paxRawSD        = "MSWINDOWS.rawsd"
	paxCreationTime = "LIBARCHIVE.creationtime"

	// Security descriptors BuildKit gives every directory and regular
	// file, base64 of their binary form:
	// O:BAG:SYD:(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)(A;;FA;;;BA)(A;OICIIO;GA;;;CO)(A;OICI;0x1200a9;;;BU)(A;CI;LC;;;BU)(A;CI;DC;;;BU)
	windowsDirSD = "AQAEgBQAAAAkAAAAAAAAADAAAAABAgAAAAAABSAAAAAgAgAAAQEAAAAAAAUSAAAAAgCoAAcAAAAAAxgA/wEfAAECAAAAAAAFIAAAACACAAAAAxQA/wEfAAEBAAAAAAAFEgAAAAAAGAD/AR8AAQIAAAAAAAUgAAAAIAIAAAALFAAAAAAQAQEAAAAAAAMAAAAAAAMYAKkAEgABAgAAAAAABSAAAAAhAgAAAAIYAAQAAAABAgAAAAAABSAAAAAhAgAAAAIYAAIAAAABAgAAAAAABSAAAAAhAgAA"
	// O:BAG:SYD:(A;;FA;;;BA)(A;;FA;;;SY)(A;;0x1200a9;;;BU)
	windowsFileSD = "AQAEgBQAAAAkAAAAAAAAADAAAAABAgAAAAAABSAAAAAgAgAAAQEAAAAAAAUSAAAAAgBMAAMAAAAAABgA/wEfAAECAAAAAAAFIAAAACACAAAAABQA/wEfAAEBAAAAAAAFEgAAAAAAGACpABIAAQIAAAAAAAUgAAAAIQIAAA=="
)

// FilesDir is the directory of the files of the Windows image layer
// diffID (its tar's Files/); it may not exist.
func (s *LayerStore) FilesDir(diffID string) string {
	return filepath.Join(s.Dir(diffID), windowsFiles)
}

// windowsLayout makes the directory fs of a committed Windows layer,
// with its empty Hives directory; the caller moves the files in as
// fs/Files, and syncs fs.
func windowsLayout(fs string) error {
	if err := os.Mkdir(fs, 0o755); err != nil {
		return err
	}
	return os.Mkdir(filepath.Join(fs, windowsHives), 0o755)
}

// windowsHeader turns the header of a diff entry into that entry of a
// Windows layer.
func windowsHeader(hdr *tar.Header) {
	hdr.Name = windowsFiles + "/" + hdr.Name
	if hdr.Linkname != "" {
		// A symlink's target too, as BuildKit does.
		hdr.Linkname = windowsFiles + "/" + hdr.Linkname
	}
	windowsAttributes(hdr)
	switch hdr.Typeflag {
	case tar.TypeDir:
		hdr.PAXRecords[paxRawSD] = windowsDirSD
	case tar.TypeReg:
		hdr.PAXRecords[paxRawSD] = windowsFileSD
	}
}

// windowsAttributes adds the file type bits and the attribute and
// creation time records to hdr.
func windowsAttributes(hdr *tar.Header) {
	hdr.PAXRecords = maps.Clone(hdr.PAXRecords)
	if hdr.PAXRecords == nil {
		hdr.PAXRecords = map[string]string{}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		hdr.Mode |= 0o40000
		hdr.PAXRecords[paxFileAttr] = "16" // FILE_ATTRIBUTE_DIRECTORY
	case tar.TypeReg:
		hdr.Mode |= 0o100000
		hdr.PAXRecords[paxFileAttr] = "32" // FILE_ATTRIBUTE_ARCHIVE
	}
	if !hdr.ModTime.IsZero() {
		// Nanoseconds without leading zeros, as BuildKit formats them.
		hdr.PAXRecords[paxCreationTime] = fmt.Sprintf("%d.%d", hdr.ModTime.Unix(), hdr.ModTime.Nanosecond())
	}
	hdr.Format = tar.FormatPAX
}

// windowsLeaders writes the Hives and Files entries that open a Windows
// layer, dated t.
func windowsLeaders(out *tarOut, t time.Time) error {
	for _, name := range []string{windowsHives, windowsFiles} {
		hdr := &tar.Header{Name: name, Typeflag: tar.TypeDir, ModTime: t}
		windowsAttributes(hdr)
		if err := tar.NewWriter(out).WriteHeader(hdr); err != nil {
			return fmt.Errorf("write tar entry %s: %w", name, err)
		}
	}
	return nil
}
