#!/usr/bin/env bash
# The medium comparison. Six rows (configs/experiments/compare_medium/*.gin) trained on
# books (bytes) with one size, 10.24M tokens, AdamW and seed; evaluated on whole books validation
# and test and on the first CROSS_DOMAIN_MAX_BATCHES batches (default 96 = 393k bytes; empty =
# whole splits) of math and code test, every eval with its per-position buckets; then
# results/compare_medium.md and its plots (melodi_jax.experiments.report_medium).
# Resumable, in as many sittings as needed: a finished run or eval is skipped, an interrupted run
# resumes from its last checkpoint (every 500 steps, and on SIGTERM/Ctrl-C). Each finished row's
# small outputs are copied to $OUT_DIR/compare_medium/<row>/ (commit them): the report is rebuilt
# from those, for every row finished so far, without the run folders.
#   bash launch/experiments/compare_medium.sh            # everything (hours: launch/experiments/README.md)
#   SMOKE=1 bash launch/experiments/compare_medium.sh    # a few steps per row, capped evals
#   MODELS="vanilla transformer_xl" bash launch/experiments/compare_medium.sh
#   RUNS_ROOT=DIR OUT_DIR=DIR ...                        # where run folders / the report go
#   REPORT_ONLY=1 bash launch/experiments/compare_medium.sh   # the report from saved outputs only
# Extra arguments go to every trainer call (e.g. --gin_bindings=...) and are recorded in the report.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
export MELODI_DATA_DIR="${MELODI_DATA_DIR:-$repo_root/data}"
ALL_ROWS=(vanilla transformer_xl block_recurrent memorizing_dense melodi melodi_short_only)
read -r -a ROWS <<< "${MODELS:-${ALL_ROWS[*]}}"
for row in "${ROWS[@]}"; do
  if [ ! -f "configs/experiments/compare_medium/$row.gin" ]; then
    echo "error: MODELS has '$row', which is not a row of configs/experiments/compare_medium/" \
         "(rows: ${ALL_ROWS[*]})" >&2
    exit 2
  fi
done
EXP_DIR="$RUNS_ROOT/compare_medium"
CROSS_DOMAIN_MAX_BATCHES="${CROSS_DOMAIN_MAX_BATCHES-96}"
cap="${CROSS_DOMAIN_MAX_BATCHES:+:$CROSS_DOMAIN_MAX_BATCHES}"
EVALS="books_bytes:validation,books_bytes:test,math_bytes:test$cap,code_bytes:test$cap"
if [ "$SMOKE" = 1 ]; then OUT_DIR="$RUNS_ROOT/results"; else OUT_DIR="${OUT_DIR:-results}"; fi

SAVED="$OUT_DIR/compare_medium"

if [ "${REPORT_ONLY:-0}" != 1 ]; then
  log "compare_medium: rows ${ROWS[*]} -> $EXP_DIR (smoke=$SMOKE, data $MELODI_DATA_DIR)"
  for row in "${ROWS[@]}"; do
    train_row "$row" "experiments/compare_medium/$row.gin" "$@"   # extra args go to the trainer
    eval_row "$row" "$EVALS"
    usage="$EXP_DIR/$row/memory_usage.json"   # gates and attention mass on memory, final step
    if ! grep -q "\"step\": $(latest_step "$EXP_DIR/$row")," "$usage" 2>/dev/null; then
      log "$row: measuring memory use"
      "$PYTHON" -m melodi_jax.experiments.memory_usage --workdir="$EXP_DIR/$row" --json \
        --batches="${MEMORY_USAGE_BATCHES:-8}" > "$usage.tmp" 2>>"$EXP_DIR/$row/eval.log"
      mv "$usage.tmp" "$usage"
    fi
    "$PYTHON" -m melodi_jax.experiments.report_medium save --workdir="$EXP_DIR/$row" \
      --to="$SAVED/$row" 2>>"$EXP_DIR/$row/eval.log"
  done
fi
# Every row, in order: the finished ones (saved) fill the table, the others are listed as not run.
"$PYTHON" -m melodi_jax.experiments.report_medium report --saved="$SAVED" --out="$OUT_DIR" \
  --rows="$(IFS=,; echo "${ALL_ROWS[*]}")" --command="$COMMAND_LINE"
log "compare_medium: done -> $OUT_DIR/compare_medium.md"
