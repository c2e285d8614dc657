#!/usr/bin/env bash
# Throw-away Postfix instance on 127.0.0.1 for end-to-end tests (sourced, not run).
#
#   postfix_start DIR PORT MILTER   # MILTER in Postfix syntax, e.g. unix:/path or inet:127.0.0.1:8894
#   postfix_stop DIR
#
# The instance has its own config, queue and log file (DIR/maillog), delivers mail for
# example.net to DIR/Maildir and discards everything else. Debian's default instance is never
# touched. Needs root (Postfix's master runs as root and drops to user postfix).
#
# Optional settings, from the environment:
#   POSTFIX_ADDRS="127.0.0.1 192.0.2.1"   addresses smtpd listens on (default 127.0.0.1)
#   POSTFIX_CHROOT=y                       smtpd runs chrooted in the queue directory DIR/queue,
#                                          as in Debian's default master.cf; a unix: milter path
#                                          is then relative to DIR/queue
#   POSTFIX_DISCARD=y                      mail for example.net is discarded, not delivered
#   POSTFIX_POLICY=unix:PATH|inet:H:P      check_policy_service after reject_unauth_destination,
#                                          as docs/policy-service.md wires it

postfix_start() {
    local dir=$1 port=$2 milter=$3
    local addrs=${POSTFIX_ADDRS:-127.0.0.1} chroot=${POSTFIX_CHROOT:-n} addr
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/Maildir"
    chmod 755 "$dir" "$dir/queue"
    chown postfix "$dir/data"
    chown -R postfix "$dir/Maildir"
    cp /etc/postfix/master.cf.proto "$dir/etc/master.cf" 2>/dev/null || cp /usr/share/postfix/master.cf.dist "$dir/etc/master.cf"
    # Our own listener instead of port 25; a postlog service since there may be no syslog.
    sed -i 's/^smtp      inet/#smtp      inet/' "$dir/etc/master.cf"
    for addr in $addrs; do
        echo "$addr:$port inet n - $chroot - - smtpd" >> "$dir/etc/master.cf"
    done
    cat > "$dir/etc/main.cf" <<MAIN
compatibility_level = 3.6
config_directory = $dir/etc
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
inet_interfaces = ${addrs// /, }
inet_protocols = ipv4
myhostname = mx.example.net
mydestination =
mynetworks = 127.0.0.0/8
smtpd_authorized_xclient_hosts = 127.0.0.0/8
virtual_mailbox_domains = example.net
virtual_mailbox_base = $dir/Maildir
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
default_transport = discard
relay_transport = discard
smtpd_milters = $milter
milter_default_action = tempfail
milter_protocol = 6
smtputf8_enable = no
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination${POSTFIX_POLICY:+, check_policy_service $POSTFIX_POLICY}
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C
MAIN
    [ "${POSTFIX_DISCARD:-n}" = y ] && echo "virtual_transport = discard" >> "$dir/etc/main.cf"
    postfix -c "$dir/etc" check >/dev/null 2>&1 || true
    postfix -c "$dir/etc" start >/dev/null 2>&1
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/${addrs%% *}/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "postfix did not start; log:" >&2
    cat "$dir/maillog" >&2 2>/dev/null
    return 1
}

postfix_stop() {
    local pid _
    pid=$(tr -d ' ' < "$1/queue/pid/master.pid" 2>/dev/null) || pid=
    postfix -c "$1/etc" stop >/dev/null 2>&1 || true
    [ -n "$pid" ] || return 0
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill "$pid" 2>/dev/null
    return 0
}
