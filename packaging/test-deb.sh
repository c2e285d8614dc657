#!/usr/bin/env bash
# packaging/test-deb.sh DEB: installs the package on this machine and checks it as a Debian admin
# would find it, then removes and purges it. Run as root, on a machine where smtpf-milter is not
# installed otherwise (CI). Fails at the first check that does not hold, naming it.
#
# Checks: files in place; conffiles registered; the user, group and state directory; the version;
# check-config on the shipped config, as the daemon's user (what ExecStartPre runs); every man
# page renders without warnings; systemd-analyze verify on the units; the sysusers and tmpfiles
# entries apply; nothing was enabled or started; dpkg -r keeps the conffiles, dpkg -P removes them
# and the state.
set -euo pipefail
deb=${1:?usage: packaging/test-deb.sh path/to/smtpf-milter_VERSION_ARCH.deb}
[ "$(id -u)" -eq 0 ] || { echo "test-deb.sh: needs root (dpkg -i)"; exit 1; }
fail() { echo "test-deb.sh: FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }

version=$(dpkg-deb -f "$deb" Version)
dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb"
ok "installed smtpf-milter $version"

for f in /usr/sbin/smtpf-milter \
    /etc/smtpf-milter/smtpf-milter.toml /etc/smtpf-milter/access.cf \
    /etc/logcheck/ignore.d.server/smtpf-milter \
    /lib/systemd/system/smtpf-milter.service /lib/systemd/system/smtpf-milter.socket \
    /usr/lib/sysusers.d/smtpf-milter.conf /usr/lib/tmpfiles.d/smtpf-milter.conf \
    /usr/share/man/man8/smtpf-milter.8.gz /usr/share/man/man5/smtpf-milter.toml.5.gz \
    /usr/share/man/man7/smtpf-milter-messages.7.gz \
    /usr/share/bash-completion/completions/smtpf-milter /usr/share/zsh/vendor-completions/_smtpf-milter \
    /usr/share/doc/smtpf-milter/README.md /usr/share/doc/smtpf-milter/copyright; do
    [ -f "$f" ] || fail "$f is missing"
done
ok "files in place"
conffiles=$(dpkg-query --showformat='${Conffiles}\n' --show smtpf-milter)
for f in /etc/smtpf-milter/smtpf-milter.toml /etc/smtpf-milter/access.cf /etc/logcheck/ignore.d.server/smtpf-milter; do
    grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile"
done
ok "conffiles registered"
! grep -q /usr/local /lib/systemd/system/smtpf-milter.service || fail "the unit names /usr/local"
grep -q '^Documentation=man:smtpf-milter(8)' /lib/systemd/system/smtpf-milter.service || fail "the unit has no Documentation="

getent passwd smtpf-milter >/dev/null || fail "no user smtpf-milter"
getent group smtpf-milter >/dev/null || fail "no group smtpf-milter"
[ "$(stat -c %U:%G:%a /var/lib/smtpf-milter)" = smtpf-milter:smtpf-milter:750 ] || fail "/var/lib/smtpf-milter: $(stat -c %U:%G:%a /var/lib/smtpf-milter)"
ok "user, group and state directory"

/usr/sbin/smtpf-milter --version | grep -qx "smtpf-milter $version" || fail "--version: $(/usr/sbin/smtpf-milter --version)"
runuser -u smtpf-milter -- /usr/sbin/smtpf-milter --config /etc/smtpf-milter/smtpf-milter.toml check-config \
    || fail "check-config on the shipped config, as user smtpf-milter"
ok "--version and check-config"

for page in smtpf-milter.8 smtpf-milter.toml.5 smtpf-milter-messages.7; do
    sec=${page##*.}
    warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "/usr/share/man/man$sec/$page.gz" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "man $page: $warnings"
    lines=$(LC_ALL=C.UTF-8 MANWIDTH=80 man -l "/usr/share/man/man$sec/$page.gz" 2>/dev/null | wc -l)
    [ "$lines" -gt 20 ] || fail "man $page renders $lines lines"
done
MANWIDTH=200 man -l /usr/share/man/man5/smtpf-milter.toml.5.gz 2>/dev/null | grep -q 'grey-temp-fail-period' \
    || fail "smtpf-milter.toml(5) has no grey-temp-fail-period"
ok "man pages render"

verify=$(systemd-analyze verify /lib/systemd/system/smtpf-milter.service /lib/systemd/system/smtpf-milter.socket 2>&1) \
    || fail "systemd-analyze verify: $verify"
# Units this machine lacks (postfix@-, sendmail) are only named in Before=; anything else is a defect.
if grep -v -e 'postfix' -e 'sendmail' <<<"$verify" | grep -q .; then fail "systemd-analyze verify: $verify"; fi
ok "systemd-analyze verify"
systemd-sysusers /usr/lib/sysusers.d/smtpf-milter.conf || fail "systemd-sysusers"
if getent group postfix >/dev/null; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/smtpf-milter.conf || fail "systemd-tmpfiles --create"
    [ "$(stat -c %U:%G:%a /var/spool/postfix/smtpf-milter)" = smtpf-milter:postfix:750 ] || fail "/var/spool/postfix/smtpf-milter"
    ok "sysusers and tmpfiles entries"
else
    ok "sysusers entry (no group postfix here: tmpfiles entry not applied)"
fi
if [ -d /run/systemd/system ]; then
    ! systemctl is-enabled smtpf-milter.service >/dev/null 2>&1 || fail "installing enabled the service"
fi
! pgrep -x smtpf-milter >/dev/null || fail "installing started the daemon"
ok "nothing enabled or started"

echo "# changed by the package test" >>/etc/smtpf-milter/smtpf-milter.toml
dpkg -r smtpf-milter >/dev/null || fail "dpkg -r"
[ ! -e /usr/sbin/smtpf-milter ] || fail "dpkg -r left the binary"
grep -q "changed by the package test" /etc/smtpf-milter/smtpf-milter.toml || fail "dpkg -r did not keep the changed conffile"
dpkg -P smtpf-milter >/dev/null || fail "dpkg -P"
[ ! -e /etc/smtpf-milter/smtpf-milter.toml ] || fail "dpkg -P left the conffile"
[ ! -e /var/lib/smtpf-milter ] || fail "dpkg -P left the state directory"
ok "dpkg -r keeps the conffiles, dpkg -P removes them and the state"
