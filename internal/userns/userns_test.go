package userns

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseRanges(t *testing.T) {
	in := `# comment
alice:100000:65536
1001:300000:10
bob:200000:65536

alice:165536:1000
alice:100500:10
alice:1000:5
`
	for _, tc := range []struct {
		name string
		uid  uint32
		want []Range
	}{
		// alice's third range overlaps her first; the last holds her uid.
		{"alice", 1000, []Range{{100000, 65536}, {165536, 1000}}},
		{"", 1001, []Range{{300000, 10}}},
		{"carol", 1001, []Range{{300000, 10}}},
		{"carol", 1002, nil},
	} {
		got, err := ParseRanges(strings.NewReader(in), tc.name, tc.uid)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseRanges(%q, %d) = %v, %v; want %v", tc.name, tc.uid, got, err, tc.want)
		}
	}
	for _, bad := range []string{"alice:1", "alice:x:1", "alice:1:0", "alice:4294967295:2"} {
		if _, err := ParseRanges(strings.NewReader(bad), "alice", 1000); err == nil {
			t.Errorf("ParseRanges(%q) accepted", bad)
		}
	}
}

func TestNewPlan(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sub := Files{
		SubUID: write("subuid", "u:100000:65536\n"), SubGID: write("subgid", "u:200000:65536\n"),
		NewUIDMap: "/usr/bin/newuidmap", NewGIDMap: "/usr/bin/newgidmap",
	}
	p, err := NewPlan("u", 1000, 1001, sub)
	if err != nil {
		t.Fatal(err)
	}
	if !p.SubIDs || p.Limit != "" ||
		!slices.Equal(p.UIDs, []IDMap{{0, 1000, 1}, {1, 100000, 65536}}) ||
		!slices.Equal(p.GIDs, []IDMap{{0, 1001, 1}, {1, 200000, 65536}}) {
		t.Errorf("plan with ranges = %+v", p)
	}
	noRange := sub
	noRange.SubGID = filepath.Join(dir, "missing")
	noHelper := sub
	noHelper.NewUIDMap = ""
	t.Setenv("PATH", dir) // no newuidmap to find
	for name, files := range map[string]Files{"no gid range": noRange, "no newuidmap": noHelper} {
		p, err := NewPlan("u", 1000, 1001, files)
		if err != nil {
			t.Fatal(err)
		}
		if p.SubIDs || !slices.Equal(p.UIDs, []IDMap{{0, 1000, 1}}) || !slices.Equal(p.GIDs, []IDMap{{0, 1001, 1}}) ||
			!strings.Contains(p.Limit, "only uid and gid 0") {
			t.Errorf("%s: plan = %+v", name, p)
		}
	}
}

func TestMapHelpers(t *testing.T) {
	maps := []IDMap{{0, 1000, 1}, {1, 100000, 65536}}
	if got := Format(maps); got != "0 1000 1\n1 100000 65536\n" {
		t.Errorf("Format = %q", got)
	}
	parsed, err := ParseMap("         0       1000          1\n         1     100000      65536\n")
	if err != nil || !slices.Equal(parsed, maps) {
		t.Errorf("ParseMap = %v, %v", parsed, err)
	}
	if _, err := ParseMap("0 1"); err == nil {
		t.Error("ParseMap accepted a short line")
	}
	for id, want := range map[uint32]bool{0: true, 1: true, 65536: true, 65537: false} {
		if Contains(maps, id) != want {
			t.Errorf("Contains(%d) = %v", id, !want)
		}
	}
	if got := Inside(maps); got != "0, 1-65536" {
		t.Errorf("Inside = %q", got)
	}
}
