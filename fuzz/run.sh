#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with libFuzzer (cargo-fuzz) for a
# bounded time, on the stable toolchain. This is the command CI calls:
#
#   fuzz/run.sh tx_decode 20
#   fuzz/run.sh socks_parse 15
#   fuzz/run.sh frame_decode 15
#   fuzz/run.sh client_session 15
#   fuzz/run.sh json_tx 10
#
# Self-contained: installs cargo-fuzz if missing, writes a fresh seed corpus,
# builds, fuzzes for SECONDS, prints a summary and exits non-zero on any
# crash (panic, timeout or OOM), after printing the input in hex and the
# backtrace. Crash inputs are kept in fuzz/artifacts/TARGET/.
#
# Environment:
#   FUZZ_SANITIZER  none (default) or address. Tollway forbids unsafe code,
#                   so ASan only watches dependencies; it costs ~4-5x the
#                   executions per second. `address` needs -Zsanitizer,
#                   which stable accepts only with RUSTC_BOOTSTRAP=1.
#   FUZZ_SEED       libFuzzer's -seed, to repeat a run (default: random,
#                   printed below).
#   FUZZ_ARGS       extra libFuzzer flags.
set -euo pipefail

target="${1:-tx_decode}"
seconds="${2:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
# The version run.sh was written against; a newer one already installed is
# used as it is.
cargo_fuzz_version="0.13.2"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"
# The working corpus grows across local runs (the root .gitignore ignores
# fuzz/corpus-out); the seeds are rewritten every run so they always match
# the current codec.
corpus="$fuzz_dir/corpus-out/$target"
seeds="$fuzz_dir/corpus-out/seeds-$target"
artifacts="$fuzz_dir/artifacts/$target"
log="$fuzz_dir/corpus-out/$target.log"
cd "$root"

# Per-target settings. A new target is one entry here (and one in
# fuzz/src/lib.rs's TARGETS, which the seed writer and `check` use).
#   max_len  libFuzzer's -max_len: room for the largest legal input and a
#            little over it, so both sides of the size limits are reachable.
case "$target" in
tx_decode)
    # The largest legal tx is 64 KiB; over it, the size check and the
    # 1024-measurement limit.
    max_len=65600 ;;
socks_parse)
    # An HTTP CONNECT head at its 8 KiB limit and over it (SOCKS5 messages
    # are at most 513 bytes).
    max_len=9000 ;;
frame_decode)
    # A few frames, the largest data frame (16 KiB + 8) and over it.
    max_len=20000 ;;
client_session)
    # A node's hello and the frames of a session in which the client's
    # 128-micro-dollar escrow (two 64 KiB receipt intervals) runs out.
    max_len=150000 ;;
json_tx)
    # The chain API's largest JSON submission body (8 x 64 KiB), and a
    # little over.
    max_len=525000 ;;
*) echo "run.sh: unknown fuzz target '$target' (known: tx_decode, socks_parse, frame_decode, client_session, json_tx)" >&2; exit 2 ;;
esac
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: SECONDS must be a positive integer, got '$seconds'" >&2
    exit 2
fi

if cargo fuzz --version >/dev/null 2>&1; then
    echo "==> $(cargo fuzz --version) already installed"
else
    echo "==> installing cargo-fuzz $cargo_fuzz_version"
    start=$SECONDS
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
    echo "==> installed cargo-fuzz in $((SECONDS - start)) s"
fi

fuzz_flags=(--fuzz-dir "$fuzz_dir" --features libfuzzer --sanitizer "$sanitizer")
if [[ "$sanitizer" != none ]]; then
    # -Zsanitizer is a nightly flag; this lets the stable compiler take it.
    export RUSTC_BOOTSTRAP=1
fi

echo "==> writing seed corpus"
rm -rf "$seeds"
cargo run --quiet -p tollway-fuzz --bin tollway-fuzz -- seeds "$seeds" "$target"

echo "==> building $target (sanitizer: $sanitizer)"
start=$SECONDS
cargo fuzz build "${fuzz_flags[@]}" "$target"
echo "==> built in $((SECONDS - start)) s"

mkdir -p "$corpus" "$artifacts"
libfuzzer_args=(
    -max_total_time="$seconds"
    -max_len="$max_len"
    # Decoding is microseconds; seconds on one input is a bug.
    -timeout=10
    -print_final_stats=1
    -artifact_prefix="$artifacts/"
)
if [[ -n "${FUZZ_SEED:-}" ]]; then
    libfuzzer_args+=(-seed="$FUZZ_SEED")
fi
# Deliberately unquoted: a list of flags.
# shellcheck disable=SC2206
libfuzzer_args+=(${FUZZ_ARGS:-})

echo "==> fuzzing $target for $seconds s (log: ${log#"$root"/})"
# Artifacts newer than this stamp are this run's findings.
stamp="$fuzz_dir/corpus-out/$target.started"
touch "$stamp"
status=0
# libFuzzer stops itself at -max_total_time; the outer timeout only guards
# against a wedged process. The first corpus directory receives new inputs.
RUST_BACKTRACE=1 timeout --kill-after=10 "$((seconds + 120))" \
    cargo fuzz run "${fuzz_flags[@]}" "$target" "$corpus" "$seeds" -- "${libfuzzer_args[@]}" \
    >"$log" 2>&1 || status=$?

# libFuzzer's own lines: the seed, the corpus after loading the seeds, and
# the final counts.
grep -E '^INFO: Seed:|INITED|DONE|^stat::|^Done [0-9]+ runs' "$log" || true
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
# libFuzzer's in-memory corpus at the end ("corp: inputs/size"), seeds included.
corp=$(sed -n 's/.*DONE .* corp: \([^ ]*\).*/\1/p' "$log")
new_artifacts=$(find "$artifacts" -type f -newer "$stamp" | sort)

if [[ $status -eq 0 && -z "$new_artifacts" ]]; then
    echo "fuzz $target: ${runs:-?} executions in $seconds s, ${rate:-?} exec/s," \
        "corpus ${corp:-?} (inputs/size), 0 crashes"
    exit 0
fi

echo "fuzz $target: FAILED (exit status $status) after ${runs:-?} executions" >&2
# From the panic (or libFuzzer's timeout/OOM report) to the input's Base64.
awk '/panicked at|^ALARM:|==[0-9]+== ?ERROR: libFuzzer/ {on = 1} on {print} on && /^Base64:/ {exit}' "$log" \
    | head -n 150 >&2 || true
for file in $new_artifacts; do
    echo "crash input ${file#"$root"/} ($(wc -c <"$file") bytes), hex:" >&2
    od -An -v -tx1 "$file" | tr -d ' \n' | fold -w 128 >&2
    echo >&2
    echo "reproduce: cargo run -p tollway-fuzz -- check --target $target ${file#"$root"/}" >&2
done
if [[ -z "$new_artifacts" ]]; then
    echo "no crash artifact was written; the last lines of the log:" >&2
    tail -n 40 "$log" >&2
fi
exit 1
