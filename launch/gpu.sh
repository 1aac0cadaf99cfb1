#!/usr/bin/env bash
# Single-host GPU run (all local GPUs form the mesh; data parallel by default).
#
#   launch/gpu.sh configs/bert.py:base runs/bert_base --config.model.dtype=bfloat16
#
# Needs a CUDA build of jax: pip install 'jax[cuda12]==0.10.2' on top of requirements.txt.
# Re-running the same command resumes from the newest checkpoint in the workdir.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# tensorflow-cpu (tf.data) never touches the GPU; jax gets 90% of its memory.
export TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec "$PY" -m bert_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
