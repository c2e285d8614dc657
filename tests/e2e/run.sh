#!/usr/bin/env bash
# End-to-end suite: smtpf-milter behind a real Postfix and a real Sendmail.
#
# Usage: tests/e2e/run.sh [path/to/smtpf-milter]     (root; default target/release, then debug)
#
# Needs Debian's postfix, swaks, unbound, m4, libwrap0, iproute2 (and python3 to keep Sendmail's
# log; postgrey for its comparison figure, skipped without it). Sendmail is fetched with apt-get download and unpacked privately (or taken from
# $SENDMAIL_DEBS), never installed. Everything runs in a private network namespace (only a
# loopback interface; every 192.0.2.x is a local address there, so test clients can have
# non-loopback addresses) and a private mount namespace: nothing can reach or be reached off
# the machine, and the real /etc is never changed. Every daemon is stopped by PID at the end.
#
# Components: unbound on 127.0.0.1:5353 with the test zones (dns-instance.sh); smtpf-milter on a
# unix socket inside the Postfix queue directory, the path wiring.md documents for a chrooted
# smtpd; Postfix on 127.0.0.1:2525 with smtpd chrooted (postfix-instance.sh); a second Postfix
# on 127.0.0.1:2527, chrooted, without a milter, asking the policy door (check_policy_service
# unix:smtpf-milter/policy.sock); Sendmail on 127.0.0.1:2526 (sendmail-instance.sh). Each scenario
# runs through both MTAs (the policy-door ones through the second Postfix) and prints PASS or
# FAIL; on failure the logs are printed. At the end the Postfix throughput figures are printed:
# no milter, a null milter (milter-bench serve, next to the binary under test), smtpf-milter, our
# policy door (all checks; greylisting only) and postgrey on 127.0.0.1:10023 when installed
# (recorded, never asserted; E2E_NO_FIGURES=1 skips them). KEEP_E2E=1 keeps the work directory.
# Exit status 1 when any scenario failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-}
if [ -z "$bin" ]; then
    for b in "$here/../../target/release/smtpf-milter" "$here/../../target/debug/smtpf-milter"; do
        [ -x "$b" ] && { bin=$b; break; }
    done
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: end-to-end tests need root (Postfix's master and Sendmail run as root)"
    exit 0
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "usage: $0 path/to/smtpf-milter (not found: ${bin:-target/*/smtpf-milter})" >&2; exit 2; }
bin=$(realpath "$bin")
for tool in postfix swaks unbound m4 smtp-source unshare ip dpkg; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

if [ -z "${SMTPF_E2E_NS:-}" ]; then
    # Sendmail's packages are fetched here: inside the namespace there is no network.
    if ! ls "${SENDMAIL_DEBS:-/nonexistent}"/sendmail-bin_*.deb >/dev/null 2>&1; then
        . "$here/sendmail-instance.sh"
        SENDMAIL_DEBS=$(mktemp -d /run/smtpf-e2e-debs.XXXXXX)
        export SMTPF_E2E_DEBS_TMP=$SENDMAIL_DEBS
        sendmail_fetch "$SENDMAIL_DEBS" || { echo "cannot download the sendmail packages" >&2; rm -rf "$SENDMAIL_DEBS"; exit 1; }
    fi
    export SENDMAIL_DEBS
    exec unshare --net --mount --propagation private env SMTPF_E2E_NS=1 bash "$0" "$bin"
fi

# ---- inside the namespaces
ip link set lo up
ip route add local 192.0.2.0/24 dev lo     # any 192.0.2.x is local: addresses for test clients
# Listeners for the load tests (Postfix checks inet_interfaces against interface addresses).
ip addr add 192.0.2.1/32 dev lo
ip addr add 192.0.2.2/32 dev lo
started=$SECONDS

. "$here/dns-instance.sh"
. "$here/postfix-instance.sh"
. "$here/sendmail-instance.sh"

# A directory with no world-writable component: Sendmail refuses a milter socket below /tmp.
work=$(mktemp -d /run/smtpf-e2e.XXXXXX)
chmod 755 "$work"
# Nothing may use the machine's resolver: an address with nothing listening answers at once.
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "$work/resolv.conf"
mount --bind "$work/resolv.conf" /etc/resolv.conf

pf=$work/pf          # Postfix instance
pf2=$work/pf2        # Postfix instance asking the policy door (no milter)
sm=$work/sm          # Sendmail instance
sockdir=$pf/queue/smtpf-milter
sock=$sockdir/milter.sock
mlog=$work/milter.log
milter_pid=
GREY=2               # greylisting period of the scenarios, seconds
METRICS_PORT=19894      # the milter's /metrics (loopback)

cleanup() {
    postfix_stop "$pf"
    postfix_stop "$pf2"
    sendmail_stop "$sm"
    milter_stop
    dns_stop "$work/dns"
    [ -n "${SMTPF_E2E_DEBS_TMP:-}" ] && rm -rf "$SMTPF_E2E_DEBS_TMP"
    [ -n "${KEEP_E2E:-}" ] && { echo "kept $work"; return; }
    rm -rf "$work"
}
trap cleanup EXIT

