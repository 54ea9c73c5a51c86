#!/usr/bin/env bash
# The whole test suite: what CI runs (.ci/run calls this), and what the
# README's second command runs. Needs only a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean clone builds once: incremental state would only double the disk
# a CI build takes.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi

# The data plane's end-to-end tests drive the real curl through the
# client's SOCKS5 and HTTP CONNECT front end.
if ! command -v curl >/dev/null 2>&1; then
    echo "== installing curl (Debian package)"
    sudo_if_needed=""
    [ "$(id -u)" = 0 ] || sudo_if_needed="sudo"
    $sudo_if_needed apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq curl
fi

echo "== lints (clippy, warnings are errors: library code has no unwrap or expect)"
if ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add clippy || { echo "clippy is missing and rustup could not add it" >&2; exit 1; }
fi
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== unit, property, scenario and end-to-end tests"
cargo test --workspace --locked

echo "== fuzz the decoders of untrusted bytes (bounded)"
bash fuzz/run.sh tx_decode 20
bash fuzz/run.sh socks_parse 15
bash fuzz/run.sh frame_decode 15
bash fuzz/run.sh client_session 15
bash fuzz/run.sh json_tx 10

echo "== benchmarks, quick mode (prove they still run; figures are not checked)"
cargo run --release --locked -p tollway-bench -- all --quick
