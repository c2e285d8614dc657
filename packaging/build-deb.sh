#!/usr/bin/env bash
# packaging/build-deb.sh: builds the Debian package, smtpf-milter_<version>_<arch>.deb, into
# target/debian/ (under CARGO_TARGET_DIR when set). One command: it builds the release binary,
# writes what is generated from it (the man pages, the bash and zsh completions, the unit with
# the binary in /usr/sbin) into target/release/package/, and runs cargo deb --no-build, whose
# metadata in Cargo.toml ([package.metadata.deb]) lists every file and where it goes.
#
# Needs cargo-deb (cargo install --locked cargo-deb) and gzip. Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "build-deb.sh: $*" >&2; exit 1; }
command -v cargo-deb >/dev/null || die "cargo-deb is not installed: cargo install --locked cargo-deb"

target=${CARGO_TARGET_DIR:-target}
cargo build --release --bin smtpf-milter >&2
bin=$target/release/smtpf-milter
gen=$target/release/package
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$bin" manpages "$gen/man"
gzip -9n "$gen"/man/*
"$bin" completions bash >"$gen/completions/smtpf-milter"
"$bin" completions zsh >"$gen/completions/_smtpf-milter"
# The repository's unit serves installs from source (/usr/local/sbin); the package's binary is
# in /usr/sbin.
sed 's#/usr/local/sbin/smtpf-milter#/usr/sbin/smtpf-milter#g' systemd/smtpf-milter.service >"$gen/smtpf-milter.service"
if grep -q /usr/local "$gen/smtpf-milter.service"; then die "the packaged unit still names /usr/local"; fi

mkdir -p "$target/debian"
cargo deb --no-build --strip --output "$target/debian/" >&2
deb=$(ls -t "$target"/debian/smtpf-milter_*.deb | head -1)
echo "$deb"
