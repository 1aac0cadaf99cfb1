"""Warm starts: parameters taken from a checkpoint that is not this run's own (no optimizer state)."""

from __future__ import annotations

import jax
import numpy as np


def overwrite(params, source_params, source: str, fix: str):
  """`params` (sharded arrays) with every leaf that `source_params` holds at the same path
  replaced (shapes must match); the others keep their values. Returns (params, n_loaded).

  The source's encoder layers are first brought to the layout of `params` (stacked for a model
  with config.model.scan_layers, unrolled otherwise), so either kind of source fits either."""
  from bert_jax import models  # pylint: disable=g-import-not-at-top

  source_params = models.match_layers(source_params, params)
  flat_new = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(source_params)[0]}
  n_loaded = 0

  def take(path, old):
    nonlocal n_loaded
    key = jax.tree_util.keystr(path)
    if key not in flat_new:
      return old
    new = np.asarray(flat_new[key])
    if new.shape != old.shape:
      raise ValueError(f"{source}: {key} has shape {new.shape}, the model wants {old.shape}; {fix}")
    n_loaded += 1
    return jax.device_put(new.astype(old.dtype), old.sharding)

  out = jax.tree_util.tree_map_with_path(take, params)
  if n_loaded == 0:
    raise ValueError(f"{source}: none of its {len(flat_new)} tensors matches a parameter of the model; {fix}")
  if jax.process_index() == 0:
    print(f"Warm start: {n_loaded}/{len(flat_new)} tensors from {source}", flush=True)
  return out, n_loaded


def from_hf(config, params):
  """Overwrites `params` leaves with those of config.init.hf_checkpoint (shapes must match)."""
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top

  hf_config, hf_params = hf.load_hf_checkpoint(config.init.hf_checkpoint)
  if hf_config["family"] != config.model.family:
    raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r} holds a "
                     f"{hf_config['family']} model but config.model.family={config.model.family!r}; "
                     f"use configs/{hf_config['family']}.py or another checkpoint.")
  return overwrite(params, hf_params, f"config.init.hf_checkpoint={config.init.hf_checkpoint!r}",
                   "make config.model match the checkpoint's config.json.")[0]
