package executor

import (
	"strings"
	"testing"
)

func TestCopyChmod(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec  string
		in    uint32
		dir   bool
		want  uint32
		isErr bool
	}{
		{spec: "755", in: 0o600, want: 0o755},
		{spec: "4710", in: 0o644, dir: true, want: 0o4710},
		{spec: "u+x", in: 0o644, want: 0o744},
		{spec: "g-w", in: 0o664, want: 0o644},
		{spec: "a=r", in: 0o755, want: 0o444},
		{spec: "u+x,g-w", in: 0o664, want: 0o744},
		{spec: "ug+rw", in: 0, want: 0o660},
		{spec: "u=rwx,g=rx,o=", in: 0o7, want: 0o750},
		{spec: "go=", in: 0o755, want: 0o700},
		{spec: "go=u-w", in: 0o700, want: 0o755},
		{spec: "u+x-w", in: 0o644, want: 0o544},
		// No "who": all classes, as BuildKit's copy parses them with
		// umask 0; "X" with "=" as with "+", with "-" it is x. Expected
		// values are tonistiigi/dchapes-mode's (BuildKit's parser).
		{spec: "+x", in: 0o644, want: 0o755},
		{spec: "+w", in: 0o444, want: 0o666},
		{spec: "-w", in: 0o666, want: 0o444},
		{spec: "=r", in: 0o755, want: 0o444},
		{spec: "=rw,+X", in: 0o100, want: 0o777},
		{spec: "=rw,+X", in: 0, dir: true, want: 0o777},
		{spec: "=rw,+X", in: 0, want: 0o666},
		{spec: "+X", in: 0o644, want: 0o644},
		{spec: "+X", in: 0o644, dir: true, want: 0o755},
		{spec: "-X", in: 0o755, want: 0o644},
		{spec: "go-X", in: 0o755, want: 0o744},
		{spec: "a=X", in: 0o644, want: 0},
		{spec: "u=rwX,go=rX", in: 0o751, dir: true, want: 0o755},
		{spec: "u=rwX,go=rX", in: 0o640, want: 0o644},
		{spec: "u+s", in: 0o755, want: 0o4755},
		{spec: "g+s", in: 0o755, want: 0o2755},
		{spec: "o+s", in: 0o755, want: 0o755},
		{spec: "+t", in: 0o755, dir: true, want: 0o1755},
		{spec: "o+t", in: 0o755, want: 0o755},
		{spec: "u=rw", in: 0o4755, want: 0o655},
		{spec: "a-x", in: 0o6755, want: 0o6644},
		{spec: "abc", isErr: true},
		{spec: "u", isErr: true},
		{spec: "u+x,", isErr: true},
		{spec: "u+z", isErr: true},
		{spec: "u+rg", isErr: true},
		{spec: "x+u", isErr: true},
		{spec: "999", isErr: true},
		{spec: "7u", isErr: true},
		{spec: "17777", isErr: true},
	}
	for _, tt := range tests {
		c, err := copyParseChmod(tt.spec)
		if tt.isErr {
			if err == nil || !strings.Contains(err.Error(), "invalid chmod parameter: '"+tt.spec+"'") {
				t.Errorf("%q: error %v, want invalid chmod parameter", tt.spec, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.spec, err)
			continue
		}
		if got := c.apply(tt.in, tt.dir); got != tt.want {
			t.Errorf("%q on %#o (dir %v) = %#o, want %#o", tt.spec, tt.in, tt.dir, got, tt.want)
		}
	}
}
