package seccomp

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Install loads prog as a filter of the calling thread, which the
// threads and processes it starts inherit; the caller locks its
// goroutine to the thread. Loading a filter takes CAP_SYS_ADMIN (in the
// thread's user namespace) or no_new_privs: Install is called before the
// thread gives up its capabilities, so that setuid programs of a RUN keep
// working (BuildKit does not set no_new_privs either).
func Install(prog []unix.SockFilter) error {
	if len(prog) == 0 {
		return errors.New("seccomp: empty program")
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("seccomp: load filter: %w", errno)
	}
	return nil
}
