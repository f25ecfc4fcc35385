#!/usr/bin/env bash
# Multi-query associative recall across windows (melodi_jax/data/mqar.py): every row is the small
# model with its memory kind (configs/experiments/memory_recall/<row>.gin), trained from scratch
# with the same data, steps, optimizer and seed in a curriculum of five stages:
#   1. <row>_k0: store and query in the same window (k = 0) only, so the in-window recall circuit
#      forms first (configs/experiments/memory_recall/stage_k0.gin);
#   2. <row>: warm-started from stage 1 (--init_from), the train mix of k = 0..3 windows, every
#      episode inside one training segment (so the loss's gradient reaches every memory write);
#   3. <row>_formation: warm-started from stage 1, N = 1 at k = 1 only (stage_formation.gin), so
#      the whole loss is on the one cell where a memory's write -> read circuit first forms;
#   4. <row>_reach: warm-started from stage 3, N = 1 at k = 2, 4, 8 only (stage_reach.gin), so a
#      memory that reaches far gets a training signal beyond the short-term recurrence's reach;
#   5. (rows in CAPACITY_ROWS, default "melodi") <row>_pairs: warm-started from stage 1, N = 2 at
#      k = 1 only (stage_pairs.gin), so the write that forms keeps each value with its key; then
#      <row>_capacity: from it, N = 1, 2, 4, 8 at k = 2, 4, 8 (stage_capacity.gin): how many
#      pairs the memory holds.
# Stage 2 is scored on the test grid (N in {1, 4, 16} x k in {0, 1, 2, 4, 8, 16, 32, 64},
# memory carried across segments), stages 3-4 on its N = 1 part, stage 5 on N = 1, 4 (pairs) and
# N = 1..16 (capacity); their gates and attention mass on memory are measured, the row's small
# outputs are copied to
# $OUT_DIR/memory_recall/<row>/ (committed: the report rebuilds from them without retraining),
# and $OUT_DIR/memory_recall.md + plots are written.
# Resumable: finished stages, scores and measurements are skipped; an interrupted run resumes.
#   bash launch/experiments/memory_recall.sh
#   SMOKE=1 bash launch/experiments/memory_recall.sh          # the pipeline in minutes
#   MODELS="vanilla transformer_xl" bash launch/experiments/memory_recall.sh
#   REPORT_ONLY=1 bash launch/experiments/memory_recall.sh    # the report from committed outputs
#   STAGES="3 4" bash launch/experiments/memory_recall.sh     # only these stages (default 1-5);
#     a stage's prerequisites (1 for 2, 3 and 5; 3 for 4) are trained when missing
#   JOBS=1 bash launch/experiments/memory_recall.sh           # rows one at a time (default 2 at once)
# Each invocation's wall time goes to memory_recall/benchmark_wall.jsonl; the report sums it.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
ALL_ROWS=(vanilla transformer_xl block_recurrent memorizing_dense memorizing_topk memlong melodi
          melodi_short_only melodi_long_only)
read -r -a ROWS <<< "${MODELS:-${ALL_ROWS[*]}}"
EXP_DIR="$RUNS_ROOT/memory_recall"
if [ "$SMOKE" = 1 ]; then OUT_DIR="$RUNS_ROOT/results"; SCORE_CAP=(--documents=2)
else OUT_DIR="${OUT_DIR:-results}"; SCORE_CAP=(); fi
RETRIEVAL_ROWS=(memlong)   # rows whose retrieval of the store's chunk is measured (retrieval_hits)
SAVED="$OUT_DIR/memory_recall"
read -r -a STAGE_LIST <<< "${STAGES:-1 2 3 4 5}"
# JOBS rows train at once (default 2: two runs on 2 cores finish the benchmark ~1.15x sooner than
# one at a time, measured; the numbers are the same either way).
JOBS="${JOBS:-2}"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] ||
  { echo "error: JOBS='$JOBS': the number of rows trained at once, e.g. JOBS=2" >&2; exit 2; }
