#!/usr/bin/env bash
# Throw-away Sendmail for end-to-end tests (sourced, not run), from Debian's packages unpacked
# into a private directory: Debian's sendmail and postfix packages conflict, so sendmail is never
# installed.
#
#   sendmail_fetch DIR          # apt-get download sendmail-bin sendmail-base sendmail-cf into DIR
#                               # (apt-get update and again if that fails)
#   sendmail_unpack DEST        # dpkg -x the .debs of $SENDMAIL_DEBS (default: fetch them into
#                               # DEST/debs) into DEST/root
#   sendmail_start DIR PORT SOCKET   # SOCKET: the milter's unix socket path (Sendmail local:PATH)
#   sendmail_stop DIR
#
# sendmail_start builds DIR/sendmail.cf with m4 from a small .mc (INPUT_MAIL_FILTER with F=T) and
# runs `sendmail -bD` as root in a mount namespace of its own, where /etc/hosts, /etc/resolv.conf
# and /dev/log are private: it resolves names from DIR/hosts only, and its syslog(3) lines land in
# DIR/maillog (when python3 is there to catch them). Mail is only queued (DeliveryMode=queueonly):
# every accepted message is a DIR/queue/qf* file. Mail for example.net is accepted (relay
# domain). Listens on SENDMAIL_ADDRS (default 127.0.0.1) at PORT. Needs SENDMAIL_ROOT (the
# DEST/root of sendmail_unpack), m4 and libwrap0.

sendmail_fetch() {
    local dir=$1 pkgs="sendmail-bin sendmail-base sendmail-cf"
    mkdir -p "$dir"
    chmod 777 "$dir"   # apt-get download runs as user _apt
    (cd "$dir" && { apt-get download -q $pkgs >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get download -q $pkgs >/dev/null; }; })
}

sendmail_unpack() {
    local dest=$1 deb debs=${SENDMAIL_DEBS:-$1/debs}
    mkdir -p "$dest/root"
    ls "$debs"/sendmail-bin_*.deb >/dev/null 2>&1 || sendmail_fetch "$debs" || return 1
    for deb in "$debs"/sendmail-bin_*.deb "$debs"/sendmail-base_*.deb "$debs"/sendmail-cf_*.deb; do
        dpkg -x "$deb" "$dest/root" || return 1
    done
    [ -x "$dest/root/usr/libexec/sendmail/sendmail" ] || { echo "no sendmail binary in the packages" >&2; return 1; }
}

