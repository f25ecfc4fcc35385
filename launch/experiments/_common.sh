# Sourced by launch/experiments/*.sh: environment, smoke mode, and the resumable steps.
#   SMOKE=1         a few steps per model and capped evals, under $RUNS_ROOT/smoke (never results/)
#   MODELS="a b"    only these rows (default: every row of the experiment)
#   RUNS_ROOT=DIR   where run folders go (default: workdirs/experiments)
#   EVAL_MAX_BATCHES=N  cap every final eval at N batches (default: whole splits; the table says so)
#   CROSS_DOMAIN_MAX_BATCHES=N  compare_small: cap of the math/code test evals (default 96; '' = whole)
#   PYTHON=path     the interpreter (default: .venv/bin/python, else python3)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import absl, gin, jax' 2>/dev/null; then
  echo "error: $PYTHON cannot import absl/gin/jax; create .venv (bash launch/test.sh) or set PYTHON=" >&2
  exit 2
fi
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# The command as typed (with the variables that change what runs), for the report.
COMMAND_LINE="$(for v in SMOKE MODELS STAGES EVAL_MAX_BATCHES CROSS_DOMAIN_MAX_BATCHES RUNS_ROOT OUT_DIR MELODI_DATA_DIR; do
  if [ -n "${!v:-}" ]; then printf '%s=%q ' "$v" "${!v}"; fi; done; printf 'bash %s' "$0"
  if [ $# -gt 0 ]; then printf ' %q' "$@"; fi)"
SMOKE="${SMOKE:-0}"
RUNS_ROOT="${RUNS_ROOT:-workdirs/experiments}"
EVAL_MAX_BATCHES="${EVAL_MAX_BATCHES:-}"
SMOKE_BINDINGS=()
if [ "$SMOKE" = 1 ]; then
  RUNS_ROOT="$RUNS_ROOT/smoke"
  EVAL_MAX_BATCHES="${EVAL_MAX_BATCHES:-2}"
  export MEMORY_USAGE_BATCHES="${MEMORY_USAGE_BATCHES:-2}"
  SMOKE_BINDINGS=(--gin_bindings='TrainConfig.num_steps = 4' --gin_bindings='TrainConfig.log_every = 1'
                  --gin_bindings='TrainConfig.eval_every = 2' --gin_bindings='TrainConfig.eval_max_batches = 1'
                  --gin_bindings='TrainConfig.checkpoint_every = 2'
                  --gin_bindings='OptimizerConfig.warmup_steps = 2')
fi

log() { echo "[$(date -u +%H:%M:%S)] $*"; }

# The latest checkpoint step of a run folder (0 when none).
latest_step() {
  local dir="$1/checkpoints"
  [ -d "$dir" ] || { echo 0; return; }
  ls "$dir" | grep -E '^[0-9]+$' | sort -n | tail -n 1 | grep . || echo 0
}

# The num_steps a gin row trains for (with the smoke bindings applied).
num_steps_of() {
  "$PYTHON" - "$@" <<'PY'
import sys
from melodi_jax.train import cli, config, optim  # noqa: F401
from melodi_jax import data, models  # noqa: F401  (data: MQARConfig and other data configurables)
files = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--gin_file=')]
bindings = [a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--gin_bindings=')]
cli.parse_gin(files, bindings, ['configs'])
print(config.TrainConfig().num_steps)
PY
}

# train_row NAME GIN_FILE [more trainer flags]: trains $RUNS_ROOT/<exp>/NAME to its num_steps,
# resuming from its last checkpoint; skipped when finished. Wall time of each invocation goes to
# DIR/train_wall.jsonl (the report sums them), the trainer's log to DIR/train.log.
train_row() {
  local name="$1" gin="$2"; shift 2
  local workdir="$EXP_DIR/$name"
  local flags=(--gin_file="$gin" "${SMOKE_BINDINGS[@]}" "$@")
  local want; want="$(num_steps_of "${flags[@]}")"
  local have; have="$(latest_step "$workdir")"
  if [ "$have" -ge "$want" ]; then
    log "$name: trained ($have/$want steps), skipped"
    return 0
  fi
  mkdir -p "$workdir"
  log "$name: training steps $have..$want in $workdir (log: $workdir/train.log)"
  local start; start="$(date +%s.%N)"
  "$PYTHON" -m melodi_jax.train "${flags[@]}" --workdir="$workdir" >>"$workdir/train.log" 2>&1 || {
    log "$name: training failed; last lines of $workdir/train.log:"; tail -n 20 "$workdir/train.log"; return 1; }
  local end; end="$(date +%s.%N)"
  printf '{"from_step": %d, "to_step": %d, "seconds": %.1f, "load_average": "%s"}\n' \
    "$have" "$(latest_step "$workdir")" "$(echo "$end - $start" | bc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$workdir/train_wall.jsonl"
  local now; now="$(latest_step "$workdir")"
  if [ "$now" -lt "$want" ]; then  # SIGTERM/Ctrl-C: the trainer saved and stopped early
    log "$name: stopped at step $now of $want; rerun the same command to resume"
    exit 1
  fi
  log "$name: trained to step $now"
}

# eval_row NAME TASK:SPLIT,...: final evals of a trained row (done ones are skipped inside).
eval_row() {
  local name="$1" evals="$2"
  local workdir="$EXP_DIR/$name"
  local cap=(); [ -n "$EVAL_MAX_BATCHES" ] && cap=(--max_batches="$EVAL_MAX_BATCHES")
  log "$name: evaluating $evals"
  "$PYTHON" -m melodi_jax.experiments.evaluate_run --workdir="$workdir" --evals="$evals" \
    "${cap[@]}" >>"$workdir/eval.log" 2>&1 || {
    log "$name: evaluation failed; last lines of $workdir/eval.log:"; tail -n 20 "$workdir/eval.log"; return 1; }
  grep 'bits/byte' "$workdir/eval.log" | tail -n "$(echo "$evals" | tr ',' '\n' | wc -l)" || true
}
