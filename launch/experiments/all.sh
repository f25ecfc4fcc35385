#!/usr/bin/env bash
# The small comparison and the recall test in one command: the small comparison, then the recall test. Resumable; SMOKE=1 for a
# few-minute check of the whole pipeline (outputs under workdirs/experiments/smoke, not results/).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
bash "$here/compare_small.sh" "$@"
bash "$here/recall.sh" "$@"
