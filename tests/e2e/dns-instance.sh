#!/usr/bin/env bash
# Throw-away unbound on 127.0.0.1 serving fixed test zones (sourced, not run).
#
#   dns_start DIR PORT    # the milter then uses dns-servers = ["127.0.0.1:PORT"]
#   dns_stop DIR
#
# Everything not in the zones below is refused: unbound never recurses to the Internet.
#
#   bl.test                a DNS block list: 192.0.2.66 (and the RFC 5782 test point 127.0.0.2)
#                          are listed with 127.0.0.2
#   example.org            a good sender domain: MX mx.example.org, an address outside every
#                          reserved range (nothing ever connects to it)
#   nullmx.test            a null MX (RFC 7505): MX 0 .
#   *.test, other          NXDOMAIN (e.g. nosuch.test)
#   2.0.192.in-addr.arpa   NXDOMAIN for the test clients' PTR lookups

dns_start() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    cat > "$dir/unbound.conf" <<CONF
server:
    interface: 127.0.0.1
    port: $port
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "$dir"
    pidfile: ""
    use-syslog: no
    logfile: "$dir/unbound.log"
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    local-zone: "." refuse
    local-zone: "test." static
    local-zone: "example.org." static
    local-zone: "example.net." static
    local-zone: "2.0.192.in-addr.arpa." static
    # Every zone has an SOA, as real zones do: negative answers carry it, so resolvers (ours
    # included) may cache them (RFC 2308); without it every lookup would go to the server.
    local-data: "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300"
    local-data: "example.org. 3600 IN SOA ns.example.org. hostmaster.example.org. 1 3600 600 86400 300"
    local-data: "example.net. 3600 IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 86400 300"
    local-data: "2.0.192.in-addr.arpa. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300"
    local-data: "66.2.0.192.bl.test. A 127.0.0.2"
    local-data: "2.0.0.127.bl.test. A 127.0.0.2"
    local-data: "example.org. MX 10 mx.example.org."
    local-data: "mx.example.org. A 1.2.3.4"
    local-data: "example.net. MX 10 mx.example.net."
    local-data: "mx.example.net. A 1.2.3.5"
    local-data: "nullmx.test. MX 0 ."
remote-control:
    control-enable: no
CONF
    unbound -d -c "$dir/unbound.conf" > "$dir/unbound.out" 2>&1 &
    echo $! > "$dir/pid"
    local _
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "unbound did not start:" >&2
    cat "$dir/unbound.out" "$dir/unbound.log" >&2 2>/dev/null
    return 1
}

dns_stop() {
    local pid
    pid=$(cat "$1/pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -f "$1/pid"
    return 0
}
