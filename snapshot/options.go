package snapshot

import "time"

// DiffOptions are the settings of a diff; set them with DiffOption values.
type DiffOptions struct {
	// SourceDateEpoch, when set, clamps every timestamp in the layer to it.
	SourceDateEpoch *time.Time
	// Windows writes the layer in the Windows layer format (windows.go).
	Windows bool
}

// DiffOption configures Commit and Diff.
type DiffOption func(*DiffOptions)

// WithSourceDateEpoch clamps every mtime in the layer to t (SOURCE_DATE_EPOCH).
func WithSourceDateEpoch(t time.Time) DiffOption {
	return func(o *DiffOptions) { o.SourceDateEpoch = &t }
}

// WithWindowsFormat makes the committed layer one of a Windows image: its
// tar holds the changes below Files/, as BuildKit writes the layers it
// stacks on a Windows base image (windows.go).
func WithWindowsFormat() DiffOption {
	return func(o *DiffOptions) { o.Windows = true }
}

// PrepareOptions are the settings of Prepare and View; set them with
// PrepareOption values.
type PrepareOptions struct {
	// Windows[i] reports whether parents[i] is a layer in the Windows
	// layer format, whose files are below Files/ (windows.go).
	Windows []bool
}

// PrepareOption configures Prepare and View.
type PrepareOption func(*PrepareOptions)

// WithWindowsLayers says which parents are layers in the Windows layer
// format: which[i] for parents[i]. The root has such a layer's Files
// directory, as BuildKit unpacks the layers of a Windows image on Linux
// (its other entries, Hives/ and the rest, are not files of the image).
func WithWindowsLayers(which []bool) PrepareOption {
	return func(o *PrepareOptions) { o.Windows = which }
}

func prepareOptions(opts []PrepareOption) PrepareOptions {
	var o PrepareOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}
