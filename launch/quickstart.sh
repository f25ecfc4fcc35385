#!/usr/bin/env bash
# The README's first command: creates .venv (if missing) and installs requirements.txt, builds the
# books corpus (if missing), trains a small MELODI on it on CPU (configs/quickstart.gin, a few
# minutes on 2 cores), evaluates the final checkpoint on the validation split and ends with a
# summary (python -m melodi_jax.summary): what was trained, the result next to a unigram baseline
# measured on the same documents, where the files are, what to run next.
# Quiet by default; MELODI_VERBOSE=1 shows every library's log lines.
# Extra arguments go to the trainer, e.g. --gin_bindings='TrainConfig.num_steps=1000'.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
workdir="${WORKDIR:-workdirs/quickstart-$(date +%Y%m%d-%H%M%S)}"

echo "[quickstart] 1/3 books corpus (kept if already built)"
bash launch/prepare_data.sh --corpora=books

echo "[quickstart] 2/3 training a small MELODI in $workdir"
start=$SECONDS
python -m melodi_jax.train --gin_file=quickstart.gin --workdir="$workdir" "$@"
# The trainer's wall time, compilation included (the summary sums this file's rows).
printf '{"seconds": %d}\n' "$((SECONDS - start))" >> "$workdir/train_wall.jsonl"

echo "[quickstart] 3/3 evaluating on books_bytes/validation (every document, memory carried)"
python -m melodi_jax.evaluate --workdir="$workdir" --split=validation
echo
python -m melodi_jax.summary --workdir="$workdir" --split=validation
