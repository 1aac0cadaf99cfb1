"""Optimizers and learning-rate schedules from config.optimizer.

  adamw       optax.adamw (bias-corrected Adam, decoupled weight decay)
  bert_adamw  google-research/bert AdamWeightDecayOptimizer: Adam WITHOUT bias correction,
              update = m / (sqrt(v) + eps) + wd * param, then * lr
  lamb        ALBERT's LAMB: the bert_adamw update rescaled per tensor by ||param|| / ||update||
              (1 when either norm is 0); LayerNorm and bias tensors get neither weight decay
              nor the trust ratio.
All three clip gradients by global norm first (config.optimizer.clip_grad_norm; 0 disables).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("adamw", "bert_adamw", "lamb")
SCHEDULES = ("linear", "polynomial", "constant")


def validate(opt_config, num_steps: int) -> None:
  """Raises ValueError naming the config.optimizer key that is wrong."""
  if opt_config.name not in OPTIMIZERS:
    raise ValueError(f"Unknown config.optimizer.name={opt_config.name!r}; choose one of {OPTIMIZERS}.")
  if opt_config.schedule not in SCHEDULES:
    raise ValueError(f"Unknown config.optimizer.schedule={opt_config.schedule!r}; choose one of {SCHEDULES}.")
  if opt_config.learning_rate <= 0:
    raise ValueError(f"config.optimizer.learning_rate must be > 0, got {opt_config.learning_rate}.")
  if opt_config.warmup_steps < 0 or opt_config.warmup_steps > num_steps:
    raise ValueError(f"config.optimizer.warmup_steps={opt_config.warmup_steps} must be in "
                     f"[0, config.train.num_steps={num_steps}].")
  if opt_config.clip_grad_norm < 0:
    raise ValueError("config.optimizer.clip_grad_norm must be >= 0 (0 disables clipping).")


def schedule(opt_config, num_steps: int) -> optax.Schedule:
  """BERT reference schedule: polynomial decay over ALL num_steps, overridden by linear warmup.

  lr(t) = lr * t / warmup                                 for t < warmup
        = (lr - end) * (1 - t / num_steps) ** power + end  otherwise ("linear" is power 1)
  """
  lr, end = float(opt_config.learning_rate), float(opt_config.end_learning_rate)
  warmup = int(opt_config.warmup_steps)
  power = 1.0 if opt_config.schedule == "linear" else float(opt_config.power)

  def fn(step):
    t = jnp.asarray(step, jnp.float32)
    if opt_config.schedule == "constant":
      decayed = jnp.full_like(t, lr)
    else:
      frac = jnp.clip(t / max(num_steps, 1), 0.0, 1.0)
      decayed = (lr - end) * (1.0 - frac) ** power + end
    if warmup > 0:
      decayed = jnp.where(t < warmup, lr * t / warmup, decayed)
    return decayed

  return fn


def decay_mask(params):
  """True for leaves that get weight decay: everything but biases and LayerNorm parameters."""

  def keep(path, _):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    leaf = names[-1] if names else ""
    in_norm = any("layernorm" in n.lower() or n.lower().startswith("ln") for n in names[:-1])
    return not (leaf in ("bias", "scale") or in_norm)

  return jax.tree_util.tree_map_with_path(keep, params)


class ScaleByAdamNoBCState(NamedTuple):
  mu: optax.Updates
  nu: optax.Updates


def scale_by_adam_no_bias_correction(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """m / (sqrt(v) + eps) with raw (not bias-corrected) moments, as BERT/ALBERT/ELECTRA do."""

  def init(params):
    zeros = lambda p: jnp.zeros_like(p, jnp.float32)
    return ScaleByAdamNoBCState(jax.tree.map(zeros, params), jax.tree.map(zeros, params))

  def update(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return out, ScaleByAdamNoBCState(mu, nu)

  return optax.GradientTransformation(init, update)


def layer_lr_scales(opt_config, params, num_layers: int):
  """Per-leaf lr multipliers decay ** (num_layers + 2 - depth) as google-research/electra
  `_get_layer_lrs`: embeddings (and their projection) at depth 0, transformer layer i at
  i + 1 (a shared ALBERT group at its top layer's depth), everything else (pooler, task
  heads) at num_layers + 2. None when config.optimizer.layerwise_lr_decay is 1; frozen
  (None) leaves stay None. A scanned layer stack (config.model.scan_layers: `layers`, leading
  axis [L]) gets an [L, 1, ...] array, layer i at depth i + 1, the same factors per layer."""
  decay = float(opt_config.get("layerwise_lr_decay", 1.0))
  if decay == 1.0:
    return None
  if not 0 < decay < 1:
    raise ValueError(f"config.optimizer.layerwise_lr_decay={decay} must be in (0, 1] (1 disables).")
  flat = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  groups = sorted({int(k.split("group_")[1].split("_")[0]) for k in flat if "group_" in k})
  n_groups, n_layers = (max(groups) + 1 if groups else 1), num_layers

  def depth(path):
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    if any(n in ("embeddings", "embeddings_project") for n in names):
      return 0
    if "layers" in names:  # scanned stack: one depth per layer (see `scale`)
      return None
    for n in names:
      if n.startswith("group_") and "_layer_" in n:
        g = int(n.split("_")[1])
        # Layer i runs group i * G // L: the group's top layer is the last such i.
        return max(i for i in range(n_layers) if i * n_groups // n_layers == g) + 1
    return n_layers + 2

  def scale(path, leaf):
    d = depth(path)
    if d is not None:
      return decay ** (n_layers + 2 - d)
    factors = [decay ** (n_layers + 2 - (i + 1)) for i in range(leaf.shape[0])]
    return np.asarray(factors, np.float32).reshape((-1,) + (1,) * (len(leaf.shape) - 1))

  return jax.tree_util.tree_map_with_path(scale, params)


def build(opt_config, num_steps: int, lr_scales=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) for config.optimizer; `lr_scales` (a tree of floats
  like the params, e.g. layer_lr_scales) multiplies each leaf's final update."""
  validate(opt_config, num_steps)
  lr_fn = schedule(opt_config, num_steps)
  b1, b2, eps, wd = (float(opt_config[k]) for k in ("b1", "b2", "eps", "weight_decay"))
  chain = []
  if opt_config.clip_grad_norm > 0:
    chain.append(optax.clip_by_global_norm(float(opt_config.clip_grad_norm)))
  if opt_config.name == "adamw":
    chain.append(optax.adamw(lr_fn, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=decay_mask))
  else:
    chain.append(scale_by_adam_no_bias_correction(b1, b2, eps))
    if wd > 0:
      chain.append(optax.add_decayed_weights(wd, mask=decay_mask))
    if opt_config.name == "lamb":
      chain.append(optax.masked(optax.scale_by_trust_ratio(), decay_mask))
    chain.append(optax.scale_by_learning_rate(lr_fn))
  if lr_scales is not None:
    chain.append(optax.stateless(lambda updates, params=None: jax.tree.map(lambda u, f: u * f, updates, lr_scales)))
  return optax.chain(*chain), lr_fn
