#!/usr/bin/env bash
# Runs launch/train.py on every worker of a Cloud TPU VM pod slice at once:
#   gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=all --command="..."
# Each worker starts one process; `launch/train.py --distributed` calls jax.distributed.initialize(),
# which finds the slice's coordinator and the worker's id from the TPU VM metadata.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_train.sh \
#       --config=configs/distill.py:ss_flow_L --workdir=/mnt/shared/runs/ss_flow_L --config.mesh.fsdp=8
# `--dry_run` as the first argument prints the exact gcloud command and runs nothing.
#
# Settings (environment):
#   TPU_NAME, ZONE (required); PROJECT (optional, else gcloud's default project).
#   REPO_DIR (~/mdt-jax): where the repository is checked out on every worker, with mdt-jax installed.
#   PYTHON (python3): the interpreter on the workers.
# The workdir (and the data) must be on a filesystem every worker sees (Filestore/NFS or a gcsfuse
# mount): checkpoints are written by all workers together, metrics and exports by worker 0.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry_run" ]]; then
  dry_run=1
  shift
fi
: "${TPU_NAME:?set TPU_NAME to the name of the TPU VM}"
: "${ZONE:?set ZONE to the zone of the TPU VM}"
REPO_DIR="${REPO_DIR:-~/mdt-jax}"
PYTHON="${PYTHON:-python3}"

# The remote shell gets one string: each training argument quoted on its own.
train_args=$(printf ' %q' "$@")
remote="cd $REPO_DIR && $PYTHON launch/train.py --distributed${train_args}"
cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"} --worker=all
     --command="$remote")

if [[ "$dry_run" == 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi
