#!/usr/bin/env bash
# The small comparison: every model of the small comparison trained on books (bytes) with the same
# size, tokens, optimizer and seed (configs/experiments/compare_small/*.gin), evaluated on whole
# books validation/test and on the first CROSS_DOMAIN_MAX_BATCHES batches (default 96 = 393k bytes;
# empty = whole splits, ~4x longer) of the math and code test splits, then results/compare_small.md
# and its plots.
# Resumable: a finished run or eval is skipped, an interrupted run resumes from its checkpoint.
#   bash launch/experiments/compare_small.sh            # everything (hours on a 2-core CPU)
#   SMOKE=1 bash launch/experiments/compare_small.sh    # a few steps per row, capped evals
#   MODELS="transformer_xl melodi" bash launch/experiments/compare_small.sh
# Extra arguments go to every trainer call (e.g. --gin_bindings=...) and are recorded in the report.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
export MELODI_DATA_DIR="${MELODI_DATA_DIR:-$repo_root/data}"
ALL_ROWS=(vanilla transformer_xl block_recurrent memorizing_dense memorizing_topk memlong melodi
          melodi_short_only melodi_long_only melodi_no_mix)
read -r -a ROWS <<< "${MODELS:-${ALL_ROWS[*]}}"
EXP_DIR="$RUNS_ROOT/compare_small"
CROSS_DOMAIN_MAX_BATCHES="${CROSS_DOMAIN_MAX_BATCHES-96}"
cap="${CROSS_DOMAIN_MAX_BATCHES:+:$CROSS_DOMAIN_MAX_BATCHES}"
EVALS="books_bytes:validation,books_bytes:test,math_bytes:test$cap,code_bytes:test$cap"
if [ "$SMOKE" = 1 ]; then OUT_DIR="$RUNS_ROOT/results"; else OUT_DIR="${OUT_DIR:-results}"; fi

log "compare_small: rows ${ROWS[*]} -> $EXP_DIR (smoke=$SMOKE, data $MELODI_DATA_DIR)"
for row in "${ROWS[@]}"; do
  train_row "$row" "experiments/compare_small/$row.gin" "$@"   # extra args go to the trainer
  eval_row "$row" "$EVALS"
  usage="$EXP_DIR/$row/memory_usage.json"   # gates and attention mass on memory, final step
  if ! grep -q "\"step\": $(latest_step "$EXP_DIR/$row")," "$usage" 2>/dev/null; then
    log "$row: measuring memory use"
    "$PYTHON" -m melodi_jax.experiments.memory_usage --workdir="$EXP_DIR/$row" --json \
      --batches="${MEMORY_USAGE_BATCHES:-8}" > "$EXP_DIR/$row/memory_usage.json.tmp" \
      2>>"$EXP_DIR/$row/eval.log"
    mv "$EXP_DIR/$row/memory_usage.json.tmp" "$EXP_DIR/$row/memory_usage.json"
  fi
done
"$PYTHON" -m melodi_jax.experiments.report compare_small --runs="$EXP_DIR" --out="$OUT_DIR" \
  --rows="$(IFS=,; echo "${ROWS[*]}")" --command="$COMMAND_LINE"
log "compare_small: done -> $OUT_DIR/compare_small.md"
