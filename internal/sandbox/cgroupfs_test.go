package sandbox

import (
	"reflect"
	"testing"
)

// cgroupfsLayout gives a RUN's /sys/fs/cgroup as runc mounts it: each v1
// hierarchy the process is in, at its cgroup, named as the host's mount
// point (co-mounted controllers linked to it), without the hybrid v2
// hierarchy; cgroup2 alone means a cgroup2 mount.
func TestCgroupfsLayout(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, self string
		v2                    bool
		binds                 []cgroupfsBind
	}{
		{
			name: "hybrid host (cpuacct not in self)", mountinfo: hybridMountinfo, self: hybridSelf,
			binds: []cgroupfsBind{
				{name: "cpu", source: "/sys/fs/cgroup/cpu"},
				{name: "cpuset", source: "/sys/fs/cgroup/cpuset"},
				{name: "memory", source: "/sys/fs/cgroup/memory/process_api/f3"},
				{name: "pids", source: "/sys/fs/cgroup/pids"},
				{name: "systemd", source: "/sys/fs/cgroup/systemd"},
			},
		},
		{
			name:      "co-mounted controllers, a step cgroup, a second mount of a hierarchy",
			mountinfo: "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n35 31 0:32 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio\n36 23 0:29 / /mnt/again rw - cgroup cgroup rw,cpu,cpuacct\n",
			self:      "3:net_cls,net_prio:/\n2:cpu,cpuacct:/b/builder-7/run-1\n",
			binds: []cgroupfsBind{
				{name: "cpu,cpuacct", source: "/sys/fs/cgroup/cpu,cpuacct/b/builder-7/run-1", links: []string{"cpu", "cpuacct"}},
				{name: "net_cls,net_prio", source: "/sys/fs/cgroup/net_cls,net_prio", links: []string{"net_cls", "net_prio"}},
			},
		},
		{
			name:      "in a container: hierarchies rooted at its cgroup, escaped mount point",
			mountinfo: "40 31 0:32 /docker/c1 /sys/fs/cgroup/memory\\040x ro,nosuid - cgroup cgroup rw,memory\n41 31 0:37 /docker/c1 /sys/fs/cgroup/systemd ro - cgroup cgroup rw,xattr,name=systemd\n",
			self:      "9:name=systemd:/docker/c1\n4:memory:/docker/c1/run-2\n",
			binds: []cgroupfsBind{
				{name: "memory x", source: "/sys/fs/cgroup/memory x/run-2"},
				{name: "systemd", source: "/sys/fs/cgroup/systemd"},
			},
		},
		{name: "cgroup v2 only", mountinfo: unifiedMountinfo, self: "0::/user.slice\n", v2: true},
		{name: "no cgroup file system", mountinfo: "22 1 0:21 / /proc rw - proc proc rw\n", self: "0::/\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v2, binds := cgroupfsLayout(tc.mountinfo, tc.self)
			if v2 != tc.v2 || !reflect.DeepEqual(binds, tc.binds) {
				t.Errorf("cgroupfsLayout = %v, %+v; want %v, %+v", v2, binds, tc.v2, tc.binds)
			}
		})
	}
}

func TestHierarchyKey(t *testing.T) {
	for _, tc := range []struct {
		opts, key string
		ctrls     []string
	}{
		{"rw,cpu,cpuacct", "cpu", []string{"cpu", "cpuacct"}},
		{"rw,xattr,name=systemd", "name=systemd", nil},
		{"rw,cpuset,noprefix,release_agent=/x,clone_children", "cpuset", []string{"cpuset"}},
		{"ro,memory", "memory", []string{"memory"}},
	} {
		key, ctrls := hierarchyKey(tc.opts)
		if key != tc.key || !reflect.DeepEqual(ctrls, tc.ctrls) {
			t.Errorf("hierarchyKey(%q) = %q, %v; want %q, %v", tc.opts, key, ctrls, tc.key, tc.ctrls)
		}
	}
}
