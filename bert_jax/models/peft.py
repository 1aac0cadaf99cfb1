"""Parameter-efficient fine-tuning helpers: LoRA merging and the PEFT parameter subset.

The modules themselves live in layers.py (LoRA in `Dense`, `Adapter`), switched on by
config.model.lora_rank / adapter_size. Leaves they add:
  .../<kernel's module>/lora_a   input dims + (rank,)     logical axes: kernel's inputs + "lora"
  .../<kernel's module>/lora_b   (rank,) + output dims    logical axes: "lora" + kernel's outputs
  .../group_{g}_layer_{j}/adapter_{attention,ffn}/{down,up}/{kernel,bias}
Every encoder of a model gets them (ELECTRA pretraining: the generator too). With
config.model.scan_layers they sit in the stacked `layers` subtree with a leading [L] axis.

  merge_lora(model_config, params) -> (config with lora_rank=0, params without lora_* leaves)
  is_peft_path(path) -> bool         a lora_* or adapter_* leaf
  trainable_mask(params) -> pytree of bools: PEFT leaves and everything outside the backbone
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from bert_jax.models import config as config_lib
from bert_jax.models import layers

LORA_LEAVES = ("lora_a", "lora_b")


def has_lora(params: Any) -> bool:
  """Whether any module of the tree holds LoRA factors."""
  if not isinstance(params, dict):
    return False
  return any(k in LORA_LEAVES for k in params) or any(has_lora(v) for v in params.values())


def merge_lora(model_config: Any, params: dict[str, Any]
               ) -> tuple[config_lib.ModelConfig, dict[str, Any]]:
  """Folds every LoRA update into its kernel: W += lora_alpha / lora_rank * A @ B.

  Returns the config with lora_rank=0 and a params tree without lora_a / lora_b leaves,
  i.e. the plain model's tree (adapters, if any, stay). Works on any model's params, in
  either layer layout (scanned layers are merged layer by layer and restacked).
  """
  cfg = config_lib.validate(model_config)
  if has_lora(params) and not cfg.lora_rank:
    raise ValueError("params hold lora_a/lora_b leaves but config.model.lora_rank=0; pass the "
                     "config the LoRA model was built with (its lora_alpha / lora_rank scale).")
  scale = cfg.lora_scale

  def merge(tree):
    if not isinstance(tree, dict):
      return tree
    out = {k: merge(v) for k, v in tree.items() if k not in LORA_LEAVES}
    if "lora_a" in tree:
      a, b = jnp.asarray(tree["lora_a"], jnp.float32), jnp.asarray(tree["lora_b"], jnp.float32)
      delta = jnp.tensordot(a, b, axes=1, precision=jax.lax.Precision.HIGHEST)
      kernel = jnp.asarray(tree["kernel"], jnp.float32)
      if delta.shape != kernel.shape:
        raise ValueError(f"LoRA factors {a.shape} x {b.shape} do not match the kernel "
                         f"{kernel.shape}.")
      out["kernel"] = kernel + scale * delta
    return out

  merged = layers.match_layers(merge(layers.unstack_layers(params)), params)
  return dataclasses.replace(cfg, lora_rank=0), merged


def is_peft_path(path: tuple[str, ...]) -> bool:
  """A LoRA factor or an adapter parameter (path of key names)."""
  return bool(path) and (path[-1] in LORA_LEAVES or any(p.startswith("adapter_") for p in path))


def trainable_mask(params: dict[str, Any]) -> dict[str, Any]:
  """True for PEFT leaves and for every leaf outside "bert" (task heads), else False.

  Meant for the fine-tuning models' trees (ForSequenceClassification, ForQuestionAnswering).

  Use it with optax.masked / a zero-update transform to train only LoRA/adapters + heads.
  """
  def mark(path, _):
    names = tuple(getattr(k, "key", str(k)) for k in path)
    return is_peft_path(names) or names[0] != "bert"

  return jax.tree_util.tree_map_with_path(mark, params)
