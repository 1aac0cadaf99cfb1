"""The training/eval input as one tf.data.Dataset: rows -> masking -> batches.

  rows     pieces of unmasked rows (~2**19 tokens) with their masking keys: built in Python by
           the row generator (bert_jax.data.row_source: stream layout, eval documents, host
           shards; a tf.numpy_function source, host-side), or read from row records
           (bert_jax.data.rows; graph ops only);
  masking  a tf.function mapped over whole pieces (`masked_batches`), `rebatch` to batch_size
           rows, prefetch; with config.data.service_address the dataset runs on tf.data
           service workers (row records only).
`train_iterator` / `eval_iterator` return `Batches` (numpy dicts; `.dataset` is the
tf.data.Dataset, to extend with one's own transformations).

The rows are cut into batches of `batch_size` rows in stream order, so batch k is fixed by
(seed, k), and `start_batch` only skips rows (row_source: masks are keyed per row, never
drawn for what is skipped).
"""

from __future__ import annotations

import atexit
import copy
import weakref
from typing import Iterator

import numpy as np
import tensorflow as tf

from bert_jax.data import checks
from bert_jax.data import masking
from bert_jax.data import row_source
from bert_jax.data import rows as rows_lib

# The row generator's names, as callers know them (pipeline.load_corpus in tests and benchmarks).
EVAL_SEED_OFFSET = row_source.EVAL_SEED_OFFSET
load_corpus = row_source.load_corpus
default_chunk_rows = row_source.default_chunk_rows


def validate(data_config, batch_size: int, process_index: int, process_count: int,
             tokenizer) -> masking.MaskingSpec:
  """Raises ValueError naming the bad key before anything expensive runs."""
  c = data_config
  if batch_size < 1:
    raise ValueError(f"Per-host batch_size must be >= 1, got {batch_size}.")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, {process_count}).")
  checks.instances(c)  # also run (with the other config.data checks) before anything is built
  if not isinstance(c.get("mask_parallelism", 1), int) or c.get("mask_parallelism", 1) < 1:
    raise ValueError(f"config.data.mask_parallelism={c.mask_parallelism!r} must be an int >= 1 (pieces "
                     "masked at once).")
  if c.get("service_address", "") and not c.get("rows_path", ""):
    raise ValueError(f"config.data.service_address={c.service_address!r} needs config.data.rows_path: "
                     "a tf.data service worker runs only TF ops, and rows are built in Python; write "
                     "row records first (python -m bert_jax.data.rows) and point rows_path at them.")
  return masking.spec_from_config(c, tokenizer)


# ----------------------------------------------------------------------------- masking

_MASK_FNS: dict = {}
_XLA_STRATEGIES = masking.XLA_STRATEGIES


def mask_inputs(rows: dict[str, np.ndarray], keys: np.ndarray):
  """(piece, keys) of numpy rows as `mask_fn`'s function takes them (TF constants), for callers
  outside the data modules (the pipeline benchmark) that do not import TensorFlow."""
  return {k: tf.constant(rows[k]) for k in ("input_ids", "input_mask")}, tf.constant(keys)


def mask_fn(spec: masking.MaskingSpec, length: int):
  """The compiled masking function (any number of rows), cached so repeated eval
  iterators do not retrace."""
  key = (tuple((f, v.tobytes() if isinstance(v, np.ndarray) else v)
               for f, v in vars(spec).items()), length)
  if key not in _MASK_FNS:
    sig = {k: tf.TensorSpec([None, length], tf.int32) for k in ("input_ids", "input_mask")}
    # XLA fuses the span/n-gram while_loop body (2x faster on CPU); integer hash ops make
    # the result identical to the unfused graph (tests/test_masking.py checks it). XLA
    # compiles once per row count, so `masked_batches` pads every piece to chunk_rows rows.
    _MASK_FNS[key] = tf.function(lambda b, k: masking.mask_batch(spec, b, k),
                                 input_signature=[sig, tf.TensorSpec([None], tf.uint32)],
                                 jit_compile=spec.strategy in _XLA_STRATEGIES)
  return _MASK_FNS[key]


