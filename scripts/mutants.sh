#!/usr/bin/env bash
# Mutation testing of the check files and the policy door with cargo-mutants: each file is mutated on its own, and only
# the library's unit tests and the integration test binaries that reach the file are built and run
# for each mutant. A file fails when fewer than MUTANTS_MIN percent (default 90) of its viable
# mutants are caught: caught / (caught + missed). Mutants that do not build (unviable) and those
# that make the tests hang (timeout) are counted apart and do not enter the figure.
#
# Usage: scripts/mutants.sh [FILE...]        (no FILE: every file below, in this order)
#   MUTANTS_MIN   the lowest acceptable percentage (default 90)
#   MUTANTS_OUT   where the reports go, one mutants.out per file, and the build directory the runs
#                 share (default: smtpf-milter-mutants in the temporary directory; kept, so a
#                 second run builds only what changed)
# Needs cargo-mutants (cargo install --locked cargo-mutants). On 2 cores the five check files take
# about two and a half hours, most of it building each mutant.
set -euo pipefail
cd "$(dirname "$0")/.."
min=${MUTANTS_MIN:-90}
out=${MUTANTS_OUT:-${TMPDIR:-/tmp}/smtpf-milter-mutants}

# Each file and the integration test binaries that exercise it.
files=(src/checks/mx.rs src/checks/dnslist.rs src/checks/dupmsg.rs src/checks/greylist.rs src/checks/listing.rs src/policy_door.rs src/postfix_policy.rs)
declare -A reach=(
    [src/checks/mx.rs]="mx greylist verbose metrics"
    [src/checks/dnslist.rs]="dnslist listing uribl verbose"
    [src/checks/dupmsg.rs]="greylist redis hostile verbose metrics"
    [src/checks/greylist.rs]="greylist greylist_spf greylist_whitelist redis hostile mx verbose metrics"
    [src/checks/listing.rs]="listing mx greylist verbose metrics"
    [src/policy_door.rs]="policy_door bench_tool"
    [src/postfix_policy.rs]="policy_door"
)
[ $# -eq 0 ] || files=("$@")

command -v cargo-mutants >/dev/null || { echo "cargo-mutants is not installed: cargo install --locked cargo-mutants"; exit 1; }
# The mutated builds get a build directory of their own: the checkout's target/ never holds a
# mutated binary.
export CARGO_TARGET_DIR="$out/target"
mkdir -p "$out"

lines() { if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }
summary=()
failed=0
for file in "${files[@]}"; do
    [ -n "${reach[$file]:-}" ] || { echo "$file: no test binaries are listed for it in $0"; exit 1; }
    args=(--cargo-arg=--lib)
    for t in ${reach[$file]}; do args+=("--cargo-arg=--test=$t"); done
    report="$out/$(basename "$file" .rs)"
    echo "== cargo mutants --file $file (lib + ${reach[$file]})"
    rc=0
    cargo mutants --file "$file" --profile mutants --timeout 90 --output "$report" "${args[@]}" || rc=$?
    # 0: every mutant caught; 2: some missed; 3: some timed out. Anything else: the run failed.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
        summary+=("$file: cargo mutants exited $rc (see $report/mutants.out/debug.log)")
        failed=1
        continue
    fi
    caught=$(lines "$report/mutants.out/caught.txt")
    missed=$(lines "$report/mutants.out/missed.txt")
    unviable=$(lines "$report/mutants.out/unviable.txt")
    timeout=$(lines "$report/mutants.out/timeout.txt")
    viable=$((caught + missed))
    pct=$(awk -v c="$caught" -v v="$viable" 'BEGIN { printf "%.1f", v ? 100 * c / v : 100 }')
    line="$file: $caught caught, $missed missed ($pct %), $unviable unviable, $timeout timeouts"
    if [ $((caught * 100)) -lt $((min * viable)) ]; then
        line="$line: below $min %"
        failed=1
    fi
    summary+=("$line")
    [ "$missed" -eq 0 ] || sed 's/^/    missed: /' "$report/mutants.out/missed.txt"
done
echo "== mutation testing (viable mutants caught, at least $min % per file)"
printf '%s\n' "${summary[@]}"
exit "$failed"
