r"""Entry point (the only file with flags).

  python -m bert_jax.main --config=configs/electra.py:small --workdir=gs://bucket/run1 \
      --config.data.mask_rate=0.25
  python -m bert_jax.main --config=configs/finetune.py:sst2 --workdir=runs/sst2 \
      --config.init.workdir=gs://bucket/run1 --config.finetune.seeds=5

Installed (`pip install .`), the same job is `bert-jax-train --config=bert.py:tiny,runlocal
--workdir=runs/demo` (a packaged config by name, see bert_jax/configs), and fine-tuning is
`bert-jax-finetune --config=finetune.py:sst2 ...` (finetune.py when --config is left out).

Re-running the same command resumes from the newest checkpoint in --workdir; exit status 75 says
the run stopped before its end (a preemption, config.train.halt_after_steps) and continues when
run again. On a multi-host
TPU pod slice run the same command on every host (see launch/tpu_vm.py); jax.distributed is
initialised automatically there. On other clusters set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

from bert_jax import configs

_CONFIG = configs.define_flag(
    "config", "Config file or packaged config name, e.g. configs/bert.py:tiny,runlocal or "
    "bert.py:tiny,runlocal.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])

# Exit status of a run that stopped before its end and continues when the same command runs again
# (a preemption notice, config.train.halt_after_steps); launch/tpu_vm.py re-runs on it. (EX_TEMPFAIL)
EXIT_INCOMPLETE = 75
RESUMABLE = ("preempted", "halted")


def _maybe_initialize_distributed() -> None:
  """jax.distributed.initialize() when this is one process of several (must precede any jax use):
  an explicit coordinator, or a cluster as JAX detects it (bert_jax.distributed)."""
  from bert_jax import distributed  # pylint: disable=g-import-not-at-top  # imports jax: after flag parsing

  distributed.maybe_initialize()


def main(argv, finetune_only: bool = False) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if finetune_only and "finetune" not in _CONFIG.value:
    raise app.UsageError("bert-jax-finetune takes a fine-tuning config (--config=finetune.py:<task>); "
                         "pretrain with bert-jax-train.")
  _maybe_initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top

  # After jax.distributed: the library (and TensorFlow through it) loads once the cluster is up.
  from bert_jax import finetune  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import registry  # pylint: disable=g-import-not-at-top

  # Orbax logs every save step at INFO through absl; keep the console to our progress lines.
  absl_logging.set_verbosity(absl_logging.WARNING if jax.process_index() == 0 else absl_logging.ERROR)
  logging.getLogger().setLevel(logging.WARNING if jax.process_index() == 0 else logging.ERROR)
  # Data workers must not grab accelerator memory; tf is imported lazily by bert_jax.data only.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  config = _CONFIG.value
  if registry.task_class(config).finetuning:  # seeds, best-epoch scoring, results.json
    try:
      finetune.run(config, _WORKDIR.value)
    except finetune.Incomplete as e:
      print(e, file=sys.stderr)
      sys.exit(EXIT_INCOMPLETE if e.status in RESUMABLE else 1)
    return
  summary = train.train_and_evaluate(config, _WORKDIR.value)
  if summary["status"] in RESUMABLE:
    sys.exit(EXIT_INCOMPLETE)
  if summary["status"] == "nonfinite":
    sys.exit(1)


def run() -> None:
  """Console entry point `bert-jax-train` (pretraining, or any config)."""
  app.run(main)


def run_finetune() -> None:
  """Console entry point `bert-jax-finetune`: --config defaults to finetune.py (task sst2)."""
  if not any(re.match(r"^--?config(=|$)", a) for a in sys.argv[1:]):
    sys.argv.insert(1, "--config=finetune.py")
  app.run(functools.partial(main, finetune_only=True))


if __name__ == "__main__":
  run()
