"""TF-free synthetic pretraining batches (config.data.source="synthetic"): tests, benchmarks, GPU smoke runs.

Rows of the pretraining data contract (bert_jax.batch.pretraining) that a model can learn: each
row counts up from a random start with a random stride, so a masked token follows from its
neighbours. Deterministic in (seed, batch index), so resumed and multi-process runs see
identical data.
"""

from __future__ import annotations

import jax
import numpy as np

SYN_PAD, SYN_CLS, SYN_SEP, SYN_MASK, SYN_FIRST = 0, 1, 2, 3, 5


def batch(config, index: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
  """A learnable global batch: each row counts up from a random start with a random stride.

  Deterministic in (seed, index), so resumed and multi-process runs see identical data.
  """
  rs = np.random.RandomState((seed * 1_000_003 + index) % (2**32))
  L, P, V = config.data.max_seq_length, config.data.max_predictions_per_seq, config.model.vocab_size
  span = V - SYN_FIRST
  start = rs.randint(0, span, (batch_size, 1))
  stride = rs.randint(1, 4, (batch_size, 1))
  ids = SYN_FIRST + (start + stride * np.arange(L)[None]) % span
  ids[:, 0], ids[:, -1] = SYN_CLS, SYN_SEP
  n_real = rs.randint(L // 2, L + 1, batch_size)
  mask = (np.arange(L)[None] < n_real[:, None]).astype(np.int32)
  ids = np.where(mask, ids, SYN_PAD)
  ttype = ((np.arange(L)[None] >= n_real[:, None] // 2) & (mask > 0)).astype(np.int32)
  pos = np.zeros((batch_size, P), np.int32)
  weights = np.zeros((batch_size, P), np.float32)
  for r in range(batch_size):
    k = min(P, max(1, int(round(0.15 * (n_real[r] - 2)))))
    pos[r, :k] = np.sort(rs.choice(np.arange(1, n_real[r] - 1), k, replace=False))
    weights[r, :k] = 1.0
  labels = np.take_along_axis(ids, pos, 1) * (weights > 0)
  roll = rs.rand(batch_size, P)
  replaced = np.where(roll < 0.8, SYN_MASK, np.where(roll < 0.9, rs.randint(SYN_FIRST, V, (batch_size, P)), labels))
  masked = ids.copy()
  for r in range(batch_size):
    k = int(weights[r].sum())
    masked[r, pos[r, :k]] = replaced[r, :k]
  return {
      "input_ids": masked.astype(np.int32), "input_mask": mask, "token_type_ids": ttype,
      "segment_ids": mask.copy(), "position_ids": np.broadcast_to(np.arange(L, dtype=np.int32), (batch_size, L)).copy(),
      "masked_lm_positions": pos, "masked_lm_ids": labels.astype(np.int32), "masked_lm_weights": weights,
      "next_sentence_labels": rs.randint(0, 2, batch_size).astype(np.int32),
  }


def iterate(config, global_bs: int, start: int, seed: int, stop: int | None = None):
  """This process's rows of global batches start, start + 1, ... (up to `stop`)."""
  pi, pc = jax.process_index(), jax.process_count()
  rows = slice(pi * global_bs // pc, (pi + 1) * global_bs // pc)
  i = start
  while stop is None or i < stop:
    yield {k: v[rows] for k, v in batch(config, i, global_bs, seed).items()}
    i += 1




def inputs(config, start_batch: int):
  """(train iterator from `start_batch`, eval-iterator factory); eval batches use a separate
  index range so they are never trained on."""
  bs, ebs = config.train.batch_size, config.eval.batch_size or config.train.batch_size
  seed = config.data.seed
  return (iterate(config, bs, start_batch, seed),
          lambda: iterate(config, ebs, 10**9, seed, 10**9 + config.eval.num_batches))
