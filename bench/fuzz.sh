#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and fails on the first crash: the
# bench's fuzzing pass (`make fuzz`). Installs cargo-fuzz when it is missing.
#
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_TARGETS    which targets, space-separated (default: all of them)
#   FUZZ_SANITIZER  cargo-fuzz's --sanitizer (default none: the crate forbids unsafe code, so
#                   AddressSanitizer would find nothing a panic does not, at several times the cost)
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# New inputs libFuzzer finds go to fuzz/target/corpus/<target> (ignored by git), so the committed
# seeds in fuzz/corpus/<target> stay small; a crash is saved in fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-config duration metadata hooks}
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Debug assertions on: an arithmetic overflow in a parser is a finding, not a wrapped value.
flags=(--fuzz-dir fuzz --sanitizer "$sanitizer" --debug-assertions)
cargo fuzz build "${flags[@]}"

summary=()
for target in $targets; do
  scratch=fuzz/target/corpus/$target
  log=fuzz/target/$target.log
  mkdir -p "$scratch"
  echo "== fuzz $target for ${seconds}s"
  # -timeout: an input that takes this long is a hang, reported like a crash.
  if ! cargo fuzz run "${flags[@]}" "$target" "$scratch" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/ (full log: $log)." >&2
    echo "Reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $target <artifact>" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  summary+=("$(printf '%-10s %12s execs in %ss, %s inputs in corpus' "$target" "${runs:-?}" \
    "$seconds" "$(find "$scratch" "fuzz/corpus/$target" -type f | wc -l)")")
done

echo "== no crashes"
printf '  %s\n' "${summary[@]}"
