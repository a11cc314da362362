package snapshot

// The names of the layer format, in layer tars (Apply reads them, WriteTar
// writes them) and in the overlay upper directories a layer is stored as.
const (
	// whiteoutPrefix names a deletion in a layer tar: ".wh.NAME" deletes
	// NAME of the layers below.
	whiteoutPrefix = ".wh."
	// opaqueMarker in a directory of a layer tar hides the content the
	// directory has in the layers below.
	opaqueMarker = ".wh..wh..opq"
	// aufsMetaPrefix starts aufs's own metadata entries (".wh..wh.plnk"),
	// which are not files of the image.
	aufsMetaPrefix = ".wh..wh."
	// opaqueXattr marks an opaque directory of an overlay upper
	// directory; userOpaque is its form on a userxattr mount.
	opaqueXattr = "trusted.overlay.opaque"
	userOpaque  = "user.overlay.opaque"
)
