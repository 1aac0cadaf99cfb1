#!/usr/bin/env bash
# bert_jax on GPUs: one host, several hosts, or one SLURM task (see launch/slurm_gpu.sbatch).
#
#   launch/gpu.sh configs/bert.py:base runs/bert_base --config.model.dtype=bfloat16     # one host, all its GPUs
#   # several hosts, the same command on each (process i of N; host 0 is the coordinator):
#   launch/gpu.sh --coordinator=host0:1234 --num-processes=2 --process-id=$i \
#       configs/bert.py:base /shared/runs/bert_base
#   launch/gpu.sh --dry-run configs/bert.py:base runs/bert_base    # print the command, run nothing
#
# Several hosts: bert_jax.main calls jax.distributed.initialize (bert_jax/distributed.py) from
# JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (set here from the flags), or as
# JAX detects a SLURM job step (srun, one task per GPU) or an Open MPI launch; one process never
# starts it. The workdir must be one that every host sees (a shared filesystem or gs://).
# Needs a CUDA build of jax: pip install 'jax[cuda12]==0.10.2' on top of requirements.txt.
# Re-running the same command resumes from the newest checkpoint in the workdir; exit status 75
# means the run stopped before its end (SIGTERM / preemption: a checkpoint was saved) and resumes
# when run again.
set -euo pipefail
DRY_RUN=0
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --coordinator=*) export JAX_COORDINATOR_ADDRESS=${1#*=} ;;
    --num-processes=*) export JAX_NUM_PROCESSES=${1#*=} ;;
    --process-id=*) export JAX_PROCESS_ID=${1#*=} ;;
    *) echo "$0: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--dry-run] [--coordinator=HOST:PORT --num-processes=N --process-id=I] CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
if [[ -n ${JAX_COORDINATOR_ADDRESS:-} && ( -z ${JAX_NUM_PROCESSES:-} || -z ${JAX_PROCESS_ID:-} ) ]]; then
  echo "$0: --coordinator needs --num-processes and --process-id (or JAX_NUM_PROCESSES, JAX_PROCESS_ID)" >&2
  exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# tensorflow-cpu (tf.data) never touches the GPU; jax gets 90% of its memory.
export TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
CMD=("$PY" -m bert_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
if [[ $DRY_RUN == 1 ]]; then
  for v in JAX_COORDINATOR_ADDRESS JAX_NUM_PROCESSES JAX_PROCESS_ID TF_CPP_MIN_LOG_LEVEL XLA_PYTHON_CLIENT_MEM_FRACTION; do
    [[ -n ${!v:-} ]] && printf '%s=%q ' "$v" "${!v}"
  done
  printf '%q ' "${CMD[@]}"; echo
  exit 0
fi
exec "${CMD[@]}"
