#!/usr/bin/env bash
# Starts the same training command on every worker of a Cloud TPU VM pod slice.
#   TPU_NAME=my-v4-32 ZONE=us-central2-b [PROJECT=my-project] \
#     bash launch/tpu_pod.sh setup                          # copy the repo, install on all workers
#   TPU_NAME=... ZONE=... bash launch/tpu_pod.sh train WORKDIR --gin_file=models/melodi.gin [...]
# Every worker runs `python -m melodi_jax.train --multiprocess` (jax.distributed.initialize()
# finds the other workers by itself on TPU VMs); settings: configs/runtime/tpu_pod.gin.
# WORKDIR must be one folder that every worker sees (orbax writes one checkpoint from all
# hosts), e.g. a bucket mounted with gcsfuse at the same path on every worker. Rerunning
# `train` resumes; a preemption notice (SIGTERM) saves at the step all workers agree on.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}" "${ZONE:?set ZONE to its zone}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
remote_dir="${REMOTE_DIR:-melodi_jax}"
gcloud_tpu=(gcloud compute tpus tpu-vm)
project=(${PROJECT:+--project="$PROJECT"})
on_all_workers() {
  "${gcloud_tpu[@]}" ssh "$TPU_NAME" --zone="$ZONE" "${project[@]}" --worker=all --command="$1"
}
case "${1:-}" in
  setup)
    "${gcloud_tpu[@]}" scp --recurse --zone="$ZONE" "${project[@]}" --worker=all \
      "$repo_root/melodi_jax" "$repo_root/configs" "$repo_root/launch" "$repo_root/requirements.txt" \
      "$TPU_NAME:~/$remote_dir/"
    on_all_workers "cd ~/$remote_dir && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt \
      && .venv/bin/pip install -q 'jax[tpu]==$(grep '^jax==' "$repo_root/requirements.txt" | cut -d= -f3)'"
    ;;
  train)
    shift
    if [ $# -lt 1 ] || [[ "$1" == --* ]]; then
      echo "usage: tpu_pod.sh train WORKDIR --gin_file=models/melodi.gin [more gin flags]" >&2
      exit 2
    fi
    workdir="$1"; shift
    flags=$(printf ' %q' "$@")
    on_all_workers "cd ~/$remote_dir && TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -m melodi_jax.train \
      --multiprocess --gin_file=runtime/tpu_pod.gin$flags --workdir=$(printf '%q' "$workdir") \
      2>&1 | tee -a ~/train_\$(hostname).log"
    ;;
  *)
    echo "usage: tpu_pod.sh setup | train WORKDIR [gin flags]  (with TPU_NAME and ZONE set)" >&2
    exit 2
    ;;
esac
