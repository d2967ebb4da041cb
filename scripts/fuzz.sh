#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted input: the cargo-fuzz
# targets in fuzz/ (libFuzzer, nightly toolchain, AddressSanitizer), whose
# bodies live in crates/fuzzing.
#   scripts/fuzz.sh                      every target, FUZZ_SECONDS (300) each
#   scripts/fuzz.sh promql ws_frames     some of them
# Each run starts from the seeds (written by sextant-fuzz-seeds) and the corpus
# earlier runs grew under ~/.cache/sextant/fuzz-corpus/<target>. A failing
# input is left in fuzz/artifacts/<target>/: fix the defect, then keep the
# input in fuzz/regressions/<target>/, where `make test` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

seconds="${FUZZ_SECONDS:-300}"
cache="${SEXTANT_CACHE:-$HOME/.cache/sextant}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked

cargo build --quiet -p sextant-fuzzing --bin sextant-fuzz-seeds
rm -rf "$cache/fuzz-seeds"
"$CARGO_TARGET_DIR/debug/sextant-fuzz-seeds" "$cache/fuzz-seeds"

cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
fuzz=(cargo +nightly fuzz)
build=(--target-dir "$CARGO_TARGET_DIR/fuzz")
"${fuzz[@]}" build "${build[@]}"

failed=()
printf '%-14s %12s %10s %8s %8s %8s %s\n' target execs "execs/s" cov ft corpus result
for target in "${targets[@]}"; do
  mkdir -p "$cache/fuzz-corpus/$target"
  log="$cache/fuzz-$target.log"
  # -timeout: an input that takes 10 s is a denial of service, reported as a failure.
  if "${fuzz[@]}" run "${build[@]}" "$target" "$cache/fuzz-corpus/$target" "$cache/fuzz-seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see $log and fuzz/artifacts/$target/)"
    failed+=("$target")
  fi
  # The last status line: "#N DONE cov: C ft: F corp: K/…" (or the line before a crash).
  status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status")
  printf '%-14s %12s %10s %8s %8s %8s %s\n' "$target" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "${corp:--}" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
