package sandbox

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const hybridMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hybridSelf = `9:name=systemd:/
8:pids:/
4:memory:/process_api/f3
3:cpuset:/
1:cpu:/
0::/
`

const unifiedMountinfo = `30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
`

func TestFindHierarchies(t *testing.T) {
	all := []string{"cpu", "cpuset", "memory", "pids"}
	for _, tc := range []struct {
		name, mountinfo, self string
		v2ctrls               []string
		needed                []string
		want                  []hierarchy
		err                   string
	}{
		{
			name: "hybrid, controllers in v1", mountinfo: hybridMountinfo, self: hybridSelf,
			v2ctrls: []string{"hugetlb"}, needed: all,
			want: []hierarchy{
				{own: "/sys/fs/cgroup/cpu", ctrls: []string{"cpu"}},
				{own: "/sys/fs/cgroup/cpuset", ctrls: []string{"cpuset"}},
				{own: "/sys/fs/cgroup/memory/process_api/f3", ctrls: []string{"memory"}},
				{own: "/sys/fs/cgroup/pids", ctrls: []string{"pids"}},
			},
		},
		{
			name: "hybrid, memory in v2", mountinfo: hybridMountinfo, self: hybridSelf,
			v2ctrls: []string{"memory", "pids"}, needed: []string{"cpu", "memory", "pids"},
			want: []hierarchy{
				{own: "/sys/fs/cgroup/cpu", ctrls: []string{"cpu"}},
				{v2: true, own: "/sys/fs/cgroup/unified", ctrls: []string{"memory", "pids"}},
			},
		},
		{
			name: "unified, delegated user cgroup", mountinfo: unifiedMountinfo,
			self:    "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope\n",
			v2ctrls: all, needed: all,
			want: []hierarchy{{v2: true, own: "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/run-r1.scope", ctrls: all}},
		},
		{
			name:      "cgroup namespace root",
			mountinfo: "30 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			self:      "0::/docker/abc/sub\n", v2ctrls: all, needed: []string{"pids"},
			want: []hierarchy{{v2: true, own: "/sys/fs/cgroup/sub", ctrls: []string{"pids"}}},
		},
		{
			name: "no such controller", mountinfo: unifiedMountinfo, self: "0::/\n",
			v2ctrls: []string{"cpu"}, needed: []string{"pids"}, err: `controller "pids"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findHierarchies(tc.mountinfo, tc.self, tc.needed, func(string) ([]string, error) { return tc.v2ctrls, nil })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var flat []hierarchy
			for _, h := range got {
				flat = append(flat, *h)
			}
			if !reflect.DeepEqual(flat, tc.want) {
				t.Errorf("got %+v\nwant %+v", flat, tc.want)
			}
		})
	}
}

func TestLimitFiles(t *testing.T) {
	l := Limits{Memory: 512 << 20, CPUQuota: 50000, CpusetCPUs: "0-1", PidsLimit: 64}
	ctrls := []string{"cpu", "cpuset", "memory", "pids"}
	got, optional := limitFiles(true, ctrls, l)
	want := []limitFile{
		{"cpu.max", "50000 100000"}, {"cpuset.cpus", "0-1"},
		{"memory.max", "536870912"}, {"memory.swap.max", "536870912"}, {"pids.max", "64"},
	}
	if !reflect.DeepEqual(got, want) || !optional["memory.swap.max"] {
		t.Errorf("v2: %v %v", got, optional)
	}
	got, _ = limitFiles(false, ctrls, l)
	want = []limitFile{
		{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "50000"}, {"cpuset.cpus", "0-1"},
		{"memory.limit_in_bytes", "536870912"}, {"memory.memsw.limit_in_bytes", "1073741824"}, {"pids.max", "64"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("v1: %v", got)
	}
	swap := Limits{Memory: 100, MemorySwap: -1, CPUPeriod: 50000, PidsLimit: -1}
	got, optional = limitFiles(true, ctrls[:1], swap)
	if !reflect.DeepEqual(got, []limitFile{{"cpu.max", "max 50000"}}) {
		t.Errorf("v2 period only: %v", got)
	}
	got, optional = limitFiles(true, []string{"memory", "pids"}, swap)
	if !reflect.DeepEqual(got, []limitFile{{"memory.max", "100"}, {"memory.swap.max", "max"}, {"pids.max", "max"}}) || optional["memory.swap.max"] {
		t.Errorf("v2 unlimited swap: %v %v", got, optional)
	}
	got, _ = limitFiles(false, []string{"memory"}, Limits{Memory: 100, MemorySwap: 300})
	if !reflect.DeepEqual(got, []limitFile{{"memory.limit_in_bytes", "100"}, {"memory.memsw.limit_in_bytes", "300"}}) {
		t.Errorf("v1 swap: %v", got)
	}
}

func TestParseUlimitAndCheck(t *testing.T) {
	for in, want := range map[string]Ulimit{
		"nofile=1024:2048": {"nofile", 1024, 2048},
		"nproc=100":        {"nproc", 100, 100},
		"core=-1":          {"core", -1, -1},
		"stack=10:-1":      {"stack", 10, -1},
	} {
		got, err := ParseUlimit(in)
		if err != nil || got != want {
			t.Errorf("ParseUlimit(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"nofile", "foo=1", "nofile=x", "nofile=10:5", "nofile=-1:5"} {
		if _, err := ParseUlimit(bad); err == nil {
			t.Errorf("ParseUlimit(%q) accepted", bad)
		}
	}
	for _, bad := range []Limits{{MemorySwap: 10}, {Memory: 10, MemorySwap: 5}, {CPUPeriod: 10}, {CPUQuota: 10}, {PidsLimit: -2}} {
		if err := bad.Check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if err := (Limits{Memory: 10, MemorySwap: -1, CPUQuota: 1000, PidsLimit: -1}).Check(); err != nil {
		t.Error(err)
	}
}

func TestOOMError(t *testing.T) {
	err := error(&ExitError{Code: 137, Signal: "SIGKILL", OOMKilled: true, MemoryLimit: 512 << 20})
	var ee *ExitError
	if !errors.As(err, &ee) || err.Error() != "killed: out of memory (limit 512 MiB)" {
		t.Errorf("%v", err)
	}
}
