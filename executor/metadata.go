package executor

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/util/system"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/sys/signal"
)

// applyMetadata applies a metadata-only instruction to img and returns the
// history message BuildKit writes for it. ok is false for instructions that
// are not metadata-only (RUN, COPY, ADD, WORKDIR are handled elsewhere).
// record is false for instructions that leave no history entry (ONBUILD).
func applyMetadata(img *dockerspec.DockerOCIImage, cmd instructions.Command, args []instructions.KeyValuePairOptional) (msg string, record, ok bool, err error) {
	c := &img.Config
	switch cmd := cmd.(type) {
	case *instructions.EnvCommand:
		for _, kv := range cmd.Env {
			c.Env = setEnv(c.Env, kv.Key, kv.Value)
		}
		return envHistory(cmd), true, true, nil
	case *instructions.LabelCommand:
		var b strings.Builder
		b.WriteString("LABEL")
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for _, kv := range cmd.Labels {
			c.Labels[kv.Key] = kv.Value
			b.WriteString(" " + kv.String())
		}
		return b.String(), true, true, nil
	case *instructions.MaintainerCommand:
		img.Author = cmd.Maintainer
		return "MAINTAINER " + cmd.Maintainer, true, true, nil
	case *instructions.CmdCommand:
		a := withShell(img, cmd.ShellDependantCmdLine)
		c.Cmd = a
		c.ArgsEscaped = true //nolint:staticcheck // Docker still writes it.
		return fmt.Sprintf("CMD %q", a), true, true, nil
	case *instructions.EntrypointCommand:
		a := withShell(img, cmd.ShellDependantCmdLine)
		c.Entrypoint = a
		return fmt.Sprintf("ENTRYPOINT %q", a), true, true, nil
	case *instructions.UserCommand:
		c.User = cmd.User
		return "USER " + cmd.User, true, true, nil
	case *instructions.ExposeCommand:
		ports, err := parsePorts(cmd.Ports)
		if err != nil {
			return "", false, true, err
		}
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range ports {
			c.ExposedPorts[p] = struct{}{}
		}
		return fmt.Sprintf("EXPOSE %v", ports), true, true, nil
	case *instructions.VolumeCommand:
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		for _, v := range cmd.Volumes {
			if v == "" {
				return "", false, true, fmt.Errorf("VOLUME specified can not be an empty string")
			}
			c.Volumes[v] = struct{}{}
		}
		return fmt.Sprintf("VOLUME %v", cmd.Volumes), true, true, nil
	case *instructions.StopSignalCommand:
		if _, err := signal.ParseSignal(cmd.Signal); err != nil {
			return "", false, true, err
		}
		c.StopSignal = cmd.Signal
		return "STOPSIGNAL " + cmd.Signal, true, true, nil
	case *instructions.ShellCommand:
		c.Shell = append([]string(nil), cmd.Shell...)
		return fmt.Sprintf("SHELL %v", cmd.Shell), true, true, nil
	case *instructions.HealthCheckCommand:
		h := *cmd.Health
		c.Healthcheck = &h
		return fmt.Sprintf("HEALTHCHECK %+v", h), true, true, nil
	case *instructions.OnbuildCommand:
		c.OnBuild = append(c.OnBuild, cmd.Expression)
		return "", false, true, nil
	case *instructions.ArgCommand:
		parts := make([]string, 0, len(args))
		for _, a := range args {
			s := a.Key
			if a.Value != nil {
				s += "=" + *a.Value
			}
			parts = append(parts, s)
		}
		return "ARG " + strings.Join(parts, " "), true, true, nil
	}
	return "", false, false, nil
}

// withShell returns the argv of a shell-dependent command line: exec form as
// is, shell form prefixed by the image's SHELL (default /bin/sh -c).
func withShell(img *dockerspec.DockerOCIImage, c instructions.ShellDependantCmdLine) []string {
	if !c.PrependShell {
		return append([]string(nil), c.CmdLine...)
	}
	return append(shellOf(img.Config.Shell, img.OS), strings.Join(c.CmdLine, " "))
}

// shellOf returns a copy of the image's SHELL, or the default of an image
// of operating system os: /bin/sh -c, cmd /S /C on Windows (BuildKit's).
func shellOf(shell []string, os string) []string {
	if len(shell) > 0 {
		return append([]string(nil), shell...)
	}
	if os == "windows" {
		return []string{"cmd", "/S", "/C"}
	}
	return []string{"/bin/sh", "-c"}
}

// setEnv sets key=value in env, replacing an existing entry in place.
func setEnv(env []string, key, value string) []string {
	for i, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			env[i] = key + "=" + value
			return env
		}
	}
	return append(env, key+"="+value)
}

// envHistory is the history text of an ENV instruction.
func envHistory(cmd *instructions.EnvCommand) string {
	var b strings.Builder
	b.WriteString("ENV")
	for _, kv := range cmd.Env {
		b.WriteString(" " + kv.String())
	}
	return b.String()
}

