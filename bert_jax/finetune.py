r"""The fine-tuning driver: seeds of one train loop each, the best checkpoint scored, results.json.

  python -m bert_jax.main --config=configs/finetune.py:sst2 --workdir=runs/sst2 \
      --config.init.hf_checkpoint=path/to/hf_or_converted_dir --config.finetune.seeds=5

`run(config, workdir)` trains config.finetune.seeds runs (seed k in <workdir>/seed_<k>, each a
resumable train loop with per-epoch eval and its best epoch kept by the task's metric), scores
the best checkpoint of each on every eval split, writes the task's outputs (test predictions,
SQuAD predictions), and writes <workdir>/results.json with every seed and the median. A seed that
finished (or early-stopped) writes <seed dir>/finished.json; the same command again only
re-scores it. The driver asks the task (bert_jax.tasks.finetuning.FinetuneTask) every question
and names none: the tasks, their starting points and methods are documented there.
"""

from __future__ import annotations

import copy
import os
import shutil
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np

from bert_jax import checkpointing
from bert_jax import models
from bert_jax import rundir
from bert_jax import starts
from bert_jax import steps as steps_lib
from bert_jax import train
from bert_jax.tasks import registry

DONE_FILE = "finished.json"  # in a seed directory: the seed trained to its end or early-stopped
RESULTS_FILE = "results.json"  # in the fine-tuning workdir


def _print(*args) -> None:
  if jax.process_index() == 0:
    print(*args, flush=True)


def prepare(config) -> ml_collections.ConfigDict:
  """A copy of `config` with the model and tokenizer of the starting point and the step
  counts of the data (epochs, warmup proportion, one eval and checkpoint per epoch)."""
  return _prepare(config)[0]


