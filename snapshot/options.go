package snapshot

import "time"

// DiffOptions are the settings of a diff; set them with DiffOption values.
type DiffOptions struct {
	// SourceDateEpoch, when set, clamps every timestamp in the layer to it.
	SourceDateEpoch *time.Time
}

// DiffOption configures Commit and Diff.
type DiffOption func(*DiffOptions)

// WithSourceDateEpoch clamps every mtime in the layer to t (SOURCE_DATE_EPOCH).
func WithSourceDateEpoch(t time.Time) DiffOption {
	return func(o *DiffOptions) { o.SourceDateEpoch = &t }
}
