package planner

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/builder-dev/builder/parser"
)

// manyEnv is a Dockerfile of n ENV lines, a re-set of one of them, and a
// RUN that sees them all.
func manyEnv(n int) string {
	var b strings.Builder
	b.WriteString("FROM scratch\n")
	for i := range n {
		fmt.Fprintf(&b, "ENV V%d=value%d\n", i, i)
	}
	b.WriteString("ENV V0=again\nRUN true\n")
	return b.String()
}

// planAlloc returns the bytes allocated to parse and plan src.
func planAlloc(t testing.TB, src string) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	df, err := parser.Parse(strings.NewReader(src), "Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(t.Context(), df, Options{BuildPlatform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := len(p.Target.Steps[len(p.Target.Steps)-1].Env); got < 2 {
		t.Fatalf("the RUN sees %d env entries", got)
	}
	return after.TotalAlloc - before.TotalAlloc
}

// Planning is linear in the number of ENV lines: ten times the lines
// allocate about ten times the bytes (a copy of the env per step, as
// before, made it a hundred times).
func TestPlanLinearInEnvLines(t *testing.T) {
	small, large := planAlloc(t, manyEnv(2000)), planAlloc(t, manyEnv(20000))
	if ratio := float64(large) / float64(small); ratio > 20 {
		t.Errorf("10x the ENV lines allocated %.1fx the bytes (%d vs %d): planning is not linear", ratio, large, small)
	}
	// A step keeps the env it saw, and a later ENV never changes it.
	p, _ := mustPlan(t, "FROM scratch\nENV A=1 B=2\nRUN one\nENV A=3\nRUN two\n", Options{})
	if got := strings.Join(p.Target.Steps[1].Env, " "); got != "PATH="+DefaultPath+" A=1 B=2" {
		t.Errorf("env of the first RUN: %s", got)
	}
	if got := strings.Join(p.Target.Steps[3].Env, " "); got != "PATH="+DefaultPath+" A=3 B=2" {
		t.Errorf("env of the second RUN: %s", got)
	}
}

// BenchmarkPlanManyEnv plans Dockerfiles of 5,000 and 50,000 ENV lines;
// bytes/line stays flat.
func BenchmarkPlanManyEnv(b *testing.B) {
	for _, n := range []int{5000, 50000} {
		src := manyEnv(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			var total uint64
			for range b.N {
				total += planAlloc(b, src)
			}
			b.ReportMetric(float64(total)/float64(b.N)/float64(n), "bytes/line")
		})
	}
}
