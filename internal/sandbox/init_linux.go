package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/builder-dev/builder/internal/userns"

	"golang.org/x/sys/unix"
)

// File descriptors the parent passes to the init through ExtraFiles.
const (
	specFD   = 3
	resultFD = 4
)

// Init runs the sandbox init and exits the process when os.Args[1] is
// InitArg; otherwise it returns false at once. main must call it first.
func Init() bool {
	if len(os.Args) < 2 {
		return false
	}
	switch os.Args[1] {
	case InitArg:
		os.Exit(initMain())
	case ReaperArg:
		os.Exit(reaperMain(os.Stdin))
	}
	return false
}

// initMain is the whole life of the sandbox init (PID 1 of the new PID
// namespace). It returns the process exit code.
func initMain() int {
	resF := os.NewFile(resultFD, "result")
	res := runInit(os.NewFile(specFD, "spec"))
	_ = json.NewEncoder(resF).Encode(res)
	_ = resF.Close()
	switch {
	case res.Error != "":
		return 1
	default:
		return res.Code
	}
}

func runInit(specF *os.File) result {
	// Nothing but stdio may reach the command, and the init itself must
	// not be inspectable (no /proc/1/exe, /proc/1/fd for the command).
	if err := closeOnExec(specFD); err != nil {
		return result{Error: err.Error()}
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return result{Error: fmt.Sprintf("set non-dumpable: %v", err)}
	}
	unix.Umask(0o022)
	var cfg config
	err := json.NewDecoder(specF).Decode(&cfg)
	_ = specF.Close()
	if err != nil {
		return result{Error: fmt.Sprintf("decode spec: %v", err)}
	}
	return runSandbox(&cfg)
}

func runSandbox(cfg *config) result {
	if err := fitUserNS(cfg); err != nil {
		return result{Error: err.Error()}
	}
	if cfg.Isolation == IsolationChroot {
		// No PID namespace: orphans of the command come to the init,
		// which kills them when the command ends.
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return result{Error: fmt.Sprintf("become a subreaper: %v", err)}
		}
		return runChroot(cfg)
	}
	rootDir := filepath.Join(cfg.Dir, "root")
	sb := &sandbox{root: rootDir, insecure: cfg.Insecure}
	res := result{}
	if err := sb.setup(cfg); err != nil {
		res.Error = err.Error()
	} else {
		res = supervise(cfg)
	}
	if err := sb.teardown(); err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	return res
}

// closeOnExec marks every fd from first on close-on-exec: with
// close_range(2) (Linux 5.11), else one by one from /proc/self/fd.
func closeOnExec(first int) error {
	if unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return nil
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("set close-on-exec: %w", err)
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= first {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

// fitUserNS checks that the command's uid and gid exist in the user
// namespace of a rootless builder, and drops the supplementary groups the
// namespace cannot hold (all of them where setgroups is denied: a
// single-id mapping).
func fitUserNS(cfg *config) error {
	if !inUserNS() {
		return nil
	}
	uids, gids, err := userns.Current()
	if err != nil {
		return fmt.Errorf("read id maps: %w", err)
	}
	if !userns.Contains(uids, cfg.UID) || !userns.Contains(gids, cfg.GID) {
		return fmt.Errorf("the user %d:%d does not exist in this rootless build's user namespace, which maps the uids %s and the gids %s: give the user who runs builder a subordinate id range in /etc/subuid and /etc/subgid", cfg.UID, cfg.GID, userns.Inside(uids), userns.Inside(gids))
	}
	if !userns.SetgroupsAllowed() {
		cfg.Groups, cfg.noSetgroups = nil, true
		return nil
	}
	groups := cfg.Groups[:0:0]
	for _, g := range cfg.Groups {
		if userns.Contains(gids, g) {
			groups = append(groups, g)
		}
	}
	cfg.Groups = groups
	return nil
}