def _prepare(config) -> tuple[ml_collections.ConfigDict, int]:
  """(prepare's config, the number of training examples)."""
  config = copy.deepcopy(config)
  f = config.finetune
  if f.seeds < 1 or f.epochs <= 0:
    raise ValueError(f"config.finetune.seeds={f.seeds} must be >= 1 and config.finetune.epochs={f.epochs} > 0.")
  if not 0 <= f.warmup_proportion < 1:
    raise ValueError(f"config.finetune.warmup_proportion={f.warmup_proportion} must be in [0, 1).")
  kind = registry.task_class(config)  # a bad task name fails here
  kind.configure(config)
  models.validate(config.model)
  n = kind.prepare_data(config)  # every split read and checked before anything is compiled
  per_epoch = max(1, -(-n // config.train.batch_size))
  num_steps = int(round(f.epochs * per_epoch))
  config.train.num_steps = num_steps
  config.optimizer.warmup_steps = int(round(f.warmup_proportion * num_steps))
  config.eval.every_steps = config.checkpoint.every_steps = per_epoch
  config.log.every_steps = min(config.log.every_steps, per_epoch)
  return config, n


class Incomplete(RuntimeError):
  """A seed's training stopped before its end; `status` is train_and_evaluate's (e.g. preempted)."""

  def __init__(self, status: str, message: str):
    super().__init__(message)
    self.status = status


def _finished(seed_dir: str, config) -> dict | None:
  """The seed's finish record if it finished with this config's step count, else None."""
  path = os.path.join(seed_dir, DONE_FILE)
  if not epath.Path(path).exists():
    return None
  done = rundir.read_json(path, "delete it to score that seed again (its checkpoints are kept)")
  return done if done.get("num_steps") == int(config.train.num_steps) else None


def _median(values):
  return float(np.median(values)) if values else float("nan")


def run(config, workdir: str) -> dict[str, Any]:
  """Fine-tunes config.finetune.seeds times; returns (and writes) the results dict."""
  ident = rundir.check(workdir, config)  # another run's workdir is refused first, touching nothing
  config, train_examples = _prepare(config)
  rundir.record(workdir, ident)
  kind = registry.task_class(config)
  seeds = []
  for k in range(int(config.finetune.seeds)):
    c = copy.deepcopy(config)
    c.seed = config.seed + k
    c.data.seed = config.data.seed + k
    seed_dir = os.path.join(workdir, f"seed_{k}")
    _print(f"--- {config.finetune.task}: seed {k + 1}/{config.finetune.seeds} in {seed_dir}")
    done = _finished(seed_dir, c)
    if done:
      # Not train_and_evaluate again: it would resume an early-stopped seed and train on.
      _print(f"Seed {k} already finished ({done['status']} at step {done['step']}); scoring its best checkpoint.")
    else:
      out = train.train_and_evaluate(c, seed_dir)
      if out["status"] not in ("done", "early_stopped"):
        raise Incomplete(out["status"], f"Seed {k} stopped with status {out['status']!r}; re-run the same command "
                         "to resume.")
      rundir.write_json(os.path.join(seed_dir, DONE_FILE),
                  {"status": out["status"], "step": int(out["step"]), "num_steps": int(c.train.num_steps)})
    seeds.append(score(c, seed_dir))
  splits = kind.eval_splits(config)
  names = kind.metric_names(config)
  median = {s: {m: _median([r["eval"][s][m] for r in seeds]) for m in names} for s in splits}
  results = {
      "task": config.finetune.task, "source": config.finetune.source,
      "start": config.init.workdir or config.init.hf_checkpoint or "random",
      "random_init": bool(config.finetune.random_init), "method": config.finetune.method,
      "train_examples": train_examples, "epochs": config.finetune.epochs,
      "num_steps": config.train.num_steps, "learning_rate": config.optimizer.learning_rate,
      "seeds": seeds, "median": median,
  }
  rundir.write_json(os.path.join(workdir, RESULTS_FILE), results)  # local or gs://
  for split in splits:
    for m in names:
      each = ", ".join(f"{r['eval'][split][m]:.4f}" for r in seeds)
      _print(f"{config.finetune.task} {split} {m}: median {median[split][m]:.4f} (seeds: {each})")
  return results


def score(config, seed_dir: str) -> dict[str, Any]:
  """Eval metrics of the best checkpoint on every eval split, and the task's outputs."""
  s, (_, eval_step, _) = train.setup_cached(config)
  task = train.task_for(s, config)
  ckpt = checkpointing.Checkpointer(os.path.join(seed_dir, "checkpoints"), config.checkpoint,
                                    best_metric=task.best_metric, best_mode=task.best_mode)
  ebs = config.eval.batch_size or config.train.batch_size
  frozen = steps_lib.frozen_args(s, task)
  best = ckpt.best_step() or ckpt.latest_step()
  state, _, _ = ckpt.restore(s.abstract_state(), best)
  ckpt.close()
  out = {"best_step": int(best), "eval": {}}
  out_dir = os.path.join(seed_dir, "predictions")

  def add(files: dict[str, list[str]]) -> None:
    for key, paths in files.items():
      out.setdefault(key, []).extend(paths)

  with steps_lib.mesh_context(s.mesh, s.rules):
    for split in task.eval_splits(config):
      out["eval"][split] = steps_lib.evaluate(eval_step, state["params"], lambda sp=split: task.eval_batches(sp, ebs),
                                              s, task, frozen)
      add(task.write_outputs(split, out_dir))
    add(task.write_test_predictions(lambda batches: steps_lib.predict(eval_step, state["params"], batches, s, frozen),
                                    out_dir))
  return out


def export(seed_dir: str, hf_dir: str) -> str:
  """The best checkpoint of a fine-tuned run as an HF *For<Task> directory (LoRA merged), with
  the tokenizer's vocab.txt when it is a WordPiece one."""
  config, params = starts.finetuned_params(seed_dir)
  registry.get_task(config).export(params, hf_dir)
  tok = config.data.tokenizer
  if tok.kind == "wordpiece" and os.path.exists(tok.path):
    shutil.copy(tok.path, os.path.join(hf_dir, "vocab.txt"))
  return hf_dir
