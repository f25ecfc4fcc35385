#!/usr/bin/env bash
# The step-time tables of benchmarks/README.md (sections 2.1 and 2.2): `melodi_jax.bench --json`
# of the trainer's train step for every row, one after another, each into
# $OUT/<config>_<model>.json, with its start/end time and load average appended to $OUT/run_log.txt.
# A row whose JSON exists is skipped (delete it, or FORCE=1, to measure it again); then the tables
# are printed with melodi_jax.bench_lib.report.
#   bash launch/benchmarks.sh                   # -> benchmarks/results/trainer_step/
#   STEPS=20 OUT=DIR bash launch/benchmarks.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/_venv.sh
OUT="${OUT:-benchmarks/results/trainer_step}"
STEPS="${STEPS:-10}"
mkdir -p "$OUT"
rows=("cpu:melodi" "cpu:transformer_xl" "cpu:vanilla"
      "cpu_w256:melodi" "cpu_w256:transformer_xl" "cpu_w256:vanilla" "cpu_w256:block_recurrent"
      "cpu_w256:memorizing_dense" "cpu_w256:memlong")
for row in "${rows[@]}"; do
  config="${row%%:*}" model="${row#*:}"
  json="$OUT/${config}_${model}.json"
  if [ -s "$json" ] && [ "${FORCE:-0}" != 1 ]; then continue; fi
  echo "== ${config}_${model} start $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/run_log.txt"
  nice python -m melodi_jax.bench --gin_file="models/$model.gin" --gin_file="bench/$config.gin" \
    --steps="$STEPS" --json > "$json.tmp"
  mv "$json.tmp" "$json"
  echo "== ${config}_${model} end $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/run_log.txt"
done
python -m melodi_jax.bench_lib.report "$OUT"/cpu_[mtv]*.json
python -m melodi_jax.bench_lib.report "$OUT"/cpu_w256_*.json
