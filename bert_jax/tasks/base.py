"""The task contract the loop trains through, and the metric helpers every task uses.

A `Task` (built by bert_jax.tasks.registry.get_task(config)) is everything the loop and the
drivers need to know about what they train, without either knowing any task by name:
  features                 the batch spec (bert_jax.batch): keys, shapes, dtypes, logical axes
  model, init_params       the Flax module and its random init; logical_specs its sharding names
  loss(params, batch, rng, deterministic=False, frozen=None) -> (loss, metrics)
  eval_step(params, batch, rng, frozen) -> (metrics, outputs)   device side, jitted by the loop
  host_metrics(outputs)    host-side eval metrics over all eval batches (F1, MCC, baselines...)
  train_line / eval_line   the task's part of the console lines
  best_metric, best_mode   which eval metric picks the best checkpoint, and its direction
  inputs(workdir, start_batch) -> (train iterator, eval-iterator factory) of host batches
  warm_start(params)       the starting point when no checkpoint is resumed (default: as is)
  trainable(params)        bool mask of the parameters the optimizer updates (default: all)
  frozen_params()          extra frozen state passed to loss (e.g. a teacher), never trained
                           nor saved; None by default
  validate(config)         (classmethod) cheap checks of the config, before anything is built
Fine-tuning tasks (bert_jax.tasks.finetuning.FinetuneTask) answer the seed driver's questions too.

Metrics are a dict name -> float32[2] (sum, weight) so micro-batches, devices and eval batches
aggregate exactly; `reduce_metrics` turns them into means on the host.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import models

Metrics = dict[str, jax.Array]


def pair(total, weight) -> jax.Array:
  """A metric as float32[2]: (sum of `total`, sum of `weight`)."""
  return jnp.stack([jnp.asarray(total, jnp.float32).sum(), jnp.asarray(weight, jnp.float32).sum()])


def sum_metrics(a: Metrics, b: Metrics) -> Metrics:
  return jax.tree.map(jnp.add, a, b)


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float:
  """ROC AUC from score histograms (ties inside a bin count one half)."""
  pos, neg = pos.astype(np.float64), neg.astype(np.float64)
  if pos.sum() == 0 or neg.sum() == 0:
    return float("nan")
  neg_below = np.cumsum(neg) - neg
  return float((pos * (neg_below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def reduce_metrics(metrics: dict[str, Any]) -> dict[str, float]:
  """Host-side: (sum, weight) pairs -> means; AUC histograms (`<name>_pos_hist` and
  `<name>_neg_hist`) -> `<name>_auc`."""
  metrics = jax.device_get(metrics)
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v, np.float64)
    if k.endswith("_hist"):
      continue
    out[k] = float(v[0] / v[1]) if v[1] > 0 else float("nan")
  for k in metrics:
    if k.endswith("_pos_hist"):
      name = k[:-len("_pos_hist")]
      out[f"{name}_auc"] = histogram_auc(np.asarray(metrics[k]), np.asarray(metrics[f"{name}_neg_hist"]))
  return out


class Task:
  """What the loop trains and evaluates (see the module docstring). Subclasses set `features`,
  `model`, `loss`, `inputs`; the rest has defaults."""

  best_metric = "eval/loss"
  best_mode = "min"
  finetuning = False  # True: main runs bert_jax.finetune's seed driver instead of one train loop

  def __init__(self, config):
    self.config = config
    self.model = None
    self.features: dict[str, batch_lib.Feature] = {}

  @classmethod
  def validate(cls, config) -> None:
    """Raises ValueError naming the config key; cheap (no data read, nothing built)."""
    del config

  # --- defaults ---------------------------------------------------------------------------
  def dummy_batch(self, batch_size: int = 2) -> dict[str, np.ndarray]:
    return batch_lib.dummy(self.features, batch_size)

  def init_params(self, rng):
    return models.init_params(self.model, rng, self.dummy_batch())

  def logical_specs(self):
    return models.logical_specs(self.model, self.dummy_batch())

  def loss(self, params, batch, rng, deterministic: bool = False, frozen=None):
    raise NotImplementedError

  def eval_step(self, params, batch, rng, frozen=None):
    """(metrics, per-example outputs for host_metrics); deterministic."""
    return self.loss(params, batch, rng, deterministic=True, frozen=frozen)[1], {}

  def host_metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    del outputs
    return {}

  def train_line(self, values: dict[str, float]) -> str:
    return f"loss {values['loss']:.4f}"

  def eval_line(self, values: dict[str, float]) -> str:
    return f"loss {values['loss']:.4f}"

  def inputs(self, workdir: str, start_batch: int):
    raise NotImplementedError

  def warm_start(self, params):
    return params

  def trainable(self, params):
    """Bool pytree like `params`: True where the optimizer updates (None: everything)."""
    del params
    return None

  def frozen_params(self):
    """Host arrays passed to loss / eval_step as `frozen` (never trained nor checkpointed)."""
    return None

  def frozen_logical_specs(self):
    """Logical PartitionSpecs of frozen_params (None: replicated)."""
    return None

  def num_params(self, abstract_params) -> str:
    return f"{models.param_count(abstract_params) / 1e6:.2f}M params"
