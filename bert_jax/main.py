r"""Entry point (the only file with flags).

  python -m bert_jax.main --config=configs/electra.py:small --workdir=gs://bucket/run1 \
      --config.data.mask_rate=0.25
  python -m bert_jax.main --config=configs/finetune.py:sst2 --workdir=runs/sst2 \
      --config.init.workdir=gs://bucket/run1 --config.finetune.seeds=5

Re-running the same command resumes from the newest checkpoint in --workdir. On a multi-host
TPU pod slice run the same command on every host (see launch/tpu_vm.sh); jax.distributed is
initialised automatically there. On other clusters set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/bert.py:tiny,runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed() -> None:
  """jax.distributed.initialize() when this is one process of several (must precede any jax use)."""
  import jax  # pylint: disable=g-import-not-at-top

  if "JAX_COORDINATOR_ADDRESS" in os.environ:
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0 or os.environ.get("SLURM_NTASKS", "1") != "1":
    jax.distributed.initialize()  # auto-detects Cloud TPU pod slices and SLURM


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _maybe_initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top

  from bert_jax import train  # pylint: disable=g-import-not-at-top

  # Orbax logs every save step at INFO through absl; keep the console to our progress lines.
  absl_logging.set_verbosity(absl_logging.WARNING if jax.process_index() == 0 else absl_logging.ERROR)
  logging.getLogger().setLevel(logging.WARNING if jax.process_index() == 0 else logging.ERROR)
  # Data workers must not grab accelerator memory; tf is imported lazily by bert_jax.data only.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  config = _CONFIG.value
  if config.objective.name == "classify":  # fine-tuning: seeds, best-epoch scoring, results.json
    from bert_jax import finetune  # pylint: disable=g-import-not-at-top
    finetune.run(config, _WORKDIR.value)
    return
  summary = train.train_and_evaluate(config, _WORKDIR.value)
  if summary["status"] == "nonfinite":
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
