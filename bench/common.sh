# bench/common.sh: sourced by the bench scripts (bench/run.sh, bench/delay.sh), after they
# define say and die and set work (their temporary directory) and KEEP.
#
# start_unbound WORK PORT starts unbound on 127.0.0.1:PORT with the test zones of
# bench/unbound.conf (a copy in WORK, its log in WORK/unbound.log), sets unbound_pid, and
# returns once it answers on that port.
# bench_cleanup, the EXIT trap: stops what the script started (milter_pid, null_pid,
# unbound_pid, each when set), removes work unless KEEP is set, and exits with the script's status.

stop_pid() { # PID (empty: nothing to stop)
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

bench_cleanup() {
    local rc=$?
    stop_pid "${milter_pid:-}"
    stop_pid "${null_pid:-}"
    stop_pid "${unbound_pid:-}"
    if [ -n "$KEEP" ]; then say "kept $work"; else rm -rf "$work"; fi
    exit "$rc"
}

start_unbound() {
    local work=$1 port=$2 port_hex
    # 127.0.0.1:5399 in /proc/net/udp is "0100007F:1517".
    port_hex=$(printf '%04X' "$port")
    if grep -q "0100007F:$port_hex " /proc/net/udp 2>/dev/null; then
        die "127.0.0.1:$port (UDP) is already in use; stop whatever listens there, or set DNS_PORT"
    fi
    # A copy, so that DNS_PORT can move it off 5399.
    sed "s/^\( *port:\).*/\1 $port/" bench/unbound.conf >"$work/unbound.conf"
    unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
    unbound_pid=$!
    for _ in $(seq 1 100); do
        grep -q "0100007F:$port_hex " /proc/net/udp 2>/dev/null && return 0
        kill -0 "$unbound_pid" 2>/dev/null || { cat "$work/unbound.log" >&2; die "unbound did not start"; }
        sleep 0.1
    done
    die "unbound does not listen on 127.0.0.1:$port"
}
