#!/usr/bin/env bash
# Runs every fuzz target in turn and prints, per target, one summary line:
# "FuzzApply: 123456 execs in 60s (2057/s), 12 new interesting".
# Called by `make fuzz` (CI: six targets, about three minutes).
#
# Each target's budget is a count of executions (go's -fuzztime Nx), sized
# to about 30 seconds on a 2-core machine, unless FUZZTIME names one budget
# for all of them (a duration such as 10m, or a count such as 500000x). CI
# uses the counts: with a duration, go 1.26's fuzzing coordinator can
# report "context deadline exceeded" as a failure when the deadline races a
# worker's last execution (golang/go#75804, fixed in go 1.27), a failure
# with no failing input behind it; a count has no deadline to race.
#
# New interesting inputs are minimized for at most FUZZMINIMIZETIME, a count
# (default 100x) rather than go's default of 60s, which would eat the whole
# budget of a target: every input a target finds in its first seconds would
# be minimized for up to a minute while nothing else runs. The corpus go
# builds lives in GOCACHE; failing inputs are written to the package's
# testdata/fuzz/<FuzzName>/ as usual. Every target runs even after one fails;
# the exit status is non-zero if any failed.
#
# Usage: .ci/fuzz.sh [TARGET_REGEXP]   (env: GO, FUZZTIME, FUZZMINIMIZETIME)
set -uo pipefail

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-100x}
only=${1:-.}

cd "$(dirname "$0")/.."

# package, target, default budget (about 30s each at the rates measured
# on the 2-core CI machine).
targets=(
	"./parser FuzzParse 150000x"
	"./planner FuzzPlan 150000x"
	"./internal/buildcontext FuzzDockerignore 30000x"
	"./snapshot FuzzApply 90000x"
	"./snapshot FuzzDecompress 65000x"
	"./exporter FuzzLoad 50000x"
)

# summarize NAME LOG STATUS: the last progress line of go's output, e.g.
# "fuzz: elapsed: 1m0s, execs: 504640 (0/sec), new interesting: 481 (total: 528)",
# as one line with the average rate over the whole run.
summarize() {
	awk -v name="$1" -v status="$3" '
		/^fuzz: elapsed: .*execs: / { last = $0 }
		END {
			if (last == "") { printf "%s: no fuzzing progress reported%s\n", name, status; exit }
			split(last, f, /[ ,]+/)
			# f: fuzz: elapsed: DUR execs: N (R/sec) new interesting: K (total: T)
			dur = f[3]; execs = f[5]; newi = f[9]
			secs = 0; rest = dur
			if (match(rest, /[0-9.]+h/)) { secs += substr(rest, RSTART, RLENGTH - 1) * 3600 }
			if (match(rest, /[0-9.]+m[^s]/) || match(rest, /[0-9.]+m$/)) { secs += substr(rest, RSTART, RLENGTH - 1) * 60 }
			if (match(rest, /[0-9.]+s/)) { secs += substr(rest, RSTART, RLENGTH - 1) }
			rate = secs > 0 ? int(execs / secs) : execs
			printf "%s: %d execs in %s (%d/s), %d new interesting%s\n", name, execs, dur, rate, newi, status
		}' "$2"
}

summary=()
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
	read -r pkg name budget <<<"$t"
	[[ $name =~ $only ]] || continue
	budget=${FUZZTIME:-$budget}
	echo "== $name ($pkg) for $budget, -fuzzminimizetime $FUZZMINIMIZETIME"
	status=""
	if ! "$GO" test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$budget" -fuzzminimizetime "$FUZZMINIMIZETIME" 2>&1 | tee "$log"; then
		status=" — FAILED"
		failed=1
	fi
	line=$(summarize "$name" "$log" "$status")
	echo "$line"
	summary+=("$line")
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