# The rows, heaviest first (train time of all stages on 2 cores), for the JOBS queues.
COST_ORDER="melodi memorizing_dense memorizing_topk memlong block_recurrent melodi_short_only
            melodi_long_only transformer_xl vanilla"
for stage in "${STAGE_LIST[@]}"; do
  [[ "$stage" =~ ^[1-5]$ ]] ||
    { echo "error: STAGES='${STAGES:-}': stages are 1..5, e.g. STAGES='3 4'" >&2; exit 2; }
done
# wants N: stage N is asked for, or a later stage that starts from it is.
wants() {
  local s
  for s in "${STAGE_LIST[@]}"; do
    case "$1:$s" in 1:1|1:2|2:2|3:3|3:4|4:4|5:5) return 0 ;; esac
  done
  return 1
}

# retrieval_hits ROW RUN DEST: for a retrieval row, how often the query's window retrieves the
# store's chunk, per k (N = 1), saved to DEST/retrieval_hits.json.
retrieval_hits() {
  local row="$1" run="$2" dest="$3" step out
  [[ " ${RETRIEVAL_ROWS[*]} " == *" $row "* ]] || return 0
  step="$(latest_step "$run")"
  out="$run/eval/retrieval_hits_$step.json"
  if [ ! -f "$out" ] || [ "$SMOKE" = 1 ]; then
    log "$(basename "$run"): does the query's window retrieve the store's chunk"
    "$PYTHON" -m melodi_jax.experiments.memory_recall.retrieval_hits --workdir="$run" --json \
      "${SCORE_CAP[@]}" > "$out.tmp" 2>>"$run/eval.log"
    mv "$out.tmp" "$out"
  fi
  cp "$out" "$dest/retrieval_hits.json"
}

# later_stage ROW NAME FROM GIN PAIRS [trainer args]: the run <ROW>_<NAME>, warm-started from the
# run folder FROM with configs/experiments/memory_recall/GIN added, scored on the test grid's
# cells with N in PAIRS, its gates/attention measured; small outputs to $SAVED/ROW/NAME/.
later_stage() {
  local row="$1" name="$2" from="$3" gin="$4" pairs="$5"; shift 5
  local run="$EXP_DIR/${row}_$name" warm=() step usage
  if [ "$(latest_step "$run")" -eq 0 ]; then warm=(--init_from="$from"); fi
  train_row "${row}_$name" "experiments/memory_recall/$row.gin" \
    --gin_file="experiments/memory_recall/$gin" "${warm[@]}" "$@"
  step="$(latest_step "$run")"
  local score="$run/eval/mqar_test_${step}_n${pairs//,/-}.json"
  if [ ! -f "$score" ] || [ "$SMOKE" = 1 ]; then
    log "${row}_$name: scoring N = $pairs of the test grid"
    "$PYTHON" -m melodi_jax.experiments.memory_recall.score --workdir="$run" --split=test \
      --pairs="$pairs" --force "${SCORE_CAP[@]}" 2>>"$run/eval.log" | tail -n 3
  fi
  usage="$run/memory_usage.json"
  if ! grep -q "\"step\": $step," "$usage" 2>/dev/null; then
    "$PYTHON" -m melodi_jax.experiments.memory_usage --workdir="$run" --json \
      --split=validation --batches="${MEMORY_USAGE_BATCHES:-8}" > "$usage.tmp" 2>>"$run/eval.log"
    mv "$usage.tmp" "$usage"
  fi
  mkdir -p "$SAVED/$row/$name"
  cp "$run/config.gin" "$run/train_metrics.jsonl" "$score" "$usage" "$SAVED/$row/$name/"
  cp "$run/train_wall.jsonl" "$SAVED/$row/$name/" 2>/dev/null || true
  # (the report shows retrieval after stages 2 and 4; elsewhere it would cost ~4 min a stage)
  if [ "$name" = reach ]; then retrieval_hits "$row" "$run" "$SAVED/$row/$name"; fi
}

