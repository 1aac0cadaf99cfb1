"""Tiny configs and helpers shared by the training tests (test_train*, test_sharding*, test_checkpoint*)."""

import pathlib

import numpy as np

from bert_jax import configs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(family: str, arg: str):
  return configs.load(f"{family}.py:{arg}")


DEFAULT_ARG = {"bert": "tiny,runlocal", "albert": "base,runlocal", "electra": "small,runlocal"}


def tiny_config(family: str = "bert", *, steps: int = 4, batch: int = 8, seq: int = 16, synthetic: bool = True):
  """A 1-layer, 32-wide model on synthetic batches: compiles in seconds on CPU."""
  c = load_config(family, DEFAULT_ARG[family])
  c.model.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 vocab_size=128, max_position_embeddings=seq)
  if family != "bert":
    c.model.embedding_size = 16
  if family == "electra":
    c.model.generator_hidden_size = 0.5
  c.data.max_seq_length = seq
  c.data.max_predictions_per_seq = 4
  if synthetic:
    c.data.source = "synthetic"
  c.train.batch_size = batch
  c.train.num_steps = steps
  c.train.halt_after_steps = 0
  c.optimizer.warmup_steps = 1
  c.checkpoint.every_steps = steps
  c.checkpoint.async_save = True
  c.eval.every_steps = steps
  c.eval.num_batches = 2
  c.log.every_steps = steps
  return c


def tree_max_diff(a, b) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))),
                       jax.device_get(a), jax.device_get(b))
  return max(jax.tree.leaves(diffs))
