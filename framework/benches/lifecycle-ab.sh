#!/usr/bin/env bash
# Runs copies of the lifecycle bench binary in turn and reports, for each, the
# median of its runs' ratios (start, start() alone, stop) with a 95% bootstrap
# interval for that median. Single runs move by about ±0.15 on a shared 2-core
# machine; medians over many alternating runs are what BENCHMARKS.md reports.
#
# Usage:
#   lifecycle-ab.sh save NAME            build the bench, copy it to <target>/ab/NAME
#   lifecycle-ab.sh run ROUNDS NAME...   ROUNDS runs of each saved copy, in turn
# Run it from anywhere in the repository; to compare an older commit, copy the
# script out of the tree first (see BENCHMARKS.md).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
target=${CARGO_TARGET_DIR:-target}
dir=$target/ab
case "${1:-}" in
save)
    [ $# -eq 2 ] || { echo "usage: $0 save NAME" >&2; exit 2; }
    cargo bench -p servicekit --bench lifecycle --no-run
    bin=$(ls -t "$target"/release/deps/lifecycle-* | grep -v '\.d$' | head -1)
    mkdir -p "$dir" && cp "$bin" "$dir/$2" && echo "saved $dir/$2"
    ;;
run)
    [ $# -ge 3 ] || { echo "usage: $0 run ROUNDS NAME..." >&2; exit 2; }
    rounds=$2; shift 2
    out=$(mktemp)
    for _ in $(seq "$rounds"); do
        for name in "$@"; do
            "$dir/$name" --reps 21 --no-restarts | awk -v n="$name" '
                /start ratio servicekit/ {s = $5}
                /start\(\) alone, ratio/ {a = $5}
                /stop ratio servicekit/  {t = $5}
                END {print n, s, a, t}'
        done
    done > "$out"
    for name in "$@"; do
        awk -v n="$name" '$1 == n' "$out" | awk -v n="$name" '
            function median(v, k,   i, j, x) {   # sorts v[1..k] in place
                for (i = 2; i <= k; i++) { x = v[i]; for (j = i - 1; j > 0 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
                return (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
            }
            { for (c = 1; c <= 3; c++) d[c, NR] = $(c + 1) }
            END {
                srand(1); line = sprintf("%-12s", n)
                split("start alone stop", label)
                for (c = 1; c <= 3; c++) {
                    for (i = 1; i <= NR; i++) v[i] = d[c, i]
                    m = median(v, NR)
                    for (b = 1; b <= 2000; b++) {
                        for (i = 1; i <= NR; i++) w[i] = d[c, int(rand() * NR) + 1]
                        boot[b] = median(w, NR)
                    }
                    median(boot, 2000)
                    line = line sprintf("  %s %.3f [%.3f .. %.3f]", label[c], m, boot[50], boot[1950])
                }
                print line "  runs=" NR
            }'
    done
    rm -f "$out"
    ;;
*)
    sed -n '2,11p' "$0" >&2; exit 2 ;;
esac