# run_row ROW [trainer args]: every asked-for stage of one row, in order.
run_row() {
  local row="$1"; shift
  local gin="experiments/memory_recall/$row.gin" capacity_row=0 warm workdir step usage stage
  [[ " ${CAPACITY_ROWS-melodi} " == *" $row "* ]] && capacity_row=1
  # Stage 1 for stage 2, or for stage 3 / 5 while its first run has not finished.
  if wants 1 || { wants 3 && [ "$(latest_step "$EXP_DIR/${row}_formation")" -eq 0 ]; } ||
     { wants 5 && [ "$capacity_row" = 1 ] &&
       [ "$(latest_step "$EXP_DIR/${row}_pairs")" -eq 0 ]; }; then
    train_row "${row}_k0" "$gin" --gin_file=experiments/memory_recall/stage_k0.gin "$@"
  fi
  if wants 2; then
    if [ "$(latest_step "$EXP_DIR/$row")" -eq 0 ]; then
      warm=(--init_from="$EXP_DIR/${row}_k0")   # a new stage-2 run starts from stage 1
    else
      warm=()                                   # a started one resumes from its checkpoint
    fi
    train_row "$row" "$gin" "${warm[@]}" "$@"
    workdir="$EXP_DIR/$row"
    step="$(latest_step "$workdir")"
    if [ ! -f "$workdir/eval/mqar_test_$step.json" ] || [ "$SMOKE" = 1 ]; then
      log "$row: scoring the test grid"
      "$PYTHON" -m melodi_jax.experiments.memory_recall.score --workdir="$workdir" --split=test \
        --force "${SCORE_CAP[@]}" 2>>"$workdir/eval.log" | tail -n 3
    fi
    "$PYTHON" -m melodi_jax.experiments.evaluate_run --workdir="$workdir" --evals= \
      >>"$workdir/eval.log" 2>&1   # model_stats.json (parameters, memory floats per lane)
    usage="$workdir/memory_usage.json"   # gates and attention mass on memory, final step
    if ! grep -q "\"step\": $step," "$usage" 2>/dev/null; then
      log "$row: measuring memory use"
      "$PYTHON" -m melodi_jax.experiments.memory_usage --workdir="$workdir" --json \
        --split=validation --batches="${MEMORY_USAGE_BATCHES:-8}" > "$usage.tmp" \
        2>>"$workdir/eval.log"
      mv "$usage.tmp" "$usage"
    fi
    # The small outputs a later session needs to rebuild the report without retraining.
    mkdir -p "$SAVED/$row"
    for stage in "${row}_k0" "$row"; do
      mkdir -p "$SAVED/$row/$stage"
      cp "$EXP_DIR/$stage/config.gin" "$EXP_DIR/$stage/train_metrics.jsonl" "$SAVED/$row/$stage/"
      cp "$EXP_DIR/$stage/train_wall.jsonl" "$SAVED/$row/$stage/" 2>/dev/null || true
      cp "$EXP_DIR/$stage"/eval/mqar_bytes_validation_*.json "$SAVED/$row/$stage/" 2>/dev/null || true
    done
    cp "$workdir/eval/mqar_test_$step.json" "$workdir/model_stats.json" "$usage" "$SAVED/$row/"
    retrieval_hits "$row" "$workdir" "$SAVED/$row"
  fi

  # Stage 3, formation: N = 1 at k = 1 from stage 1; stage 4, reach: N = 1 at k = 2, 4, 8 from
  # stage 3; both scored on N = 1 of the test grid.
  if wants 3; then
    later_stage "$row" formation "$EXP_DIR/${row}_k0" stage_formation.gin 1 "$@"
  fi
  if wants 4; then
    later_stage "$row" reach "$EXP_DIR/${row}_formation" stage_reach.gin 1 "$@"
  fi
  # Stage 5 (CAPACITY_ROWS, default MELODI S+L): the two-pair formation from stage 1, scored
  # on N = 1, 4; capacity from it, N = 1, 2, 4, 8 at k = 2, 4, 8, scored on N = 1..16: where
  # the compressed memory runs out of room.
  if wants 5 && [ "$capacity_row" = 1 ]; then
    later_stage "$row" pairs "$EXP_DIR/${row}_k0" stage_pairs.gin 1,4 "$@"
    later_stage "$row" capacity "$EXP_DIR/${row}_pairs" stage_capacity.gin 1,2,4,8,16 "$@"
  fi
}

