#!/bin/sh
# A stand-in for a compiled simulation: anneal.sh -T TEMPERATURE -s STEPS --out FOLDER
# Writes FOLDER/result.json with the final energy; logs progress on stderr.
set -eu
T=""; STEPS=100; OUT="."
while [ $# -gt 0 ]; do
  case "$1" in
    -T) T="$2"; shift 2;;
    -s) STEPS="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    *) echo "anneal.sh: unknown argument $1" >&2; exit 64;;
  esac
done
[ -n "$T" ] || { echo "anneal.sh: -T TEMPERATURE is required" >&2; exit 64; }
echo "annealing at T=$T for $STEPS steps" >&2
awk -v t="$T" -v n="$STEPS" 'BEGIN {
  e = (t - 310) * (t - 310) / 50 + 100 / n;        # a smooth landscape, noisier for short runs
  printf "{\"energy\": %.6f, \"steps\": %d}\n", e, n
}' > "$OUT/result.json"
