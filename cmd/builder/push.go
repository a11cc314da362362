package main

import (
	"context"
	"fmt"
)

func cmdPush(ctx context.Context, a *app, args []string) error {
	fs := newFlags(a, "push", "[OPTIONS] IMAGE [DEST_REF]")
	quiet := fs.BoolP("quiet", "q", false, "print only the pushed manifest digest")
	st, err := a.setup(fs, args, 1, 2)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.lockShared(ctx); err != nil {
		return err
	}
	src, dst := fs.Arg(0), fs.Arg(1)
	if dst == "" {
		dst = src
	}
	progress := a.progressLines()
	if *quiet {
		progress = nil
	}
	digest, err := st.images.Push(ctx, src, dst, a.remoteOptions(hostPlatform(), progress))
	if err != nil {
		return err
	}
	if *quiet {
		fmt.Fprintln(a.stdout, digest)
		return nil
	}
	fmt.Fprintf(a.stdout, "Pushed %s\nDigest: %s\n", dst, digest)
	return nil
}
