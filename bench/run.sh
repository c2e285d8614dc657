#!/usr/bin/env bash
# bench/run.sh: the reproducible performance measurement of issue 7 (docs/performance.md).
#
# Usage:   bench/run.sh > summary.md          (progress on stderr, markdown summary on stdout)
# Quick:   RUNS=1 MESSAGES=2000 IDLE=200 RECORDS=100000 bench/run.sh
#
# Needs: cargo (builds the release binaries with `cargo build --release --bins`, honouring
# CARGO_TARGET_DIR), unbound (test-zone DNS from bench/unbound.conf on 127.0.0.1:5399), and a
# Linux /proc for the memory figures. sqlite3 is optional (record counts in the summary).
#
# What it does, everything in a temporary directory, the bench and the milter on this machine:
#   setup  starts unbound; writes an access map of ~1000 entries that match none of the bench's
#          clients, and an "all checks" config: access-map, dns-bl/dns-wl/uri-bl (test zones that
#          list nobody), mail-require-mx and SPF against the test zones, greylisting with the
#          default key (ptr,mail,rcpt) and grey-temp-fail-period = 1, dupmsg (tag) on, the SQLite
#          store in the temp dir.
#   a.     RUNS × (raw ceiling, raw ceiling replying at DATA and EOM only, then the milter),
#          alternating; CONNECTIONS connections, NEW_TUPLES never-seen tuples, MESSAGES
#          transactions each. The first raw ceiling replies at the steps the milter with every
#          check on replies at (connect, helo, mail, rcpt, data, eom): the same conversation,
#          the figure of target (1). The second is the cheapest conversation a milter can have
#          (a greylisting-only milter's), for information. The milter runs on a fresh store, the
#          first run with --warm-up so the known tuples pass. Medians, and milter / raw ceiling.
#   b.     HALF_RUNS runs paced (--rate) at half the milter's median: p50/p99/p99.9 per event;
#          then the same paced runs against a null milter (`milter-bench serve`, a process of its
#          own answering "continue" at the same steps): the latency floor of this machine and
#          load generator, which no milter in a separate process gets under.
#   c.     a freshly started milter, then IDLE idle MTA connections (CONNECT + HELO each): RSS.
#   d.     RECORDS greylist records prefilled into a fresh state file (milter-bench prefill), the
#          milter started on it, warm-up, RUNS runs: median, and the ratio to (a).
#   e.     the markdown summary (machine, date, every figure with its single runs).
#
# Environment (defaults in brackets): RUNS [5], MESSAGES [20000], CONNECTIONS [32],
# NEW_TUPLES [0.2], HALF_RUNS [RUNS], IDLE [2000], RECORDS [1000000], PER_CONNECTION [5],
# DNS_PORT [5399] (unbound's loopback port, when 5399 is taken), METRICS_LISTEN (e.g.
# 127.0.0.1:9894: the milter serves /metrics during the runs), KEEP=1 (keep the temp dir:
# configs, the JSON of every run, the milter and unbound logs).
#
# Exit status: 0 when every step ran without errors; non-zero when a run reported errors or
# something could not start. Timings never fail the script. Everything it starts (unbound, the
# milter) is stopped on exit, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
MESSAGES=${MESSAGES:-20000}
CONNECTIONS=${CONNECTIONS:-32}
NEW_TUPLES=${NEW_TUPLES:-0.2}
HALF_RUNS=${HALF_RUNS:-$RUNS}
IDLE=${IDLE:-2000}
RECORDS=${RECORDS:-1000000}
PER_CONNECTION=${PER_CONNECTION:-5}
KEEP=${KEEP:-}
DNS_PORT=${DNS_PORT:-5399}

say() { echo "run.sh: $*" >&2; }
die() {
    say "$*"
    exit 1
}

command -v unbound >/dev/null || die "unbound is not installed (needed for the test-zone DNS; e.g. apt-get install unbound)"
command -v cargo >/dev/null || die "cargo is not installed"

