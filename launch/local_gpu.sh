#!/usr/bin/env bash
# Trains on the GPUs of this machine, one process, every visible GPU on the mesh's data axis.
#   bash launch/local_gpu.sh WORKDIR --gin_file=models/melodi.gin [--gin_file=...] [--gin_bindings=...]
# CUDA_VISIBLE_DEVICES picks the GPUs. Rerunning the same command resumes from WORKDIR's latest
# checkpoint; Ctrl-C (or SIGTERM) finishes the step, saves and exits. Settings: configs/runtime/local_gpu.gin
# (e.g. --gin_bindings="TrainConfig.mesh_shape = (-1, 2)" splits wide layers over GPU pairs).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
if [ $# -lt 1 ] || [[ "$1" == --* ]]; then
  echo "usage: bash launch/local_gpu.sh WORKDIR --gin_file=models/melodi.gin [more gin flags]" >&2
  exit 2
fi
workdir="$1"; shift
unset JAX_PLATFORMS
if ! python -c "import jax, sys; sys.exit(0 if jax.devices()[0].platform == 'gpu' else 1)" 2>/dev/null; then
  echo "local_gpu.sh: JAX sees no GPU; install the CUDA build into .venv:" \
       ".venv/bin/pip install 'jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')'" >&2
  exit 2
fi
# Let XLA take most of GPU memory up front (its default is 75%).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
echo "[local_gpu] $(python -c 'import jax; print(jax.device_count(), "GPUs:", jax.devices()[0].device_kind)')"
exec python -m melodi_jax.train --gin_file=runtime/local_gpu.gin "$@" --workdir="$workdir"