def masked_batches(pieces: tf.data.Dataset, spec: masking.MaskingSpec, *, batch_size: int,
                   length: int, chunk_rows: int, pad_id: int, limit: int | None = None,
                   parallelism: int = 1) -> tf.data.Dataset:
  """The masking stage every source shares: row pieces -> masked batches of `batch_size` rows.

  Masking maps over whole pieces (TF's per-call cost dominates at one batch); each row's masks
  depend only on its key, so the piece size changes speed, never the stream. `parallelism`
  pieces are masked at once (order kept: deterministic), e.g. on a many-core tf.data service
  worker; `rebatch` then cuts the pieces into batches, carrying a partial batch over. The
  XLA-compiled strategies compile once per row count, so their pieces are padded to
  `chunk_rows` rows first.
  """
  fn = mask_fn(spec, length)
  xla = spec.strategy in _XLA_STRATEGIES

  def mask(piece):
    n = tf.shape(piece["keys"])[0]
    ids, input_mask, keys = piece["input_ids"], piece["input_mask"], piece["keys"]
    if xla:
      pad = chunk_rows - n
      ids = tf.pad(ids, [[0, pad], [0, 0]], constant_values=pad_id)
      input_mask = tf.pad(input_mask, [[0, pad], [0, 0]])
      keys = tf.pad(keys, [[0, pad]])
    out = fn({"input_ids": ids, "input_mask": input_mask}, keys)
    res = {k: v for k, v in piece.items() if k != "keys"}
    for k in ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
      # The padding is cut by a gather: a slice would hand rebatch views into the padded
      # buffer, which TF logs an error about per batch.
      res[k] = tf.gather(out[k], tf.range(n)) if xla else out[k]
    return res

  ds = pieces.map(mask, num_parallel_calls=parallelism, deterministic=True)
  ds = ds.rebatch(batch_size, drop_remainder=True)
  if limit is not None:
    ds = ds.take(limit)
  return ds.prefetch(2)


class _Rows:
  """A Python iterator of row pieces as a tf.data source (host-side: it runs in this process;
  one pass). Each element is one `tf.numpy_function` call for the next piece (`from_generator`
  was much slower per row here). The source
  ends at an empty piece. It keeps the iterator's exception, so `Batches` re-raises it as it
  was (tf.data would wrap it in an OpError)."""

  def __init__(self, pieces, length: int):
    self._pieces_it, self.error = pieces, None
    sig = row_source.piece_signature(length)
    self._keys = list(sig)
    self._empty = [np.zeros([0, *s.shape[1:]], s.dtype.as_numpy_dtype) for s in sig.values()]

    def piece(_):
      out = tf.numpy_function(self._next, [], [s.dtype for s in sig.values()], stateful=True)
      return {k: tf.ensure_shape(v, sig[k].shape) for k, v in zip(self._keys, out)}

    self.dataset = (tf.data.Dataset.from_tensors(0).repeat().map(piece)
                    .take_while(lambda p: tf.shape(p["keys"])[0] > 0))

  def _next(self) -> list:
    try:
      p = next(self._pieces_it, None)
    except Exception as e:  # pylint: disable=broad-except
      self.error = e
      raise
    return self._empty if p is None else [p[k] for k in self._keys]


_OPEN: "weakref.WeakSet[Batches]" = weakref.WeakSet()


@atexit.register
def _close_open_iterators():
  """A Python row source blocks the interpreter's exit while tf.data reads ahead from it."""
  for b in list(_OPEN):
    b.close()


class Batches:
  """Iterator of numpy batch dicts over a batch dataset; `close()` stops its background work
  (at exit at the latest)."""

  def __init__(self, dataset: tf.data.Dataset, rows: _Rows | None = None):
    self.dataset, self._rows = dataset, rows
    self._it = iter(dataset.as_numpy_iterator())
    _OPEN.add(self)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      raise StopIteration
    try:
      return next(self._it)
    except tf.errors.OpError:
      if self._rows is not None and self._rows.error is not None:
        self.close()
        raise self._rows.error from None
      raise

  def close(self):
    """Drops the iterator: tf.data cancels its read-ahead and waits for its threads."""
    self._it = None