target=${CARGO_TARGET_DIR:-target}
say "building release binaries (cargo build --release --bins)"
cargo build --release --bins >&2
bin=$target/release
[ -x "$bin/smtpf-milter" ] && [ -x "$bin/milter-bench" ] || die "release binaries not found in $bin"

# Idle connections need one descriptor each, on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d "${TMPDIR:-/tmp}/smtpf-bench.XXXXXX")
unbound_pid=
milter_pid=
null_pid=
cleanup() {
    local rc=$?
    if [ -n "$milter_pid" ]; then kill "$milter_pid" 2>/dev/null || true; wait "$milter_pid" 2>/dev/null || true; fi
    if [ -n "$null_pid" ]; then kill "$null_pid" 2>/dev/null || true; wait "$null_pid" 2>/dev/null || true; fi
    if [ -n "$unbound_pid" ]; then kill "$unbound_pid" 2>/dev/null || true; wait "$unbound_pid" 2>/dev/null || true; fi
    if [ -n "$KEEP" ]; then say "kept $work"; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- DNS ---------------------------------------------------------------------------------
. bench/unbound.sh
start_unbound "$work" "$DNS_PORT"

# ---- access map and config ---------------------------------------------------------------
# ~1000 entries of every common kind; none matches the bench's clients (198.51.100.0/24,
# 203.0.113.0/24, 198.18.0.0/15, *.example.org), senders (*.example.com, *.example.org) or
# recipients (rcpt0..2@example.net).
{
    echo "# generated by bench/run.sh: nothing here matches the bench's traffic"
    for i in $(seq 0 299); do echo "Connect:10.$((i / 250)).$((i % 250)).1	REJECT"; done
    for i in $(seq 0 99); do echo "Connect:172.16.$i.0/24	REJECT"; done
    for i in $(seq 0 149); do echo "Connect:bad$i.spam.example.net	REJECT"; done
    for i in $(seq 0 99); do echo "Helo:helo$i.spam.example.net	REJECT"; done
    for i in $(seq 0 149); do echo "From:spammer$i@spam$i.example.net	REJECT"; done
    for i in $(seq 0 49); do echo "From:spam-domain$i.example.net	REJECT"; done
    for i in $(seq 0 99); do echo "To:abuse$i@example.net	OK"; done
    for i in $(seq 0 29); do echo "Connect:192.0.2.$((i + 100)):From:list$i@example.net	OK"; done
    for i in $(seq 0 19); do echo "Grey-Connect:192.0.2.$((i + 200))	60"; done
} >"$work/access.cf"

write_config() { # FILE CACHE_PATH
    cat >"$1" <<EOF
# "all checks" config generated by bench/run.sh
milter-socket = "unix:$work/m.sock"
cache-path = "$2"
dns-servers = ["127.0.0.1:$DNS_PORT"]
access-map = "$work/access.cf"
dns-bl = ["dnsbl.bench.test"]
dns-wl = ["dnswl.bench.test"]
uri-bl = ["uribl.bench.test"]
mail-require-mx = true
# greylisting with the default key (ptr,mail,rcpt); a 1 s period so warmed-up tuples pass
grey-temp-fail-period = 1
# duplicate-message detection (the default: on, tag)
dupmsg-ttl = 90000
${METRICS_LISTEN:+metrics-listen = \"$METRICS_LISTEN\"}
EOF
    "$bin/smtpf-milter" --config "$1" check-config >&2 || die "config $1 is not valid"
}
write_config "$work/all.toml" "$work/cache.sq3"
write_config "$work/all-prefilled.toml" "$work/cache-prefilled.sq3"

start_milter() { # CONFIG LOG
    rm -f "$work/m.sock"
    "$bin/smtpf-milter" --config "$1" 2>>"$2" &
    milter_pid=$!
    # Opening a large state file checks it first: allow a minute.
    for _ in $(seq 1 600); do
        [ -S "$work/m.sock" ] && return 0
        kill -0 "$milter_pid" 2>/dev/null || { tail -20 "$2" >&2; die "the milter did not start"; }
        sleep 0.1
    done
    die "the milter did not open $work/m.sock within 60 s"
}
stop_milter() {
    [ -n "$milter_pid" ] || return 0
    kill "$milter_pid" 2>/dev/null || true
    wait "$milter_pid" 2>/dev/null || true
    milter_pid=
}

# ---- helpers -----------------------------------------------------------------------------
# milter-bench's JSON is flat apart from "latency" and "refused_at"; grep is enough (no jq).
jnum() { # FILE KEY: a top-level scalar
    grep -o "\"$2\":[^,}]*" "$1" | head -1 | cut -d: -f2 | tr -d '"'
}
jlat() { # FILE EVENT FIELD: a latency figure, empty when the event got no reply
    { grep -o "\"$2\":{[^}]*}" "$1" || true; } | { grep -o "\"$3\":[0-9.]*" || true; } | head -1 | cut -d: -f2
}
median() { # numbers on stdin
    sort -g | awk '{a[NR] = $1} END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
greater() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }
half_p99s() { # RUN_PREFIX EVENT: EVENT's p99 in each of the HALF_RUNS paced runs
    for r in $(seq 1 "$HALF_RUNS"); do jlat "$work/$1.$r.json" "$2" p99_ms; done
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
join() { paste -sd, - | sed 's/,/, /g'; }

# Runs milter-bench with --json into FILE; fails the script when the run had errors.
bench() { # FILE ARGS...
    local out=$1
    shift
    local rc=0
    "$bin/milter-bench" --json "$@" >"$out" || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$out" >&2
        die "milter-bench $* failed (exit $rc; errors: $(jnum "$out" errors), first: $(jnum "$out" first_error))"
    fi
}

load=(--connections "$CONNECTIONS" --messages "$MESSAGES" --new-tuples "$NEW_TUPLES" --per-connection "$PER_CONNECTION")
sock="unix:$work/m.sock"
events="connect helo mail rcpt data header eoh body eom transaction"

# ---- a. throughput: raw ceiling and all checks, alternating ------------------------------
start_milter "$work/all.toml" "$work/milter-a.log"
for r in $(seq 1 "$RUNS"); do
    bench "$work/raw.$r.json" --raw-ceiling "${load[@]}"
    say "a. raw ceiling $r/$RUNS: $(jnum "$work/raw.$r.json" messages_per_s) messages/s"
    bench "$work/rawmin.$r.json" --raw-ceiling --raw-replies data "${load[@]}"
    say "a. raw ceiling (DATA, EOM) $r/$RUNS: $(jnum "$work/rawmin.$r.json" messages_per_s) messages/s"
    warm=()
    [ "$r" -eq 1 ] && warm=(--warm-up)
    bench "$work/milter.$r.json" --socket "$sock" "${warm[@]}" "${load[@]}"
    say "a. milter      $r/$RUNS: $(jnum "$work/milter.$r.json" messages_per_s) messages/s"
done
raw_runs=$(for r in $(seq 1 "$RUNS"); do jnum "$work/raw.$r.json" messages_per_s; done)
milter_runs=$(for r in $(seq 1 "$RUNS"); do jnum "$work/milter.$r.json" messages_per_s; done)
raw_median=$(echo "$raw_runs" | median)
rawmin_runs=$(for r in $(seq 1 "$RUNS"); do jnum "$work/rawmin.$r.json" messages_per_s; done)
rawmin_median=$(echo "$rawmin_runs" | median)
milter_median=$(echo "$milter_runs" | median)
ratio_a=$(ratio "$milter_median" "$raw_median")
ratio_min=$(ratio "$milter_median" "$rawmin_median")

# ---- b. latency at half load -------------------------------------------------------------
half_rate=$(awk -v m="$milter_median" 'BEGIN { printf "%.1f", m / 2 }')
for r in $(seq 1 "$HALF_RUNS"); do
    bench "$work/half.$r.json" --socket "$sock" --rate "$half_rate" "${load[@]}"
    say "b. half load   $r/$HALF_RUNS: $(jnum "$work/half.$r.json" messages_per_s) messages/s (paced at $half_rate)"
done
grey_listed_a=$(grep -c '#387' "$work/milter-a.log" || true)
# The floor: a null milter in a process of its own, at the same rate, replying at the same steps.
null_replies=$("$bin/smtpf-milter" --config "$work/all.toml" check-config | sed -n 's/^replies: \([^ ]*\).*/\1/p')
[ -n "$null_replies" ] || die "check-config printed no replies line"
"$bin/milter-bench" serve --socket "unix:$work/null.sock" --replies "$null_replies" 2>"$work/null.log" &
null_pid=$!
for _ in $(seq 1 100); do [ -S "$work/null.sock" ] && break; sleep 0.05; done
[ -S "$work/null.sock" ] || die "the null milter did not start: $(cat "$work/null.log")"
for r in $(seq 1 "$HALF_RUNS"); do
    bench "$work/nullhalf.$r.json" --socket "unix:$work/null.sock" --rate "$half_rate" "${load[@]}"
    say "b. null milter $r/$HALF_RUNS: $(jnum "$work/nullhalf.$r.json" messages_per_s) messages/s (paced at $half_rate)"
done
kill "$null_pid" 2>/dev/null || true
wait "$null_pid" 2>/dev/null || true
null_pid=
store_counts() { # FILE: "grey: N, dupmsg: M" records in a state file, when sqlite3 is there
    if command -v sqlite3 >/dev/null; then
        sqlite3 "$1" "SELECT 'grey: ' || (SELECT count(*) FROM mcc WHERE k LIKE 'grey:%') || ', dupmsg: ' || (SELECT count(*) FROM mcc WHERE k LIKE 'dupmsg:%')" 2>/dev/null || echo "unreadable"
    else
        echo "sqlite3 not installed"
    fi
}
stop_milter
records_a=$(store_counts "$work/cache.sq3")

# ---- c. idle connections -----------------------------------------------------------------
start_milter "$work/all.toml" "$work/milter-c.log"
sleep 1
idle_base=$(awk '/^VmRSS:/ { print $2 }' "/proc/$milter_pid/status" 2>/dev/null || echo unknown)
bench "$work/idle.json" --socket "$sock" --idle "$IDLE"
idle_rss=$(jnum "$work/idle.json" milter_rss_kib)
idle_peak=$(jnum "$work/idle.json" milter_peak_rss_kib)
idle_held=$(jnum "$work/idle.json" idle_connections)
idle_per=$(awk -v a="$idle_rss" -v b="$idle_base" -v n="$idle_held" 'BEGIN { if (a + 0 > 0 && b + 0 > 0 && n > 0) printf "%.1f", (a - b) / n; else print "unknown" }')
say "c. idle: $idle_held connections, milter RSS $idle_rss KiB (before: $idle_base KiB)"
stop_milter

# ---- d. a store with RECORDS greylist records ----------------------------------------------
prefill_out=$("$bin/milter-bench" prefill --cache-path "$work/cache-prefilled.sq3" --records "$RECORDS") \
    || die "prefill failed: $prefill_out"
say "d. $prefill_out"
start_milter "$work/all-prefilled.toml" "$work/milter-d.log"
for r in $(seq 1 "$RUNS"); do
    warm=()
    [ "$r" -eq 1 ] && warm=(--warm-up)
    bench "$work/full.$r.json" --socket "$sock" "${warm[@]}" "${load[@]}"
    say "d. milter, $RECORDS records $r/$RUNS: $(jnum "$work/full.$r.json" messages_per_s) messages/s"
done
full_runs=$(for r in $(seq 1 "$RUNS"); do jnum "$work/full.$r.json" messages_per_s; done)
full_median=$(echo "$full_runs" | median)
ratio_d=$(ratio "$full_median" "$milter_median")
full_peak=$(jnum "$work/full.$RUNS.json" milter_peak_rss_kib)
stop_milter
records_d=$(store_counts "$work/cache-prefilled.sq3")

# ---- e. summary --------------------------------------------------------------------------
warm_count=$(grep -o '"warm_up":{"transactions":[0-9]*' "$work/milter.1.json" | grep -o '[0-9]*$' || echo 0)
new_per_run=$(awk -v m="$MESSAGES" -v s="$NEW_TUPLES" 'BEGIN { printf "%d", m * s }')
cpu=$(grep -m1 -E '^(model name|Model|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || rev="$rev (with local changes)"

echo "### Measurement $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "Machine: \`nproc\` = $(nproc), CPU \"${cpu:-unknown}\", kernel $(uname -r). Commit $rev, release build."
echo "Load: $CONNECTIONS connections, $MESSAGES messages per run, new tuples $NEW_TUPLES ($new_per_run per run),"
echo "$PER_CONNECTION known-tuple transactions per connection; bench and milter on the same machine."
echo "Medians of $RUNS runs; latencies in ms. Produced by \`bench/run.sh\` (RUNS=$RUNS MESSAGES=$MESSAGES)."
echo
echo "| figure | median | single runs |"
echo "|---|---|---|"
echo "| raw ceiling (replies at connect, helo, mail, rcpt, data, eom), messages/s | $raw_median | $(echo "$raw_runs" | join) |"
echo "| raw ceiling (replies at data, eom only), messages/s | $rawmin_median | $(echo "$rawmin_runs" | join) |"
echo "| all checks, messages/s | $milter_median | $(echo "$milter_runs" | join) |"
echo "| **(1) all checks / raw ceiling (same replies)** | **$ratio_a** | |"
echo "| all checks / raw ceiling (data, eom only) | $ratio_min | |"
echo "| all checks, $RECORDS greylist records, messages/s | $full_median | $(echo "$full_runs" | join) |"
echo "| **(4) $RECORDS records / empty store** | **$ratio_d** | |"
echo
echo "**(2) Latency at half load** (paced at $half_rate messages/s, $HALF_RUNS run(s); achieved:"
echo "$(for r in $(seq 1 "$HALF_RUNS"); do jnum "$work/half.$r.json" messages_per_s; done | join) messages/s). Medians over the runs:"
echo
echo "| event | p50 | p99 | p99.9 | p99 of single runs |"
echo "|---|---|---|---|---|"
worst_p99=0
worst_ev=
for ev in $events; do
    p99s=$(half_p99s half "$ev")
    [ -n "$(echo "$p99s" | tr -d '[:space:]')" ] || continue
    p50=$(for r in $(seq 1 "$HALF_RUNS"); do jlat "$work/half.$r.json" "$ev" p50_ms; done | median)
    p999=$(for r in $(seq 1 "$HALF_RUNS"); do jlat "$work/half.$r.json" "$ev" p999_ms; done | median)
    p99=$(echo "$p99s" | median)
    echo "| $ev | $p50 | $p99 | $p999 | $(echo "$p99s" | join) |"
    if [ "$ev" != transaction ] && greater "$p99" "$worst_p99"; then
        worst_p99=$p99
        worst_ev=$ev
    fi
done
echo
echo "Worst per-event p99 at half load: **$worst_p99 ms** ($worst_ev)."
null_worst=0
null_ev=
null_row=
for ev in $events; do
    [ "$ev" = transaction ] && continue
    p99=$(half_p99s nullhalf "$ev" | median)
    [ -n "$p99" ] || continue
    null_row="$null_row${null_row:+, }$ev $p99"
    if greater "$p99" "$null_worst"; then
        null_worst=$p99
        null_ev=$ev
    fi
done
echo "The floor, a null milter (\`milter-bench serve\`, its own process, same steps) at the same rate:"
echo "worst per-event p99 **$null_worst ms** ($null_ev); medians: $null_row."
echo
echo "**(3) Idle connections**: $idle_held idle MTA connections (CONNECT and HELO sent): milter RSS"
echo "**$idle_rss KiB** (peak $idle_peak KiB), $idle_base KiB before they opened: $idle_per KiB per connection."
echo
echo "Checks: greylisted (#387) in the (a)+(b) milter log: $grey_listed_a, new tuples sent in (a)+(b):"
echo "$(((RUNS + HALF_RUNS) * new_per_run)), plus the warm-up's $warm_count. Store records after (a)+(b): $records_a; after (d): $records_d."
echo "Milter peak RSS after (d): $full_peak KiB. No run had errors."
