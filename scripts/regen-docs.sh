#!/usr/bin/env bash
# Regenerates the README's message and reply tables and docs/configuration.md's key table from the code.
# tests/docs.rs fails when they drift; run this after adding a message or a config key.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q
bin=${CARGO_TARGET_DIR:-target}/debug/smtpf-milter
python3 - "$bin" <<'PY'
import subprocess, sys
bin = sys.argv[1]
def splice(path, begin, end, args):
    table = subprocess.run([bin] + args, check=True, capture_output=True, text=True).stdout
    text = open(path).read()
    i = text.index(begin) + len(begin)
    j = text.index(end)
    open(path, "w").write(text[:i] + "\n" + table + text[j:])
splice("README.md", "<!-- messages:begin -->", "<!-- messages:end -->", ["explain", "--markdown"])
splice("README.md", "<!-- replies:begin -->", "<!-- replies:end -->", ["explain", "--markdown", "--replies"])
splice("docs/configuration.md", "<!-- keys:begin -->", "<!-- keys:end -->", ["keys", "--markdown"])
PY
