package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// mountNSEnv marks the re-executed child that already runs in its own mount
// namespace.
const mountNSEnv = "_BUILDER_MOUNT_NS"

// enterMountNamespace makes the rest of this process run in a private mount
// namespace, so that every mount the build makes (snapshots, views) is
// released by the kernel when the process ends, even on SIGKILL. A process
// with many threads can't unshare its mount namespace reliably, so the
// binary re-executes itself in a new namespace and forwards signals; the
// parent then only waits. It returns reexeced=true in the parent, with the
// child's exit code. Without root privileges it does nothing.
func enterMountNamespace() (code int, reexeced bool) {
	if os.Geteuid() != 0 {
		return 0, false
	}
	if os.Getenv(mountNSEnv) == "1" {
		os.Unsetenv(mountNSEnv) //nolint:errcheck // only this process's own marker
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			fmt.Fprintf(os.Stderr, "ERROR: make mounts private: %v\n", err)
			return 1, true
		}
		return 0, false
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR: find own executable: %v\n", err)
		return 1, true
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), mountNSEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "ERROR: start build in a private mount namespace: %v\n", err)
		return 1, true
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			return 128 + int(st.Signal()), true
		}
		return ee.ExitCode(), true
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ERROR: %v\n", err)
		return 1, true
	}
	return 0, true
}