def _stream(data_config, tokenizer, spec, split: str, *, batch_size, process_index,
            process_count, seed, start_batch, stats, limit=None, chunk_rows=None) -> Batches:
  """Row pieces of `split` -> masking + batching, as one tf.data.Dataset (`Batches.dataset`).

  The rows come from this process's row generator (`row_source.row_pieces`), or, with
  config.data.rows_path, from row records through a graph-only source, which
  config.data.service_address then runs on tf.data service workers."""
  L = data_config.max_seq_length
  chunk_rows = chunk_rows or default_chunk_rows(batch_size, L, spec.strategy)
  if limit is not None:
    chunk_rows = min(chunk_rows, limit * batch_size)
  kw = dict(process_index=process_index, process_count=process_count, seed=seed,
            start_row=start_batch * batch_size)
  rows = None
  if data_config.get("rows_path", ""):
    pieces, chunk_rows = rows_lib.pieces(data_config, tokenizer, split, **kw)
  else:
    rows = _Rows(row_source.row_pieces(data_config, tokenizer, split, chunk_rows=chunk_rows,
                                       stats=stats, **kw), L)
    pieces = rows.dataset.prefetch(1)
  ds = masked_batches(pieces, spec, batch_size=batch_size, length=L, chunk_rows=chunk_rows,
                      pad_id=tokenizer.pad_id, limit=limit,
                      parallelism=data_config.get("mask_parallelism", 1))
  if data_config.get("service_address", ""):
    ds = ds.apply(tf.data.experimental.service.distribute(
        tf.data.experimental.service.ShardingPolicy.OFF, service=data_config.service_address))
    ds = ds.prefetch(2)
  return Batches(ds, rows)


def train_iterator(data_config, tokenizer, *, batch_size: int, process_index: int = 0,
                   process_count: int = 1, start_batch: int = 0, seed: int | None = None,
                   stats: dict | None = None, chunk_rows: int | None = None) -> Iterator[dict]:
  """Infinite iterator of numpy batch dicts (per-host batch_size rows); see module doc.

  chunk_rows: rows masked per TF call (default `default_chunk_rows`); it changes speed
  and memory, never the batches.
  """
  if chunk_rows is not None and chunk_rows < 1:
    raise ValueError(f"chunk_rows={chunk_rows} must be >= 1 (rows masked per TF call), or None "
                     "for the default.")
  spec = validate(data_config, batch_size, process_index, process_count, tokenizer)
  seed = data_config.seed if seed is None else seed
  stats = stats if stats is not None else {}
  return _stream(data_config, tokenizer, spec, "train", batch_size=batch_size,
                 process_index=process_index, process_count=process_count, seed=seed,
                 start_batch=start_batch, stats=stats, chunk_rows=chunk_rows)


def eval_data_config(data_config):
  """data_config with the fixed eval masking (config.data.eval_masking / eval_mask_rate) if set."""
  strategy, rate = data_config.get("eval_masking", ""), data_config.get("eval_mask_rate", 0.0)
  if not strategy and not rate:
    return data_config
  data_config = copy.deepcopy(data_config)
  data_config.masking = strategy or data_config.masking
  data_config.mask_rate = rate or data_config.mask_rate
  if "corrupt_rate" in data_config:
    data_config.corrupt_rate = 0.0
  return data_config


def eval_iterator(data_config, tokenizer, *, batch_size: int, process_index: int = 0,
                  process_count: int = 1, num_batches: int, seed: int | None = None,
                  stats: dict | None = None) -> Iterator[dict]:
  """Finite iterator over the held-out split; same batches and masks on every call.

  config.data.eval_masking / eval_mask_rate, when set, replace the training masking and rate
  here (corruption = prediction), e.g. 15% token masking for every cell of an ablation."""
  data_config = eval_data_config(data_config)
  spec = validate(data_config, batch_size, process_index, process_count, tokenizer)
  seed = (data_config.seed if seed is None else seed) + EVAL_SEED_OFFSET
  stats = stats if stats is not None else {}
  return _stream(data_config, tokenizer, spec, "eval", batch_size=batch_size,
                 process_index=process_index, process_count=process_count, seed=seed,
                 start_batch=0, stats=stats, limit=num_batches)
