#!/usr/bin/env bash
# End-to-end smoke test: a real Postfix talks to smtpf-milter over a unix socket.
# Usage: tests/e2e/postfix-smoke.sh [path/to/smtpf-milter]   (as root, with postfix and swaks)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../target/debug/smtpf-milter}
. "$here/postfix-instance.sh"

work=$(mktemp -d /var/tmp/smtpf-e2e.XXXXXX)
chmod 755 "$work"
milter_pid=
cleanup() {
    postfix_stop "$work/pf"
    [ -n "$milter_pid" ] && kill "$milter_pid" 2>/dev/null && wait "$milter_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; echo "--- milter log"; cat "$work/milter.log"; echo "--- postfix log"; cat "$work/pf/maillog" 2>/dev/null; exit 1; }

cat > "$work/milter.toml" <<CONF
milter-socket = "unix:$work/sock/milter.sock"
milter-socket-mode = "0666"
cache-path = "$work/cache.sq3"
verbose = "info"
# No DNS here: the sender domains of this test are not verified.
mail-require-mx = false
# Greylisting with a 1-second period, so the retry below passes at once.
grey-key = "mail,rcpt"
grey-temp-fail-period = 1
CONF
"$bin" --config "$work/milter.toml" 2> "$work/milter.log" &
milter_pid=$!
for _ in $(seq 1 100); do [ -S "$work/sock/milter.sock" ] && break; sleep 0.05; done
[ -S "$work/sock/milter.sock" ] || fail "milter socket not created"
chmod 755 "$work/sock"

postfix_start "$work/pf" 2525 "unix:$work/sock/milter.sock" || fail "postfix start"

send() {
    swaks --server 127.0.0.1:2525 --xclient-addr 192.0.2.60 --xclient-name '[UNAVAILABLE]' \
        --helo client.example.org --from alice@example.org --to bob@example.net \
        --header "Message-Id: <e2e-1@example.org>" --body "first" 2>&1
}
# First sight: greylisted at DATA with our reply, which Postfix passes to the client.
out=$(send) && fail "first attempt was not refused: $out"
echo "$out" | grep -q '^<\*\* 451 4.7.0 try again later #552 ' || fail "no #552 greylisting reply: $out"
grep -q '#387 grey listed {alice@example.org,bob@example.net} for 1 seconds' "$work/milter.log" || fail "no #387"
sleep 2
# The retry passes and is delivered with our report header.
out=$(send) || fail "retry refused: $out"
echo "$out" | grep -q '^<-  250 2.0.0 Ok: queued as' || fail "message not queued: $out"
qid=$(echo "$out" | sed -n 's/^<-  250 2.0.0 Ok: queued as \([0-9A-Za-z]*\).*/\1/p')

for _ in $(seq 1 100); do grep -q '#721 end' "$work/milter.log" && break; sleep 0.05; done
grep -q '#721 end i=192.0.2.60' "$work/milter.log" || fail "no #721 for the XCLIENT address"
for _ in $(seq 1 100); do ls "$work/pf/Maildir/inbox/new/"* >/dev/null 2>&1 && break; sleep 0.05; done
grep -q '^X-Grey-Report: age=' "$work/pf/Maildir/inbox/new/"* || fail "delivered message lacks X-Grey-Report"
grep -q "#2005 queue-id $qid tid=" "$work/milter.log" || fail "queue id $qid not logged"
grep -q '#720 message tid=.* m=<e2e-1@example.org>' "$work/milter.log" || fail "no #720 with Message-ID"
grep -q '#717 sender <alice@example.org>' "$work/milter.log" || fail "no #717"
grep -q '#2001' "$work/milter.log" && fail "protocol error logged"
sid=$(grep "#2005 queue-id $qid" "$work/milter.log" | awk '{print $1}')
echo "ok: Postfix queue id $qid -> session $sid"
grep "^$sid\| $sid " "$work/milter.log" | sed 's/^/    /'
echo "PASS postfix-smoke"