sendmail_start() {
    local dir=$1 port=$2 sock=$3 addr
    local root=${SENDMAIL_ROOT:?SENDMAIL_ROOT: the unpacked sendmail packages}
    local cfdir=$root/usr/share/sendmail/cf
    mkdir -p "$dir/queue"
    chmod 700 "$dir/queue"
    : > "$dir/maillog"
    : > "$dir/aliases"
    : > "$dir/statistics"
    echo "example.net" > "$dir/relay-domains"
    printf 'hosts\tfiles\naliases\tfiles\n' > "$dir/service.switch"
    printf '127.0.0.1\tlocalhost %s mx2.example.net\n' "$(hostname)" > "$dir/hosts"
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "$dir/resolv.conf"
    {
        echo 'divert(0)dnl'
        echo "include(\`$cfdir/m4/cf.m4')dnl"
        echo "VERSIONID(\`smtpf-milter end-to-end test')dnl"
        echo "OSTYPE(\`linux')dnl"
        echo "define(\`confDOMAIN_NAME', \`mx2.example.net')dnl"
        echo "define(\`QUEUE_DIR', \`$dir/queue')dnl"
        echo "define(\`STATUS_FILE', \`$dir/statistics')dnl"
        echo "define(\`ALIAS_FILE', \`$dir/aliases')dnl"
        echo "define(\`confCW_FILE', \`-o $dir/local-host-names')dnl"
        echo "define(\`confCR_FILE', \`-o $dir/relay-domains')dnl"
        echo "define(\`confCT_FILE', \`-o $dir/trusted-users')dnl"
        echo "define(\`confPID_FILE', \`$dir/sendmail.pid')dnl"
        echo "define(\`confSERVICE_SWITCH_FILE', \`$dir/service.switch')dnl"
        echo "define(\`confHOSTS_FILE', \`$dir/hosts')dnl"
        echo "define(\`confDONT_PROBE_INTERFACES', \`True')dnl"
        echo "define(\`confTO_IDENT', \`0s')dnl"
        echo "define(\`confDELIVERY_MODE', \`queueonly')dnl"
        # 2 cores under load: never refuse or queue because of the load average.
        echo "define(\`confREFUSE_LA', \`1000')dnl"
        echo "define(\`confQUEUE_LA', \`1000')dnl"
        echo "define(\`confDELAY_LA', \`0')dnl"
        echo "define(\`confLOG_LEVEL', \`9')dnl"
        echo "define(\`confMILTER_LOG_LEVEL', \`9')dnl"
        echo "define(\`confPRIVACY_FLAGS', \`goaway')dnl"
        echo "FEATURE(\`no_default_msa')dnl"
        echo "FEATURE(\`nocanonify')dnl"
        echo "FEATURE(\`accept_unresolvable_domains')dnl"
        for addr in ${SENDMAIL_ADDRS:-127.0.0.1}; do
            echo "DAEMON_OPTIONS(\`Family=inet, Name=MTA-$addr, Addr=$addr, Port=$port, Listen=1024')dnl"
        done
        echo "INPUT_MAIL_FILTER(\`smtpf-milter', \`S=local:$sock, F=T, T=C:10s;S:30s;R:30s;E:5m')dnl"
        echo "MAILER(\`local')dnl"
        echo "MAILER(\`smtp')dnl"
    } > "$dir/sendmail.mc"
    m4 "$dir/sendmail.mc" > "$dir/sendmail.cf" 2> "$dir/m4.err" || { cat "$dir/m4.err" >&2; return 1; }

    # Runs inside the mount namespace: private /etc/hosts, /etc/resolv.conf and /dev/log, then
    # becomes the sendmail daemon (same PID).
    cat > "$dir/ns.sh" <<NS
set -e
mount --bind "$dir/hosts" /etc/hosts
mount --bind "$dir/resolv.conf" /etc/resolv.conf
if command -v python3 >/dev/null; then
    python3 -c '
import os, socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
with open(out, "ab", 0) as f:
    while True:
        f.write(s.recv(65536).rstrip(b"\\0\\n") + b"\\n")
' "$dir/log.sock" "$dir/maillog" &
    echo \$! > "$dir/syslog.pid"
    for _ in \$(seq 1 100); do [ -S "$dir/log.sock" ] && break; sleep 0.05; done
    if [ -e /dev/log ]; then
        mount --bind "$dir/log.sock" /dev/log
    else
        # No /dev/log to cover: a private /dev with the few devices sendmail uses.
        mkdir -p "$dir/dev"
        for n in null zero full random urandom tty; do
            [ -e /dev/\$n ] || continue
            : > "$dir/dev/\$n"
            mount --bind /dev/\$n "$dir/dev/\$n"
        done
        ln -sfn /proc/self/fd "$dir/dev/fd"
        ln -sfn "$dir/log.sock" "$dir/dev/log"
        mount --rbind "$dir/dev" /dev
    fi
fi
exec "$root/usr/libexec/sendmail/sendmail" -bD -C "$dir/sendmail.cf" -O LogLevel=9
NS
    unshare -m --propagation private bash "$dir/ns.sh" > "$dir/sendmail.out" 2>&1 &
    echo $! > "$dir/pid"
    local _
    addr=${SENDMAIL_ADDRS:-127.0.0.1}
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/${addr%% *}/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "sendmail did not start:" >&2
    cat "$dir/sendmail.out" "$dir/maillog" >&2 2>/dev/null
    return 1
}

sendmail_stop() {
    local pid _
    pid=$(cat "$1/pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    pid=$(cat "$1/syslog.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
    rm -f "$1/pid" "$1/syslog.pid"
    return 0
}
