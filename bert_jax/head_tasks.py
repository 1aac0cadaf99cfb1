"""What the span (bert_jax.qa) and token (bert_jax.tagging) fine-tuning tasks share.

`HeadTask` is an objectives.Task whose data come as feature arrays per split (`arrays(split)`,
cut into batches by bert_jax.finetune's batchers), whose model is an HF-style head model
(`head_kind`: bert_jax.interop.hf.HEAD_KINDS) warm-started from config.init (a pretraining
workdir, or an HF / converted directory with or without the head), and whose trainable
parameters follow config.finetune.method as for classification.
"""

from __future__ import annotations

import functools
import os

from bert_jax import finetune
from bert_jax import models
from bert_jax import objectives
from bert_jax import warm_start


@functools.lru_cache(maxsize=4)
def _hf_head(path: str, kind: str):
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise ValueError(f"config.init.hf_checkpoint={path!r} is not a directory.")
  return hf.load_head(path, kind)


def check_start_head(config, kind: str, num_labels: int) -> None:
  """An HF starting point with this kind's head must have the task's number of outputs."""
  if finetune.start_kind(config) != "hf" or config.finetune.random_init:
    return
  head = _hf_head(config.init.hf_checkpoint, kind)[2]
  if head is not None and head["num_labels"] != num_labels:
    raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r} has a {head['num_labels']}-label "
                     f"head but task {config.finetune.task!r} has {num_labels} labels; use a backbone checkpoint.")


def start_params(config, kind: str):
  """(source, numpy params) of the starting point for a span / token model, or None (random)."""
  start = finetune.start_kind(config)
  if start == "none" or config.finetune.random_init:
    return None
  if start == "workdir":
    return config.init.workdir, finetune.restore_pretrained(config.init.workdir, config.init.checkpoint)
  return config.init.hf_checkpoint, _hf_head(config.init.hf_checkpoint, kind)[1]


class HeadTask(objectives.Task):
  """Base of QuestionAnswering and TokenClassification (subclasses set head_kind, model,
  features, loss, eval_step, host_metrics and `arrays`)."""

  best_mode = "max"
  head_kind = ""

  def __init__(self, config):
    super().__init__(config)
    self._eval_split = self.eval_splits(config)[0]

  def arrays(self, split: str):
    """The feature arrays of a split (rows of the batch spec's keys)."""
    raise NotImplementedError

  # --- driver hooks (bert_jax.finetune) ------------------------------------------------------
  @classmethod
  def eval_splits(cls, config):
    return (config.finetune.eval_split or "validation",)

  def eval_batches(self, split, batch_size):
    self._eval_split = split  # what host_metrics scores
    return finetune.padded_batches(self.arrays(split), batch_size)

  def write_outputs(self, out_dir: str) -> list[str]:
    del out_dir
    return []

  # --- the contract -----------------------------------------------------------------------
  def logits(self, params, batch, rng=None, deterministic=True):
    return self.model.apply({"params": params}, **models.model_inputs(self.model, batch),
                            deterministic=deterministic, rngs=None if deterministic else {"dropout": rng})

  def inputs(self, workdir, start_batch):
    del workdir
    c = self.config
    ebs = c.eval.batch_size or c.train.batch_size
    split = self.eval_splits(c)[0]
    return (finetune.epoch_batches(self.arrays("train"), c.train.batch_size, start_batch, c.data.seed),
            lambda: self.eval_batches(split, ebs))

  def trainable(self, params):
    return finetune.Classification.trainable(self, params)

  def num_params(self, abstract_params):
    return finetune.Classification.num_params(self, abstract_params)

  def warm_start(self, params):
    start = start_params(self.config, self.head_kind)
    if start is None:
      return params
    return warm_start.overwrite(params, start[1], start[0], "the starting point does not fit config.model.")[0]
