#!/usr/bin/env bash
# The whole test suite: what CI runs (.ci/run calls this), and what the
# README's second command runs. Needs only a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== unit, property, scenario and end-to-end tests"
cargo test --workspace --locked

echo "== fuzz the transaction decoder (bounded)"
bash fuzz/run.sh tx_decode 20
bash fuzz/run.sh socks_parse 15

echo "== benchmarks, quick mode (prove they still run; figures are not checked)"
cargo run --release --locked -p tollway-bench -- all --quick
