#!/usr/bin/env bash
# Multi-node data-parallel training of redraft on SLURM: one torchrun agent per node, each
# starting one process per GPU; torchrun's c10d rendezvous on the first node joins them.
#
#   sbatch examples/slurm.sh configs/stdlib-mdlm.yaml train.batch_size=256
#
# train.out_dir must be on a filesystem every node sees: rank 0 writes the checkpoints and
# every rank reads them on resume. A requeued or restarted job carries on from the newest
# complete checkpoint (--resume auto), so preemption and node failures lose at most
# train.save_every steps / train.save_every_minutes of work.
#SBATCH --job-name=redraft
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun agent per node
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --requeue                    # a preempted job comes back and resumes
#SBATCH --output=%x-%j.out

set -euo pipefail
CONFIG=${1:?usage: sbatch examples/slurm.sh CONFIG [section.key=value ...]}
shift
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}

# Each restart gets a fresh store for its process group, even when the nodes disagree on how
# many restarts there were (pytorch/pytorch#135712).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

# --max-restarts: a failed process restarts the whole group, which resumes by itself.
srun torchrun \
    --nnodes="$SLURM_JOB_NUM_NODES" \
    --nproc-per-node="$GPUS_PER_NODE" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="$HEAD_NODE:29500" \
    --rdzv-id="$SLURM_JOB_ID" \
    --max-restarts=3 \
    -m redraft train "$CONFIG" train.device=cuda train.save_every_minutes=30 "$@" \
    --resume auto
