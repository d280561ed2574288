#!/usr/bin/env bash
# A "legacy" shell script, unchanged by explaunch: counts words of a text, prints key=value lines, writes a CSV.
#   examples/legacy/count_words.sh OUT_DIR [MIN_LENGTH]
set -euo pipefail
out=${1:?usage: count_words.sh OUT_DIR [MIN_LENGTH]}
min=${2:-4}
mkdir -p "$out"
text="Researchers measure the energy and the speed of language models; sweeps compare models and batch sizes."
echo "$text" | tr -cs 'A-Za-z' '\n' | awk -v m="$min" 'length($0) >= m' | sort | uniq -c | awk '{print $2","$1}' >"$out/words.csv"
echo "words=$(wc -l <"$out/words.csv")"
echo "min_length=$min"
