#!/usr/bin/env bash
#SBATCH --job-name=mdt-jax
#SBATCH --output=slurm-%j.out
# Runs launch/train.py on a SLURM GPU cluster: srun starts one process per GPU (or per node), and
# `launch/train.py --distributed` calls jax.distributed.initialize(), which reads SLURM's environment
# (coordinator = the first node of the step, process count/id = SLURM_NTASKS/SLURM_PROCID; one
# process per GPU drives GPU $SLURM_LOCALID of its node).
#
# From a login node, in the repository root (the job runs there, so the workdir must be on a
# filesystem every node sees):
#   NODES=4 GPUS_PER_NODE=8 launch/slurm_train.sh \
#       --config=configs/distill.py:ss_flow_L --workdir=/shared/runs/ss_flow_L
# submits itself with sbatch; inside the allocation it runs srun. `--dry_run` as the first argument
# prints the exact sbatch and srun commands and runs nothing.
#
# Settings (environment):
#   NODES (4), GPUS_PER_NODE (8): the allocation; 4 x 8 = 32 GPUs.
#   PER: gpu (one process per GPU, the default) or node (one process driving all GPUs of its node).
#   PYTHON (python): the interpreter with mdt-jax installed on every node.
#   SBATCH_EXTRA: more sbatch options, e.g. "--partition=gpu --time=48:00:00 --account=proj".
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry_run" ]]; then
  dry_run=1
  shift
fi
NODES="${NODES:-4}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
PER="${PER:-gpu}"
PYTHON="${PYTHON:-python}"
SBATCH_EXTRA="${SBATCH_EXTRA:-}"
# sbatch runs a copy of this script from a spool directory: the repository is where sbatch ran.
REPO="${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

case "$PER" in
  gpu) tasks_per_node="$GPUS_PER_NODE"; device_flags=() ;;
  node) tasks_per_node=1; device_flags=("--local_device_ids=$(seq -s, 0 $((GPUS_PER_NODE - 1)))") ;;
  *) echo "PER must be gpu or node, got '$PER'" >&2; exit 2 ;;
esac

# All GPUs of a node stay visible to every task (no --gpus-per-task): JAX picks the task's own.
srun_cmd=(srun --nodes="$NODES" --ntasks-per-node="$tasks_per_node" --kill-on-bad-exit=1
          "$PYTHON" "$REPO/launch/train.py" --distributed "${device_flags[@]}" "$@")
# shellcheck disable=SC2206  # SBATCH_EXTRA is a list of options
sbatch_cmd=(sbatch --nodes="$NODES" --ntasks-per-node="$tasks_per_node" --gpus-per-node="$GPUS_PER_NODE"
            ${SBATCH_EXTRA} "$REPO/launch/slurm_train.sh" "$@")

if [[ "$dry_run" == 1 ]]; then
  echo "# submit (from a login node, in $REPO):"
  printf '%q ' "${sbatch_cmd[@]}"; echo
  echo "# then, inside the allocation ($((NODES * GPUS_PER_NODE)) GPUs, $((NODES * tasks_per_node)) processes):"
  printf '%q ' "${srun_cmd[@]}"; echo
elif [[ -n "${SLURM_JOB_ID:-}" ]]; then
  cd "$REPO"
  exec "${srun_cmd[@]}"
else
  exec "${sbatch_cmd[@]}"
fi
