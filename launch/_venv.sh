# Sourced by launch/*.sh: creates ./.venv when missing and installs the pinned requirements when
# requirements.txt changed since the last install (a stamp file records its checksum).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
  echo "[venv] creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[venv] installing requirements.txt (first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$want" > "$stamp"
fi
export PATH="$repo_root/.venv/bin:$PATH"
# TensorFlow (used by seqio/tfds for input pipelines only) must stay quiet and off accelerators
# (melodi_jax/train/quiet.py); MELODI_VERBOSE=1 brings every log line back.
if [ "${MELODI_VERBOSE:-0}" = 0 ]; then
  export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
fi
