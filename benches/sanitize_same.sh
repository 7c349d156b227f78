#!/usr/bin/env bash
# Do two hb-agent binaries sanitize alike? Byte-for-byte comparison of their
# `hb-agent sanitize --json` output (verdicts, findings, spans, excerpts, text) in each
# mode (flag, redact, block, and flag with the learned stage) on the sanitize
# benchmark's input and on about 20 MB of this machine's real text (Python stdlib, man
# pages, /usr/share/doc), cut at line ends into pieces of 512 KiB so that no piece
# reaches the findings cap; and their `__sanitize-batch` verdicts (with and without the
# learned stage: what `cargo xtask sanitize-eval` counts) on every text of the
# evaluation corpus.
#   benches/sanitize_same.sh OLD_BIN NEW_BIN [WORKDIR]
# Exits 1 if any output differs (each difference is printed). Inputs are cached in
# WORKDIR (default target/sanitize-same).
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2")
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${3:-$root/target/sanitize-same}
mkdir -p "$dir"
if [[ ! -s $dir/bench.txt ]]; then
    (cd "$root" && cargo xtask __sanitize-input "$dir/bench.txt")
fi
if [[ ! -d $dir/real ]]; then
    python3 "$root/benches/real_text.py" "$dir/real" 20000000 --pieces 512
fi
status=0
for input in "$dir/bench.txt" "$dir"/real/r*.txt; do
    for args in "--mode flag" "--mode redact" "--mode block" "--mode flag --learned"; do
        # shellcheck disable=SC2086
        "$old" sanitize --json $args <"$input" >"$dir/old.out" 2>/dev/null || true
        # shellcheck disable=SC2086
        "$new" sanitize --json $args <"$input" >"$dir/new.out" 2>/dev/null || true
        if ! [[ -s $dir/old.out ]]; then
            echo "NO OUTPUT $(basename "$input") $args"; status=1
        elif cmp -s "$dir/old.out" "$dir/new.out"; then
            echo "same      $(basename "$input") $args ($(stat -c %s "$dir/new.out") bytes)"
        else
            echo "DIFFERENT $(basename "$input") $args: $(cmp "$dir/old.out" "$dir/new.out" | head -1)"
            status=1
        fi
    done
done
for input in "$root"/hb-agent/src/sanitize/testdata/corpus/*/*.jsonl; do
    name=$(basename "$(dirname "$input")")/$(basename "$input")
    "$old" __sanitize-batch <"$input" >"$dir/old.out"
    "$new" __sanitize-batch <"$input" >"$dir/new.out"
    if cmp -s "$dir/old.out" "$dir/new.out"; then
        echo "same      $name verdicts ($(wc -l <"$dir/new.out") texts)"
    else
        echo "DIFFERENT $name verdicts: $(cmp "$dir/old.out" "$dir/new.out" | head -1)"
        status=1
    fi
done
exit $status
