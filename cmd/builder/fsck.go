package main

import (
	"context"
	"fmt"
)

// cmdFsck checks every digest and reference of the store and, with
// --repair, removes what is damaged (the next build makes it again) and
// rebuilds a damaged image index. It prints one line per problem and a
// summary, and fails while problems remain.
func cmdFsck(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "fsck", "[--repair]")
	repair := fs.Bool("repair", false, "remove what is damaged so the next build makes it again, and rebuild a damaged image index")
	st, err := a.setup(fs, args, 0, 0)
	if err != nil {
		return err
	}
	defer st.Close()
	// A repair removes files builds may be reading: it waits for them,
	// as prune does. A check only reads.
	lock := st.cache.RLock
	if *repair {
		lock = st.cache.Lock
	}
	unlock, err := lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	rep, err := st.images.Fsck(ctx, *repair)
	if rep != nil {
		for _, p := range rep.Problems {
			fmt.Fprintln(a.stdout, p.String())
		}
	}
	if err != nil {
		return fmt.Errorf("fsck %s: %w", st.cache.Root(), err)
	}
	remaining := rep.Remaining()
	fmt.Fprintf(a.stdout, "checked %s: %s, %s, %s; %s, %d repaired, %d remaining\n", st.cache.Root(),
		plural(rep.Checked["blobs"], "blob"), plural(rep.Checked["layers"], "layer"), plural(rep.Checked["images"], "tagged image"),
		plural(len(rep.Problems), "problem"), len(rep.Problems)-remaining, remaining)
	if remaining > 0 {
		if *repair {
			return fmt.Errorf("fsck: %s remaining: each line says what to do", plural(remaining, "problem"))
		}
		return fmt.Errorf("fsck: %s found: builder fsck --repair removes what is damaged (the next build makes it again); each line says what else to do", plural(remaining, "problem"))
	}
	return nil
}
