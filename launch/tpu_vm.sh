#!/usr/bin/env bash
# Run bert_jax on every host of a Cloud TPU VM pod slice (multi-host: jax.distributed is
# initialised automatically from the TPU metadata on each worker).
#
#   launch/tpu_vm.sh NAME ZONE configs/electra.py:small gs://bucket/run1 [--config.x.y=v ...]
#
# First run with SETUP=1 to copy the repo to the workers and install the pinned requirements.
# Re-running the same command resumes from the newest checkpoint in the workdir (also after a
# preemption: SIGTERM triggers a final checkpoint).
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG GS_WORKDIR [overrides...]" >&2
  exit 2
fi
NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_DIR=${REPO_DIR:-bert_jax}
OVERRIDES=$(printf ' %q' "$@")
ssh_all() { gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"; }

if [[ "${SETUP:-0}" == "1" ]]; then
  gcloud compute tpus tpu-vm scp --zone="$ZONE" --worker=all --recurse \
    "$(cd "$(dirname "$0")/.." && pwd)" "$NAME":"~/$REPO_DIR"
  ssh_all "cd ~/$REPO_DIR && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt \
    && .venv/bin/pip install -q 'jax[tpu]==0.10.2'"
fi

# One process per host; logs from process 0 only (the loop prints nothing elsewhere).
ssh_all "cd ~/$REPO_DIR && TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -m bert_jax.main \
  --config=$CONFIG --workdir=$WORKDIR $OVERRIDES 2>&1 | tee -a ~/bert_jax_train.log"
