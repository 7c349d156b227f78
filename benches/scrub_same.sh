#!/usr/bin/env bash
# Do two hb-agent binaries scrub alike? Byte-for-byte comparison of their output (text
# and the --json redaction list, streaming and whole-buffer) on the scrub benchmark's
# inputs (a) (b) (c) and on about 40 MB of this machine's real text (Python stdlib, man
# pages, /usr/share/doc), each with and without gitleaks's rule file; (c) with the first
# 100 of its 1,000 values (each is a --secret-file, registered one by one: 1,000 take
# minutes).
#   benches/scrub_same.sh OLD_BIN NEW_BIN [WORKDIR]
# Exits 1 at the first difference. Inputs are cached in WORKDIR (default
# target/scrub-same).
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2")
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${3:-$root/target/scrub-same}
rules=$root/hb-agent/src/scrub/testdata/gitleaks/gitleaks.toml
mkdir -p "$dir"
if [[ ! -s $dir/clean.txt ]]; then
    (cd "$root" && cargo xtask __scrub-input "$dir")
fi
if [[ ! -s $dir/real.txt ]]; then
    python3 "$root/benches/real_text.py" "$dir/real.txt" 40000000
fi
if [[ ! -d $dir/live ]]; then
    mkdir -p "$dir/live"
    head -n 100 "$dir/live-values.txt" | split -l 1 -a 3 -d - "$dir/live/v"
fi
live_args=()
for f in "$dir"/live/v*; do live_args+=(--secret-file "$f"); done
status=0
compare() { # name, args…
    local name=$1; shift
    for mode in stream json; do
        local flag=(); [[ $mode == json ]] && flag=(--json)
        "$old" scrub "${flag[@]}" "$@" <"$input" >"$dir/old.out" 2>/dev/null
        "$new" scrub "${flag[@]}" "$@" <"$input" >"$dir/new.out" 2>/dev/null
        if cmp -s "$dir/old.out" "$dir/new.out"; then
            echo "same      $name $mode ($(stat -c %s "$dir/new.out") bytes)"
        else
            echo "DIFFERENT $name $mode: $(cmp "$dir/old.out" "$dir/new.out" | head -1)"; status=1
        fi
    done
}
for f in clean tokens real; do
    input=$dir/$f.txt
    compare "$f"
    compare "$f+rules" --rules "$rules"
done
input=$dir/clean.txt
compare "clean+live" "${live_args[@]}"
compare "clean+live+rules" "${live_args[@]}" --rules "$rules"
exit $status
