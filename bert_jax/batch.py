"""The batch contract: one declaration of a task's features, everything else derived from it.

A task declares `features: dict[str, Feature]` (per-example shape, dtype and logical axes);
from that one spec come the global arrays fed to the step (`to_global`), their shardings
(`shardings`), zero batches for init (`dummy`) and abstract batches for AOT compilation
(`abstract`). A key the spec lacks is never fed; a key the spec names but a batch lacks is
an error naming the key.

The pretraining data contract (what bert_jax.data.pipeline yields) is `pretraining(L, P)`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding

from bert_jax import sharding


@dataclasses.dataclass(frozen=True)
class Feature:
  """One batch key: per-example shape (without the batch dim), dtype, logical axes of those dims."""
  shape: tuple[int, ...]
  dtype: str
  axes: tuple[str | None, ...] = ()

  def __post_init__(self):
    if len(self.axes) not in (0, len(self.shape)):
      raise ValueError(f"Feature axes {self.axes} do not match shape {self.shape}.")

  @property
  def logical(self) -> tuple[str | None, ...]:
    """Logical names of every dim, batch first."""
    return ("batch",) + (self.axes or (None,) * len(self.shape))


Spec = Mapping[str, Feature]


def pretraining(seq_len: int, max_predictions: int) -> dict[str, Feature]:
  """Rows of bert_jax.data.pipeline: masked tokens, fixed prediction slots, sentence label."""
  tok = lambda dtype="int32": Feature((seq_len,), dtype, ("length",))  # noqa: E731
  slot = lambda dtype="int32": Feature((max_predictions,), dtype, (None,))  # noqa: E731
  return {
      "input_ids": tok(), "input_mask": tok(), "token_type_ids": tok(), "segment_ids": tok(),
      "position_ids": tok(),
      "masked_lm_positions": slot(), "masked_lm_ids": slot(), "masked_lm_weights": slot("float32"),
      "next_sentence_labels": Feature((), "int32"),
  }


def dummy(spec: Spec, batch_size: int) -> dict[str, np.ndarray]:
  """A zero batch of the spec; masks are ones, position ids count up (valid model input)."""
  out = {}
  for k, f in spec.items():
    x = np.zeros((batch_size,) + f.shape, f.dtype)
    if k in ("input_mask", "segment_ids"):
      x[:] = 1
    elif k == "position_ids":
      x[:] = np.arange(f.shape[-1], dtype=f.dtype)
    out[k] = x
  return out


def shardings(spec: Spec, mesh, rules) -> dict[str, NamedSharding]:
  """NamedShardings of the global batch: the logical axes resolved by the mesh rules."""
  return {k: NamedSharding(mesh, sharding.resolve(f.logical, None, mesh, rules)) for k, f in spec.items()}


def abstract(spec: Spec, batch_size: int, mesh=None, rules=None) -> dict[str, jax.ShapeDtypeStruct]:
  """ShapeDtypeStructs of a global batch (with shardings when a mesh is given)."""
  sh = shardings(spec, mesh, rules) if mesh is not None else {}
  return {k: jax.ShapeDtypeStruct((batch_size,) + f.shape, np.dtype(f.dtype), sharding=sh.get(k))
          for k, f in spec.items()}


def select(spec: Spec, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The spec's keys of a host batch, checked for presence, shape and dtype kind."""
  out = {}
  for k, f in spec.items():
    if k not in batch:
      raise KeyError(f"The input batch lacks {k!r} (its keys: {sorted(batch)}); the task's "
                     f"batch spec needs {sorted(spec)}.")
    x = np.asarray(batch[k])
    if x.shape[1:] != f.shape:
      raise ValueError(f"Batch key {k!r} has per-example shape {x.shape[1:]}, the spec says {f.shape}.")
    out[k] = x.astype(f.dtype, copy=False)
  return out


def to_global(spec: Spec, batch: Mapping[str, np.ndarray], mesh, rules) -> dict[str, jax.Array]:
  """Global arrays from this host's rows of the batch (each host feeds only its own slice)."""
  sh = shardings(spec, mesh, rules)
  return {k: jax.make_array_from_process_local_data(sh[k], v) for k, v in select(spec, batch).items()}
