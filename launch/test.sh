#!/usr/bin/env bash
# Creates/updates ./.venv from requirements.txt and runs the whole pytest suite on CPU.
# Extra arguments go to pytest, e.g. `bash launch/test.sh -k causality -x`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
set +e
python -m pytest -q -n "${PYTEST_WORKERS:-2}" tests "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$status"
