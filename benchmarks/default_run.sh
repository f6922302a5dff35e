#!/usr/bin/env bash
# Times the default job as a new user runs it: `python main.py` from an empty directory,
# under `/usr/bin/time -v` (Debian package `time`), on a machine doing nothing else.
# Writes benchmarks/results/default_run/: time.txt (wall time, peak memory), log.txt (the
# run's output) and metrics.json (its recalls and seconds per phase). The README and the
# first line of configs/emoji_styles.yaml state this wall time and peak memory, which
# tests/test_docs.py checks. The dataset cache (~/.cache/dmml_tf) is kept: building
# emoji_styles on first use adds the "data" seconds of a first run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/benchmarks/results/default_run"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
cd "$work"
/usr/bin/time -v -o "$out/time.txt" python "$root/main.py" > "$out/log.txt" 2>&1
cp runs/emoji_styles/metrics.json "$out/metrics.json"
grep -E "Elapsed|Maximum resident" "$out/time.txt"
