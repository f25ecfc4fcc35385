#!/usr/bin/env bash
# The recall test: Transformer-XL, Memorizing (dense) and MELODI, each with its compare_small
# model and the same recall budget (configs/experiments/recall.gin: task, steps, optimizer, seed),
# trained from scratch on the recall task (recall_bytes: book text, a 5-digit key asked for k
# windows later), scored per k on the recall test split, then results/recall.md and recall.png.
# Resumable like compare_small.sh (same SMOKE / MODELS / RUNS_ROOT variables).
#   bash launch/experiments/recall.sh
#   SMOKE=1 bash launch/experiments/recall.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
export MELODI_DATA_DIR="${MELODI_DATA_DIR:-$repo_root/data}"
ALL_ROWS=(transformer_xl memorizing_dense melodi)
read -r -a ROWS <<< "${MODELS:-${ALL_ROWS[*]}}"
EXP_DIR="$RUNS_ROOT/recall"
if [ "$SMOKE" = 1 ]; then OUT_DIR="$RUNS_ROOT/results"; PER_K=(--examples_per_distance=4)
else OUT_DIR="${OUT_DIR:-results}"; PER_K=(); fi

log "recall: rows ${ROWS[*]} -> $EXP_DIR (smoke=$SMOKE, data $MELODI_DATA_DIR)"
for row in "${ROWS[@]}"; do
  train_row "$row" "experiments/recall/$row.gin" "$@"   # extra args: trainer
  log "$row: scoring recall (test split)"
  "$PYTHON" -m melodi_jax.experiments.evaluate_run --workdir="$EXP_DIR/$row" --evals= \
    >>"$EXP_DIR/$row/eval.log" 2>&1 || true   # model_stats.json (parameters, memory floats)
  "$PYTHON" -m melodi_jax.experiments.recall_score --workdir="$EXP_DIR/$row" --split=test \
    "${PER_K[@]}" 2>>"$EXP_DIR/$row/eval.log" | tee -a "$EXP_DIR/$row/eval.log"
done
"$PYTHON" -m melodi_jax.experiments.report recall --runs="$EXP_DIR" --out="$OUT_DIR" \
  --rows="$(IFS=,; echo "${ROWS[*]}")" --command="$COMMAND_LINE"
log "recall: done -> $OUT_DIR/recall.md"