// applyEnv applies ENV to the stage's config through an index of the
// env's keys, so a stage of N ENV instructions costs O(N), not O(N²).
func (s *stageState) applyEnv(cmd *instructions.EnvCommand) string {
	c := &s.img.Config
	if s.envPos == nil {
		s.envPos = make(map[string]int, len(c.Env))
		for i, e := range c.Env {
			k, _, _ := strings.Cut(e, "=")
			if _, dup := s.envPos[k]; !dup {
				s.envPos[k] = i
			}
		}
	}
	for _, kv := range cmd.Env {
		if i, ok := s.envPos[kv.Key]; ok {
			c.Env[i] = kv.Key + "=" + kv.Value
			continue
		}
		s.envPos[kv.Key] = len(c.Env)
		c.Env = append(c.Env, kv.Key+"="+kv.Value)
	}
	return envHistory(cmd)
}

// getEnv looks key up in a "K=V" list.
func getEnv(env []string, key string) (string, bool) {
	for _, e := range env {
		if k, v, _ := strings.Cut(e, "="); k == key {
			return v, true
		}
	}
	return "", false
}

// parsePorts turns EXPOSE arguments ([ip:][hostPort:]port[-end][/proto])
// into "port/proto" keys in argument order, expanding ranges, as BuildKit does.
func parsePorts(args []string) ([]string, error) {
	var ports []string
	for _, raw := range args {
		spec := raw
		if i := strings.LastIndex(spec, ":"); i >= 0 {
			spec = spec[i+1:]
		}
		port, proto, _ := strings.Cut(spec, "/")
		if proto == "" {
			proto = "tcp"
		}
		proto = strings.ToLower(proto)
		start, end, err := parsePortRange(port)
		if err != nil {
			return nil, fmt.Errorf("invalid port %q: %w", raw, err)
		}
		for p := start; p <= end; p++ {
			ports = append(ports, strconv.Itoa(p)+"/"+proto)
		}
	}
	return ports, nil
}

func parsePortRange(s string) (int, int, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	start, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("invalid containerPort: %s", s)
	}
	end := start
	if isRange {
		if end, err = strconv.ParseUint(hi, 10, 16); err != nil || end < start {
			return 0, 0, fmt.Errorf("invalid containerPort: %s", s)
		}
	}
	return int(start), int(end), nil
}

// resolveWorkdir joins a WORKDIR argument onto the current working
// directory as BuildKit does: an absolute path is kept as written, a
// relative one is joined (and cleaned) onto the current directory.
func resolveWorkdir(cur, p string) string {
	if path.IsAbs(p) {
		return p
	}
	if cur == "" {
		cur = "/"
	}
	return path.Join(cur, p)
}

// resolveWorkdirFor is resolveWorkdir for an image of operating system
// os: a Windows image's working directory is normalized as BuildKit's
// system.NormalizeWorkdir does (the drive letter C: dropped, which must
// be the system drive, and backslashes: "C:\app" is "\app").
func resolveWorkdirFor(cur, p, os string) (string, error) {
	if os != "windows" {
		return resolveWorkdir(cur, p), nil
	}
	wd, err := system.NormalizeWorkdir(cur, p, os)
	if err != nil {
		return "", fmt.Errorf("WORKDIR %s: %w", p, err)
	}
	return wd, nil
}

// baseImageWorkdir is the working directory a stage FROM an image starts
// with: BuildKit dispatches the image's as a WORKDIR onto itself
// (system.NormalizeWorkdir), so a relative one is joined to itself made
// absolute ("app" is "/app/app") and a Windows one loses its drive letter
// ("C:\\app" is "\\app"); an absolute Linux one stays as it is.
func baseImageWorkdir(wd, os string) (string, error) {
	if wd == "" {
		return "", nil
	}
	nwd, err := system.NormalizeWorkdir(wd, wd, os)
	if err != nil {
		return "", fmt.Errorf("working directory %s: %w", wd, err)
	}
	return nwd, nil
}

// applyMetadata applies a metadata instruction with the rules that depend on
// the stage: ENTRYPOINT resets a CMD inherited from the base, but not one set
// earlier in this stage.
func (s *stageState) applyMetadata(cmd instructions.Command, args []instructions.KeyValuePairOptional) (msg string, record, ok bool, err error) {
	if env, isEnv := cmd.(*instructions.EnvCommand); isEnv {
		return s.applyEnv(env), true, true, nil
	}
	msg, record, ok, err = applyMetadata(&s.img, cmd, args)
	if err != nil || !ok {
		return msg, record, ok, err
	}
	switch cmd.(type) {
	case *instructions.CmdCommand:
		s.cmdSet = true
	case *instructions.EntrypointCommand:
		if !s.cmdSet {
			s.img.Config.Cmd = nil
		}
	}
	return msg, record, ok, nil
}