passes=() failures=()
pass() { echo "PASS $1"; passes+=("$1"); }
fail() {
    echo "FAIL $1"
    failures+=("$1")
    shift
    [ $# -gt 0 ] && printf '%s\n' "$@" | sed 's/^/    /'
    return 0
}

milter_start() {    # CONFIG
    "$bin" --config "$1" 2>> "$mlog" &
    milter_pid=$!
    local _
    for _ in $(seq 1 100); do [ -S "$sock" ] && return 0; sleep 0.05; done
    echo "milter did not start:" >&2
    tail -20 "$mlog" >&2
    return 1
}
milter_stop() {
    [ -n "$milter_pid" ] || return 0
    kill "$milter_pid" 2>/dev/null
    wait "$milter_pid" 2>/dev/null      # returns at once for a process that is not our child
    local _
    for _ in $(seq 1 50); do kill -0 "$milter_pid" 2>/dev/null || break; sleep 0.1; done
    milter_pid=
}

# send MTA CLIENT-IP SWAKS-ARGS...: Postfix poses as the client with XCLIENT, Sendmail gets a
# real connection from that address.
send() {
    local mta=$1 ip=$2
    shift 2
    case $mta in
        postfix) swaks --server 127.0.0.1:2525 --xclient-addr "$ip" --xclient-name '[UNAVAILABLE]' \
                     --helo client.example.org --timeout 60 "$@" 2>&1 ;;
        policy) swaks --server 127.0.0.1:2527 --xclient-addr "$ip" --xclient-name '[UNAVAILABLE]' \
                     --helo client.example.org --timeout 60 "$@" 2>&1 ;;
        sendmail) swaks --server 127.0.0.1:2526 --local-interface "$ip" \
                     --helo client.example.org --timeout 60 "$@" 2>&1 ;;
    esac
}
# The queue id from swaks's transcript of an accepted message.
queue_id() {
    sed -n -e 's/^<-  250 2\.0\.0 Ok: queued as \([0-9A-Za-z]*\).*/\1/p' \
           -e 's/^<-  250 2\.0\.0 \([0-9A-Za-z]*\) Message accepted for delivery.*/\1/p' <<< "$2" | head -1
}
# The stored copy of an accepted message: Postfix's Maildir file, Sendmail's queue file.
stored() {
    local mta=$1 qid=$2 _ f
    for _ in $(seq 1 100); do
        case $mta in
            postfix) f=$(grep -l "^Message-Id: <$3>" "$pf"/Maildir/inbox/new/* 2>/dev/null | head -1) ;;
            sendmail) f=$sm/queue/qf$qid; [ -f "$f" ] || f= ;;
        esac
        [ -n "$f" ] && { echo "$f"; return 0; }
        sleep 0.1
    done
    return 1
}
scrape() {      # the milter's /metrics text (HTTP/1.0: the server closes after the answer)
    exec 9<>"/dev/tcp/127.0.0.1/$METRICS_PORT" || return 1
    printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&9
    cat <&9
    exec 9>&-
}
metric() {      # TEXT SAMPLE: one sample's value, 0 when absent
    awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }' <<< "$1"
}
wait_log() {    # REGEX: wait up to 5 s for the milter log to match
    local _
    for _ in $(seq 1 50); do grep -Eq "$1" "$mlog" && return 0; sleep 0.1; done
    return 1
}
delivered() {   # MTA: messages stored so far
    case $1 in
        postfix) find "$pf/Maildir/inbox/new" -type f 2>/dev/null | wc -l ;;
        sendmail) find "$sm/queue" -name 'qf*' 2>/dev/null | wc -l ;;
    esac
}
wait_delivered() {  # MTA COUNT [SECONDS]
    local i
    for i in $(seq 1 $((${3:-60} * 10))); do
        [ "$(delivered "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

# ---- set-up
dns_start "$work/dns" 5353 || exit 1

# The socket directory as docs/wiring.md section 3.2 documents it, inside the chroot (Postfix's
# queue directory): group postfix, mode 0750; the socket 0666 (instead of adding user postfix
# to the daemon's group).
mkdir -p "$sockdir"
chmod 755 "$pf" "$pf/queue"
chgrp postfix "$sockdir"
chmod 750 "$sockdir"
# The policy door's socket, the same way inside the second instance's chroot.
policydir=$pf2/queue/smtpf-milter
mkdir -p "$policydir"
chmod 755 "$pf2" "$pf2/queue"
chgrp postfix "$policydir"
chmod 750 "$policydir"

cat > "$work/milter.toml" <<CONF
milter-socket = "unix:$sock"
milter-socket-mode = "0666"
cache-path = "$work/cache.sq3"
verbose = "info"
dns-servers = ["127.0.0.1:5353"]
dns-timeout = 2
dns-bl = ["bl.test"]
mail-require-mx = true
grey-key = "mail,rcpt"
grey-temp-fail-period = $GREY
dupmsg-policy = "reject"
shutdown-timeout = 30
metrics-listen = "127.0.0.1:$METRICS_PORT"
policy-socket = "unix:$policydir/policy.sock"
CONF
"$bin" --config "$work/milter.toml" check-config > /dev/null || { echo "config refused" >&2; exit 1; }
milter_start "$work/milter.toml" || exit 1

POSTFIX_CHROOT=y POSTFIX_ADDRS="127.0.0.1 192.0.2.1" \
    postfix_start "$pf" 2525 "unix:/smtpf-milter/milter.sock" || exit 1

# The policy door's instance: no milter, check_policy_service relative to its chroot.
POSTFIX_CHROOT=y POSTFIX_POLICY="unix:smtpf-milter/policy.sock" \
    postfix_start "$pf2" 2527 "" || exit 1

sendmail_unpack "$work/sendmail-pkg" || { echo "cannot get the sendmail packages" >&2; exit 1; }
export SENDMAIL_ROOT=$work/sendmail-pkg/root
SENDMAIL_ADDRS="127.0.0.1 192.0.2.2" sendmail_start "$sm" 2526 "$sock" || exit 1
echo "== set-up done in $((SECONDS - started)) s (milter $("$bin" --version 2>/dev/null | head -1))"

mtas="postfix sendmail"

# ---- chroot wiring: Postfix's smtpd is chrooted and reaches the socket by its path inside the chroot.
if postconf -c "$pf/etc" -M '127.0.0.1:2525/inet' | awk '{exit !($5 == "y")}' \
    && [ "$(postconf -c "$pf/etc" -h smtpd_milters)" = "unix:/smtpf-milter/milter.sock" ] \
    && [ "$(stat -c '%a %G' "$sockdir")" = "750 postfix" ]; then
    out=$(send postfix 192.0.2.70 --from chroot@example.org --to bob@example.net --quit-after RCPT)
    if grep -Eq '#637 start \[192\.0\.2\.70\]' "$mlog" && ! grep -q 'connect to Milter service' "$pf/maillog"; then
        pass "postfix: chrooted smtpd reaches unix:/smtpf-milter/milter.sock (dir 0750 group postfix, socket 0666)"
    else
        fail "postfix chroot socket" "$out" "$(grep -i milter "$pf/maillog" | tail -5)"
    fi
else
    fail "postfix chroot socket" "the instance is not set up as documented"
fi

# ---- greylisting: first sight refused at DATA; the retry after the period passes, with our header.
metrics_before=$(scrape)
declare -A first
for mta in $mtas; do
    first[$mta]=$(send $mta 192.0.2.60 --from "alice-$mta@example.org" --to bob@example.net \
        --header "Message-Id: <clean-$mta@example.org>" --body "a clean message through $mta")
done
for mta in $mtas; do
    out=${first[$mta]}
    if grep -q '^<\*\* 451 4\.7\.0 try again later #552 ' <<< "$out" \
        && wait_log "#387 grey listed \{grey:alice-$mta@example.org,bob@example.net\} for [0-9]+ seconds"; then
        pass "$mta: first sight greylisted at DATA (451 4.7.0 try again later #552, #387 logged)"
    else
        fail "$mta greylisting first sight" "$out"
    fi
done
sleep $((GREY + 1))
for mta in $mtas; do
    out=$(send $mta 192.0.2.60 --from "alice-$mta@example.org" --to bob@example.net \
        --header "Message-Id: <clean-$mta@example.org>" --body "a clean message through $mta")
    qid=$(queue_id $mta "$out")
    if [ -z "$qid" ]; then
        fail "$mta clean retry" "$out"
        continue
    fi
    f=$(stored $mta "$qid" "clean-$mta@example.org")
    if [ -n "$f" ] && grep -Eq '^(H\?\?)?X-Grey-Report: age=' "$f" \
        && wait_log "#2005 queue-id $qid tid=" && wait_log "#721 end i=192\.0\.2\.60 .*f=\"[^\"]*\" h=\"client\.example\.org\" m=1/1"; then
        pass "$mta: retry after the period accepted (queue id $qid), stored with X-Grey-Report, #2005/#721 logged"
    else
        fail "$mta clean retry" "$out" "stored copy: ${f:-none}" "$(cat "$f" 2>/dev/null | head -20)"
    fi
done

# ---- metrics: Prometheus sees the numbers move while real MTAs talk to the milter.
metrics_after=$(scrape)
d_replies=$(( $(metric "$metrics_after" 'smtpf_milter_replies_total{number="552",code="451"}') - $(metric "$metrics_before" 'smtpf_milter_replies_total{number="552",code="451"}') ))
d_first=$(( $(metric "$metrics_after" 'smtpf_milter_greylist_verdicts_total{outcome="first_sight"}') - $(metric "$metrics_before" 'smtpf_milter_greylist_verdicts_total{outcome="first_sight"}') ))
d_pass=$(( $(metric "$metrics_after" 'smtpf_milter_greylist_verdicts_total{outcome="pass"}') - $(metric "$metrics_before" 'smtpf_milter_greylist_verdicts_total{outcome="pass"}') ))
d_conn=$(( $(metric "$metrics_after" 'smtpf_milter_connections_total') - $(metric "$metrics_before" 'smtpf_milter_connections_total') ))
if grep -q "#2067 metrics-listen=127.0.0.1:$METRICS_PORT ready" "$mlog" && [ "$d_replies" -eq 2 ] && [ "$d_first" -eq 2 ] \
    && [ "$d_pass" -eq 2 ] && [ "$d_conn" -ge 4 ]; then
    pass "metrics: /metrics counted the sessions ($d_conn milter connections: Postfix reconnects after XCLIENT), first sights (2 x 451 #552) and passes (2)"
else
    fail "metrics" "deltas: replies 451 #552 $d_replies, first sights $d_first, passes $d_pass, connections $d_conn" \
        "$(grep -E '^smtpf_milter_(replies|greylist_verdicts|connections)_total' <<< "$metrics_after" | grep -v ' 0$')"
fi

# ---- the policy door: Postfix's check_policy_service (second instance, chrooted, no milter).
# First sight refused at RCPT with our reply; the retry after the period is accepted and stored
# with the report header Postfix prepended.
out=$(send policy 192.0.2.80 --from policy@example.org --to bob@example.net \
    --header "Message-Id: <policy-1@example.org>" --body "through the policy door")
if grep -A1 '^ -> RCPT TO:<bob@example.net>' <<< "$out" | grep -q '^<\*\* 451 4\.7\.0 <bob@example\.net>: Recipient address rejected: try again later #552 ' \
    && wait_log "#387 grey listed \{grey:policy@example.org,bob@example.net\} for [0-9]+ seconds" \
    && wait_log "#2071 policy instance [^ ]+ tid="; then
    pass "policy door: first sight refused at RCPT (451 4.7.0 <bob@example.net>: Recipient address rejected: try again later #552, #387 and #2071 logged)"
else
    fail "policy door first sight" "$out" "$(grep -i 'policy\|warning' "$pf2/maillog" | tail -5)"
fi
sleep $((GREY + 1))
out=$(send policy 192.0.2.80 --from policy@example.org --to bob@example.net \
    --header "Message-Id: <policy-1@example.org>" --body "through the policy door")
qid=$(queue_id postfix "$out")
f=
for _ in $(seq 1 100); do
    f=$(grep -l "^Message-Id: <policy-1@example.org>" "$pf2"/Maildir/inbox/new/* 2>/dev/null | head -1)
    [ -n "$f" ] && break
    sleep 0.1
done
if [ -n "$qid" ] && [ -n "$f" ] && grep -q '^X-Grey-Report: age=' "$f" \
    && wait_log "#2069 grey passed \{grey:policy@example.org,bob@example.net\} after"; then
    pass "policy door: retry after the period accepted (queue id $qid), stored with X-Grey-Report (PREPEND), #2069 logged"
else
    fail "policy door retry" "$out" "stored copy: ${f:-none}"
fi
# The same tuple through both doors: greylisted at one, passed at the other after the period.
out1=$(send postfix 192.0.2.81 --from cross-1@example.org --to bob@example.net --body "milter first")
out2=$(send policy 192.0.2.82 --from cross-2@example.org --to bob@example.net --body "policy first")
sleep $((GREY + 1))
out3=$(send policy 192.0.2.81 --from cross-1@example.org --to bob@example.net --body "then policy")
out4=$(send postfix 192.0.2.82 --from cross-2@example.org --to bob@example.net --body "then milter")
if grep -q '^<\*\* 451 4\.7\.0 try again later #552 ' <<< "$out1" && grep -q '^<\*\* 451 4\.7\.0 <bob@example\.net>: Recipient address rejected: try again later #552 ' <<< "$out2" \
    && [ -n "$(queue_id postfix "$out3")" ] && [ -n "$(queue_id postfix "$out4")" ] \
    && wait_log "#2069 grey passed \{grey:cross-1@example.org,bob@example.net\}" \
    && wait_log "#2069 grey passed \{grey:cross-2@example.org,bob@example.net\}"; then
    pass "policy door: a tuple greylisted through the milter passes through the policy door after the period, and the other way round"
else
    fail "policy door across doors" "$out1" "$out2" "$out3" "$out4"
fi

# ---- duplicate: the same message again (body, Message-ID, first recipient) -> dupmsg-policy reject.
for mta in $mtas; do
    out=$(send $mta 192.0.2.60 --from "alice-$mta@example.org" --to bob@example.net \
        --header "Message-Id: <clean-$mta@example.org>" --body "a clean message through $mta")
    if grep -q '^<\*\* 550 5\.3\.4 duplicate message rejected #340 ' <<< "$out" \
        && wait_log "#337 .*duplicate key=.*previous session="; then
        pass "$mta: duplicate message refused as dupmsg-policy = reject says (550 5.3.4 #340, #337 logged)"
    else
        fail "$mta duplicate" "$out"
    fi
done

# ---- forged log lines: a folded Message-ID whose continuation looks like one of our lines stays
# inside the #720 line that quotes it, escaped (the tuple passed above, so the message gets there).
for mta in $mtas; do
    out=$(send $mta 192.0.2.60 --from "alice-$mta@example.org" --to bob@example.net \
        --header "Message-Id: <fold-$mta@example.org>"$'\n\t'"smtpf-milter[1]: FAKE-$mta #721 end i=6.6.6.6" \
        --body "a folded header through $mta")
    qid=$(queue_id $mta "$out")
    if [ -n "$qid" ] && wait_log "FAKE-$mta" \
        && ! grep "FAKE-$mta" "$mlog" | grep -vq "#720 message .*m=<fold-$mta@example.org>\\\\[rn]"; then
        pass "$mta: a folded Message-ID cannot forge a log line (its continuation is escaped inside #720)"
    else
        fail "$mta forged log line" "$out" "$(grep -n "FAKE-$mta" "$mlog")"
    fi
done

# ---- dns-bl: 192.0.2.66 is listed in bl.test (unbound answers 127.0.0.2).
# At CONNECT both MTAs answer with a text of their own (Postfix "554 ... not accepting
# connections", Sendmail "554 ... not accepting messages"); our "#525" reply is in the log. With
# smtp-delay-checks = true (switched on here by a reload) the refusal comes at RCPT and the client
# gets our text.
declare -A greeting=([postfix]="554 mx.example.net ESMTP not accepting connections"
                     [sendmail]="554 mx2.example.net ESMTP not accepting messages")
for mta in $mtas; do
    n0=$(grep -c 'i=192\.0\.2\.66 .* l="550 5\.7\.0 \[192\.0\.2\.66\]:[0-9]* black listed by bl\.test\. #525 ' "$mlog")
    out=$(send $mta 192.0.2.66 --from "bl-$mta@example.org" --to bob@example.net)
    if [ $mta = postfix ]; then    # and a real connection from that address, without XCLIENT
        out+=$'\n'$(swaks --server 127.0.0.1:2525 --local-interface 192.0.2.66 --helo client.example.org \
            --from bl-postfix@example.org --to bob@example.net 2>&1)
        n0=$((n0 + 1))
    fi
    wait_log "#523 dns-bl found 192\.0\.2\.66 bl\.test\."
    sleep 0.2
    n1=$(grep -c 'i=192\.0\.2\.66 .* l="550 5\.7\.0 \[192\.0\.2\.66\]:[0-9]* black listed by bl\.test\. #525 ' "$mlog")
    if [ "$(grep -c "^<\*\* ${greeting[$mta]}" <<< "$out")" -eq "$([ $mta = postfix ] && echo 2 || echo 1)" ] \
        && [ "$n1" -gt "$n0" ]; then
        pass "$mta: dns-bl listed client refused at connect (client sees \"${greeting[$mta]}\", #721 logs our 550 5.7.0 ... #525)"
    else
        fail "$mta dns-bl at connect" "$out" "$(grep '192\.0\.2\.66' "$mlog" | tail -5)"
    fi
done
reloads0=$(grep -c '#2006 reload' "$mlog")
cp "$work/milter.toml" "$work/milter.toml.orig"
echo 'smtp-delay-checks = true' >> "$work/milter.toml"
kill -HUP "$milter_pid"
for _ in $(seq 1 50); do [ "$(grep -c '#2006 reload' "$mlog")" -gt "$reloads0" ] && break; sleep 0.1; done
for mta in $mtas; do
    out=$(send $mta 192.0.2.66 --from "bl-$mta@example.org" --to bob@example.net)
    if grep -Eq '^<\*\* 550 5\.7\.0 .*\[192\.0\.2\.66\]:[0-9]+ black listed by bl\.test\. #525 ' <<< "$out" \
        && grep -A1 '^ -> RCPT TO' <<< "$out" | grep -q '#525'; then
        pass "$mta: dns-bl listed client refused at RCPT with smtp-delay-checks (550 5.7.0 ... black listed by bl.test. #525)"
    else
        fail "$mta dns-bl with smtp-delay-checks" "$out"
    fi
done
cp "$work/milter.toml.orig" "$work/milter.toml"
kill -HUP "$milter_pid"

# ---- MX verification at MAIL: NXDOMAIN -> 553 #434, null MX -> 553 #439.
for mta in $mtas; do
    out=$(send $mta 192.0.2.61 --from "alice@nosuch.test" --to bob@example.net)
    if grep -Eq '^<\*\* 553 5\.1\.8 (<alice@nosuch\.test>\.\.\. )?sender <alice@nosuch\.test> from nosuch\.test has no MX record #434 ' <<< "$out"; then
        pass "$mta: sender from an NXDOMAIN domain refused (553 5.1.8 ... #434)"
    else
        fail "$mta NXDOMAIN sender" "$out"
    fi
    out=$(send $mta 192.0.2.61 --from "alice@nullmx.test" --to bob@example.net)
    if grep -Eq '^<\*\* 553 5\.1\.8 (<alice@nullmx\.test>\.\.\. )?sender <alice@nullmx\.test> from nullmx\.test MX invalid #439 ' <<< "$out"; then
        pass "$mta: sender from a null-MX domain refused (553 5.1.8 ... #439)"
    else
        fail "$mta null-MX sender" "$out"
    fi
done

# ---- SIGHUP under load: smtp-source from 192.0.2.1 (Postfix) / 192.0.2.2 (Sendmail), several
# reloads during the run; every message sent must be stored.
LOAD=400
hup_load() {    # MTA SERVER-ADDR:PORT CLIENT-IP
    local mta=$1 server=$2 ip=$3 before after reloads0 reloads i
    # Pass the load's greylisting tuple first (key mail,rcpt).
    send $mta "$ip" --from "load-$mta@example.org" --to bob@example.net >/dev/null
    sleep $((GREY + 1))
    before=$(delivered $mta)
    out=$(send $mta "$ip" --from "load-$mta@example.org" --to bob@example.net --body "pre-pass")
    if [ -z "$(queue_id $mta "$out")" ]; then
        fail "$mta SIGHUP under load" "the load's greylisting pre-pass was refused" "$out"
        return
    fi
    wait_delivered $mta $((before + 1)) 30
    before=$(delivered $mta)
    reloads0=$(grep -c '#2006 reload' "$mlog")
    smtp-source -s 10 -m $LOAD -f "load-$mta@example.org" -t bob@example.net "$server" \
        > "$work/load-$mta.out" 2>&1 &
    local src=$!
    for i in 1 2 3; do
        sleep 0.3
        kill -HUP "$milter_pid"
    done
    wait $src
    local rc=$?
    wait_delivered $mta $((before + LOAD)) 120
    after=$(delivered $mta)
    reloads=$(( $(grep -c '#2006 reload' "$mlog") - reloads0 ))
    if [ $rc -eq 0 ] && [ $((after - before)) -eq $LOAD ] && [ "$reloads" -ge 1 ] && kill -0 "$milter_pid"; then
        pass "$mta: SIGHUP x3 during smtp-source ($LOAD messages, 10 sessions): $((after - before)) stored, $reloads reloads logged"
    else
        fail "$mta SIGHUP under load" "smtp-source exit $rc, stored $((after - before)) of $LOAD, reloads $reloads" \
            "$(tail -5 "$work/load-$mta.out")"
    fi
}
hup_load postfix 192.0.2.1:2525 192.0.2.1
hup_load sendmail 192.0.2.2:2526 192.0.2.2

# ---- SIGTERM: SMTP sessions in the middle of DATA finish; then the socket is gone and the MTA's
# default action applies.
# slow_session HOST PORT XCLIENT-ADDR|- FROM MSGID OUT: a hand-driven SMTP session that stops for
# 3 s in the middle of the message.
slow_session() {
    local host=$1 port=$2 xaddr=$3 from=$4 mid=$5 out=$6 line
    exec 3<>"/dev/tcp/$host/$port" || return 1
    reply() { while IFS= read -r -t 30 line <&3; do line=${line%$'\r'}; echo "<- $line" >> "$out"; [[ $line =~ ^[0-9]{3}- ]] || return 0; done; return 1; }
    say() { printf '%s\r\n' "$1" >&3; echo "-> $1" >> "$out"; }
    reply
    say "EHLO client.example.org"; reply
    if [ "$xaddr" != - ]; then say "XCLIENT ADDR=$xaddr NAME=[UNAVAILABLE]"; reply; say "EHLO client.example.org"; reply; fi
    say "MAIL FROM:<$from>"; reply
    say "RCPT TO:<bob@example.net>"; reply
    say "DATA"; reply
    say "Message-Id: <$mid>"; say "Subject: in flight"; say ""; say "first half"
    touch "$out.mid"
    sleep 3
    say "second half"; say "."; reply
    say "QUIT"; reply
    exec 3>&-
}
rm -f "$work"/slow-*
# The Postfix session uses the tuple passed above (key mail,rcpt); Sendmail's comes from 127.0.0.1.
slow_session 127.0.0.1 2525 192.0.2.60 alice-postfix@example.org "slow-postfix@example.org" "$work/slow-postfix" &
slow_pf=$!
slow_session 127.0.0.1 2526 - alice-sendmail@example.org "slow-sendmail@example.org" "$work/slow-sendmail" &
slow_sm=$!
for _ in $(seq 1 100); do [ -f "$work/slow-postfix.mid" ] && [ -f "$work/slow-sendmail.mid" ] && break; sleep 0.05; done
kill -TERM "$milter_pid"
term_pid=$milter_pid
sleep 0.5
alive_during=no
kill -0 "$term_pid" 2>/dev/null && alive_during=yes
wait $slow_pf $slow_sm
wait "$term_pid"
term_rc=$?
milter_pid=
for mta in $mtas; do
    if [ $alive_during = yes ] && grep -q '^<- 250 ' <(sed -n '/^-> \.$/,$p' "$work/slow-$mta") \
        && grep -q '#722 signal 15, stopping sessions' "$mlog" && [ $term_rc -eq 0 ]; then
        pass "$mta: SIGTERM mid-DATA: the open session finished (250 after the dot), the milter exited 0 after it"
    else
        fail "$mta SIGTERM in flight" "milter alive after SIGTERM: $alive_during, exit $term_rc" "$(cat "$work/slow-$mta")"
    fi
done

# ---- milter down: the MTA's default action (Postfix milter_default_action = tempfail, Sendmail F=T).
rm -f "$sock"
out=$(send postfix 192.0.2.60 --from alice-postfix@example.org --to bob@example.net)
if grep -q '^<\*\* 451 4\.7\.1 Service unavailable - try again later' <<< "$out" \
    && grep -q '^ -> MAIL FROM' <<< "$out" && grep -q 'connect to Milter service unix:/smtpf-milter/milter.sock: No such file or directory' "$pf/maillog"; then
    pass "postfix: socket missing -> milter_default_action = tempfail: 451 4.7.1 at MAIL FROM"
else
    fail "postfix milter down" "$out"
fi
out=$(send sendmail 192.0.2.60 --from alice-sendmail@example.org --to bob@example.net)
if grep -q '^<\*\* 451 4\.3\.2 Please try again later' <<< "$out" && grep -q '^ -> MAIL FROM' <<< "$out"; then
    pass "sendmail: socket missing -> F=T: 451 4.3.2 at MAIL FROM"
else
    fail "sendmail milter down" "$out"
fi

grep -q '#2001 ' "$mlog" && fail "milter protocol errors logged" "$(grep '#2001 ' "$mlog" | head -5)"
echo "== scenarios done in $((SECONDS - started)) s"

if [ ${#failures[@]} -gt 0 ]; then
    echo "--- milter log (last 80 lines)"; tail -80 "$mlog"
    echo "--- postfix log (last 40 lines)"; tail -40 "$pf/maillog"
    echo "--- sendmail log (last 40 lines)"; tail -40 "$sm/maillog"
fi

# ---- figures (recorded, not asserted): smtp-source through Postfix, without and with the milter.
if [ -z "${E2E_NO_FIGURES:-}" ]; then
    sendmail_stop "$sm"
    postfix_stop "$pf"
    FIG_MSGS=${FIG_MSGS:-2000} FIG_SESS=${FIG_SESS:-20}
    queue_drained() {
        local _
        for _ in $(seq 1 600); do
            [ -z "$(find "$pf/queue/incoming" "$pf/queue/active" "$pf/queue/deferred" -type f 2>/dev/null | head -1)" ] && return 0
            sleep 0.1
        done
        return 1
    }
    milter_cpu_ticks() {    # user+system clock ticks of the running milter, empty without one
        [ -n "$milter_pid" ] && [ -r "/proc/$milter_pid/stat" ] || return 0
        sed 's/.*) //' "/proc/$milter_pid/stat" | awk '{print $12 + $13}'
    }
    figure_runs() {    # LABEL: 3 runs, prints the median msgs/s
        local label=$1 i rates=() t0 t1 refused0 cpu0 cpu1
        refused0=$(grep -cE 'milter-reject|NOQUEUE: reject' "$pf/maillog")
        cpu0=$(milter_cpu_ticks)
        for i in 1 2 3; do
            t0=$(date +%s.%N)
            smtp-source -s "$FIG_SESS" -m "$FIG_MSGS" -f load@example.org -t bob@example.net 192.0.2.1:2525 \
                > "$work/fig.out" 2>&1 || echo "    smtp-source failed: $(tail -2 "$work/fig.out")"
            t1=$(date +%s.%N)
            rates+=("$(awk "BEGIN{printf \"%.0f\", $FIG_MSGS/($t1-$t0)}")")
            # Let the queue drain so the next run does not compete with it.
            queue_drained || echo "    the queue did not drain"
        done
        local median cpu=""
        median=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n 2p)
        cpu1=$(milter_cpu_ticks)
        if [ -n "$cpu1" ]; then
            cpu="; server CPU $(awk "BEGIN{printf \"%.0f\", ($cpu1-$cpu0)*1e6/$(getconf CLK_TCK)/(3*$FIG_MSGS)}") us/msg"
        fi
        echo "FIGURE $label: median $median msgs/s (runs: ${rates[*]}; $FIG_MSGS messages, $FIG_SESS sessions;" \
            "refused: $(( $(grep -cE 'milter-reject|NOQUEUE: reject' "$pf/maillog") - refused0 ))$cpu)"
    }
    rm -rf "$pf"
    # Accepted mail is discarded (virtual_transport = discard): the figures are about smtpd and
    # the milter, not about writing Maildir files.
    POSTFIX_DISCARD=y POSTFIX_CHROOT=y POSTFIX_ADDRS="127.0.0.1 192.0.2.1" postfix_start "$pf" 2525 "" || exit 1
    figure_runs "postfix, no milter"
    postfix_stop "$pf"
    # All checks on (dns-bl, MX, SPF, greylisting with smtpf's default key, duplicates tagged),
    # DNS answered by unbound; the load's tuple passed greylisting before the runs.
    cat > "$work/figures.toml" <<CONF
milter-socket = "unix:$sock"
milter-socket-mode = "0666"
cache-path = "$work/cache.sq3"
dns-servers = ["127.0.0.1:5353"]
dns-bl = ["bl.test"]
mail-require-mx = true
grey-temp-fail-period = 1
CONF
    # The steps smtpf-milter answers at with that config, as check-config reports them.
    fig_replies=$("$bin" --config "$work/figures.toml" check-config | sed -n 's/^replies: \([^ ]*\).*/\1/p')
    [ -n "$fig_replies" ] || { echo "check-config printed no replies line"; exit 1; }
    # A null milter (milter-bench serve: "continue" everywhere, replies at those steps): what
    # Postfix pays for any milter at all, the ceiling for the next figure.
    nullbin=$(dirname "$bin")/milter-bench
    if [ -x "$nullbin" ]; then
        rm -rf "$pf"
        mkdir -p "$sockdir"; chmod 755 "$pf" "$pf/queue"; chgrp postfix "$sockdir"; chmod 750 "$sockdir"
        # In milter_pid, so that milter_stop (and the exit trap) stop it and the CPU figure is its.
        "$nullbin" serve --socket "unix:$sock" --socket-mode 0666 --replies "$fig_replies" 2>> "$mlog" &
        milter_pid=$!
        for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
        [ -S "$sock" ] || { echo "the null milter did not start:"; tail -5 "$mlog"; exit 1; }
        POSTFIX_DISCARD=y POSTFIX_CHROOT=y POSTFIX_ADDRS="127.0.0.1 192.0.2.1" \
            postfix_start "$pf" 2525 "unix:/smtpf-milter/milter.sock" || exit 1
        figure_runs "postfix + null milter"
        postfix_stop "$pf"
        milter_stop
    else
        echo "    no $nullbin: the null-milter figure is skipped"
    fi
    # A fresh Postfix (and daemon, when CONFIG is given) asking MILTER and/or POLICY-SERVICE;
    # the load's tuple passes greylisting once before the runs, so nothing is refused.
    checked_figure() {   # LABEL CONFIG MILTER POLICY-SERVICE
        rm -rf "$pf" "$work/cache.sq3"*
        mkdir -p "$sockdir"; chmod 755 "$pf" "$pf/queue"; chgrp postfix "$sockdir"; chmod 750 "$sockdir"
        if [ -n "$2" ]; then milter_start "$2" || exit 1; fi
        POSTFIX_POLICY=$4 POSTFIX_DISCARD=y POSTFIX_CHROOT=y POSTFIX_ADDRS="127.0.0.1 192.0.2.1" \
            postfix_start "$pf" 2525 "$3" || exit 1
        swaks --server 192.0.2.1:2525 --from load@example.org --to bob@example.net >/dev/null 2>&1
        sleep 2
        swaks --server 192.0.2.1:2525 --from load@example.org --to bob@example.net > "$work/prepass.out" 2>&1 \
            || echo "    pre-pass refused: $(grep '^<\*\*' "$work/prepass.out")"
        figure_runs "$1"
        postfix_stop "$pf"
        milter_stop
    }
    checked_figure "postfix + smtpf-milter" "$work/figures.toml" "unix:/smtpf-milter/milter.sock" ""
    # The policy door instead of the milter (check_policy_service, inet as postgrey is usually
    # wired): with the same checks, then with greylisting alone; then postgrey itself, when
    # installed (.ci/run installs it), with the same delay.
    { cat "$work/figures.toml"; echo 'policy-socket = "inet:10024@127.0.0.1"'; } > "$work/figures-policy.toml"
    checked_figure "postfix + smtpf-milter policy door, all checks" "$work/figures-policy.toml" "" inet:127.0.0.1:10024
    cat > "$work/figures-grey.toml" <<CONF
milter-socket = "unix:$sock"
milter-socket-mode = "0666"
policy-socket = "inet:10024@127.0.0.1"
cache-path = "$work/cache.sq3"
dns-servers = ["127.0.0.1:5353"]
mail-require-mx = false
dupmsg-ttl = 0
grey-key = "ip,mail,rcpt"
grey-ipv4-prefix = 24
grey-temp-fail-period = 1
CONF
    checked_figure "postfix + smtpf-milter policy door, greylisting only (postgrey's key)" "$work/figures-grey.toml" "" inet:127.0.0.1:10024
    if command -v postgrey >/dev/null && id postgrey >/dev/null 2>&1; then
        mkdir -p "$work/postgrey"
        chown postgrey "$work/postgrey"
        postgrey_up=no
        if postgrey --inet=127.0.0.1:10023 --dbdir="$work/postgrey" --delay=1 --user=postgrey --group=nogroup \
            --pidfile="$work/postgrey.pid" --daemonize 2>> "$work/postgrey.log"; then
            for _ in $(seq 1 100); do
                (exec 3<>/dev/tcp/127.0.0.1/10023) 2>/dev/null && { postgrey_up=yes; break; }
                sleep 0.1
            done
        fi
        # In milter_pid, so that its CPU is reported and milter_stop (or the exit trap) stops it.
        milter_pid=$(cat "$work/postgrey.pid" 2>/dev/null)
        if [ $postgrey_up = yes ] && [ -n "$milter_pid" ]; then
            checked_figure "postfix + postgrey $(dpkg-query -W -f '${Version}' postgrey 2>/dev/null)" "" "" inet:127.0.0.1:10023
        else
            echo "    postgrey did not start: its figure is skipped ($(tail -2 "$work/postgrey.log" 2>/dev/null))"
            milter_stop
        fi
    else
        echo "    postgrey is not installed: its figure is skipped"
    fi
fi

echo "== done in $((SECONDS - started)) s: ${#passes[@]} passed, ${#failures[@]} failed"
[ ${#failures[@]} -eq 0 ]