# run_queue ID [trainer args]: a worker of JOBS: takes the next unstarted row of SCHEDULE (under a
# mkdir lock) until none is left, so the JOBS queues stay busy whatever each row costs.
run_queue() {
  local id="$1" index; shift
  while true; do
    until mkdir "$EXP_DIR/.schedule.lock" 2>/dev/null; do sleep 0.2; done
    index="$(cat "$EXP_DIR/.schedule")"; echo $((index + 1)) > "$EXP_DIR/.schedule"
    rmdir "$EXP_DIR/.schedule.lock"
    [ "$index" -lt "${#SCHEDULE[@]}" ] || return 0
    log "queue $id: ${SCHEDULE[$index]}"
    run_row "${SCHEDULE[$index]}" "$@"
  done
}

# The wall time of every invocation that trains (interrupted ones too) goes to
# $EXP_DIR/benchmark_wall.jsonl, copied to $SAVED/ and summed by the report.
record_wall() {
  local status=$? end; end="$(date +%s.%N)"
  mkdir -p "$SAVED"
  printf '{"started": "%s", "seconds": %.1f, "jobs": %d, "stages": "%s", "rows": "%s", "status": %d, "cores": %d, "cpu": "%s"}\n' \
    "$STARTED" "$(echo "$end - $START" | bc)" "$JOBS" "${STAGE_LIST[*]}" "${ROWS[*]}" "$status" \
    "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    >> "$EXP_DIR/benchmark_wall.jsonl"
  cp "$EXP_DIR/benchmark_wall.jsonl" "$SAVED/benchmark_wall.jsonl"
}

if [ "${REPORT_ONLY:-0}" != 1 ]; then
  log "memory_recall: rows ${ROWS[*]} -> $EXP_DIR (smoke=$SMOKE, jobs=$JOBS)"
  mkdir -p "$EXP_DIR"
  START="$(date +%s.%N)"; STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  trap record_wall EXIT
  if [ "$JOBS" = 1 ]; then
    for row in "${ROWS[@]}"; do run_row "$row" "$@"; done
  else
    # Rows in the order of their cost (the heaviest first), so the queues end close together.
    SCHEDULE=()
    for row in $COST_ORDER; do
      [[ " ${ROWS[*]} " == *" $row "* ]] && SCHEDULE+=("$row")
    done
    for row in "${ROWS[@]}"; do
      [[ " $COST_ORDER " == *" $row "* ]] || SCHEDULE+=("$row")
    done
    echo 0 > "$EXP_DIR/.schedule"; rmdir "$EXP_DIR/.schedule.lock" 2>/dev/null || true
    pids=()
    for ((queue = 1; queue <= JOBS; queue++)); do
      run_queue "$queue" "$@" & pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || { log "memory_recall: a queue failed (its log lines above)"; exit 1; }
  fi
  trap - EXIT; record_wall
fi
"$PYTHON" -m melodi_jax.experiments.memory_recall.report --saved="$SAVED" --out="$OUT_DIR" \
  --rows="$(IFS=,; echo "${ROWS[*]}")" --command="$COMMAND_LINE"
log "memory_recall: done -> $OUT_DIR/memory_recall.md"
