#!/usr/bin/env bash
# Runs one entry point in P processes on this machine, joined by jax.distributed, each with its
# share of fake CPU devices: the multi-host code path of a TPU pod or a SLURM job, on one CPU.
#   PROCESSES=2 DEVICES_PER_PROCESS=2 bash launch/multiprocess_local.sh train WORKDIR \
#     --gin_file=models/melodi.gin --gin_file=sizes/tiny.gin --gin_file=runtime/cpu.gin
#   bash launch/multiprocess_local.sh evaluate WORKDIR --split=validation
# Every process runs `python -m melodi_jax.<train|evaluate> --multiprocess --workdir=WORKDIR ...`
# with the variables `srun` sets (SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, ...), so
# jax.distributed.initialize() takes the same cluster-detection path as on a SLURM cluster; the
# coordinator is process 0 on localhost:COORDINATOR_PORT (default: a free port).
# Output: lines prefixed [pI] here and LOG_DIR/process_I.log (default WORKDIR/logs); each
# process's id is in LOG_DIR/process_I.pid (`kill -TERM` one of them: a preemption notice).
# SIGTERM/SIGINT to this script go to every process. Exit status: the first non-zero one, in
# process order. MELODI_PYTHON picks the interpreter (default: ./.venv, created if missing).
set -euo pipefail
usage="usage: [PROCESSES=2] [DEVICES_PER_PROCESS=2] bash launch/multiprocess_local.sh \
train|evaluate WORKDIR [flags]"
if [ $# -lt 2 ] || [[ "$1" != train && "$1" != evaluate ]] || [[ "$2" == --* ]]; then
  echo "$usage" >&2
  exit 2
fi
module="$1" workdir="$2"
shift 2
processes="${PROCESSES:-2}" devices="${DEVICES_PER_PROCESS:-2}"
for value in "$processes" "$devices"; do
  if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    echo "multiprocess_local.sh: PROCESSES and DEVICES_PER_PROCESS must be positive integers;" \
         "got PROCESSES=$processes DEVICES_PER_PROCESS=$devices" >&2
    exit 2
  fi
done
if [ -n "${MELODI_PYTHON:-}" ]; then
  python_bin="$MELODI_PYTHON"
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
else
  source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"  # cds to the repository root
  python_bin=python
fi
free_port='import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])'
port="${COORDINATOR_PORT:-$("$python_bin" -c "$free_port")}"
log_dir="${LOG_DIR:-$workdir/logs}"
mkdir -p "$log_dir"
# Fake devices: this flag replaces any device count already in XLA_FLAGS.
xla_flags="$(echo "${XLA_FLAGS:-}" | sed 's/--xla_force_host_platform_device_count=[0-9]*//g')"
xla_flags="$xla_flags --xla_force_host_platform_device_count=$devices"
echo "[multiprocess_local] $processes processes x $devices CPU devices, coordinator" \
     "localhost:$port, logs in $log_dir"

pids=()
for ((i = 0; i < processes; i++)); do
  # What `srun --ntasks=P` on one node sets; jax reads it in jax.distributed.initialize().
  env SLURM_JOB_ID="${SLURM_JOB_ID:-$port}" SLURM_STEP_NODELIST=localhost SLURM_STEP_NUM_NODES=1 \
      SLURM_NTASKS="$processes" SLURM_PROCID="$i" SLURM_LOCALID="$i" \
      JAX_COORDINATOR_PORT="$port" JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo \
      XLA_FLAGS="$xla_flags" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" \
      "$python_bin" -u -m "melodi_jax.$module" --multiprocess --workdir="$workdir" "$@" \
      > >(sed -u "s/^/[p$i] /" | tee "$log_dir/process_$i.log") 2>&1 &
  pids+=($!)
  echo "${pids[$i]}" > "$log_dir/process_$i.pid"
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT

status=0
for i in "${!pids[@]}"; do
  # A trapped signal ends `wait` early (status > 128) while the process still runs: wait again.
  set +e
  wait "${pids[$i]}"
  rc=$?
  while [ "$rc" -gt 128 ] && kill -0 "${pids[$i]}" 2>/dev/null; do
    wait "${pids[$i]}"
    rc=$?
  done
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "[multiprocess_local] process $i exited with status $rc" >&2
    [ "$status" -ne 0 ] || status="$rc"
  fi
done
wait  # the output filters
exit "$status"
