"""BERT / ALBERT / ELECTRA models (Flax Linen) and the model API the rest of bert_jax uses.

  validate(model_config) -> ModelConfig     raises ValueError naming config.model.<key>
  build(model_config) -> PretrainingModel (bert, albert) | ElectraPretrainingModel (electra)
  dummy_batch(model_config, batch_size, seq_len, max_predictions) -> dict of numpy arrays
  init_params(model, rng, batch) -> plain float32 params pytree
  logical_specs(model, batch) -> same pytree of logical PartitionSpecs (nothing allocated)
  abstract_params(model, batch) -> ShapeDtypeStructs of the params; param_count(tree) -> int
  model_inputs(model, batch) -> the batch keys the model's __call__ takes
  backbone_params(params) -> {"bert": {...}} of any pretraining model, for the fine-tuning models
  stack_layers(params) / unstack_layers(params) -> the scanned / unrolled tree of the encoder
      layers (config.model.scan_layers); match_layers(params, like) -> params in like's layout

Logical axis names: "embed" is the residual width H; "hidden" any other width-sized axis (the
factorised embedding E of ALBERT/ELECTRA, pooler / MLM-transform / discriminator-head
outputs); "heads", "kv" (head dim), "mlp", "vocab", "position", "type_vocab", "classes";
activations use "batch", "length"; scanned layers (config.model.scan_layers) add "layers" in front
of every stacked layer param. HF checkpoints: bert_jax.interop.hf.
"""

from __future__ import annotations

import inspect
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax.models.bert import BertModel
from bert_jax.models.bert import ForQuestionAnswering
from bert_jax.models.bert import ForSequenceClassification
from bert_jax.models.bert import ForTokenClassification
from bert_jax.models.bert import PretrainingModel
from bert_jax.models.config import ModelConfig
from bert_jax.models.config import generator_config
from bert_jax.models.config import validate
from bert_jax.models.electra import ElectraPretrainingModel
from bert_jax.models.layers import match_layers
from bert_jax.models.layers import stack_layers
from bert_jax.models.layers import unstack_layers

__all__ = [
    "BertModel", "ElectraPretrainingModel", "ForQuestionAnswering", "ForSequenceClassification", "ForTokenClassification",
    "ModelConfig", "PretrainingModel", "backbone_params", "build", "dummy_batch",
    "generator_config", "init_params", "logical_specs", "match_layers", "param_count",
    "stack_layers", "unstack_layers", "validate",
]

def build(model_config: Any) -> nn.Module:
  """The pretraining model of config.model.family (validated first)."""
  cfg = validate(model_config)
  if cfg.family == "electra":
    return ElectraPretrainingModel(cfg)
  return PretrainingModel(cfg)


def dummy_batch(model_config: Any, batch_size: int = 2, seq_len: int = 16,
                max_predictions: int = 4) -> dict[str, np.ndarray]:
  """A batch of the pretraining data contract (bert_jax.batch.pretraining; zeros, all real)."""
  del model_config  # shapes only depend on the sizes; kept for a uniform signature
  return batch_lib.dummy(batch_lib.pretraining(seq_len, max_predictions), batch_size)


def model_inputs(fn, batch: dict[str, Any]) -> dict[str, Any]:
  """The keys of `batch` that `fn` (a module, whose __call__ is used, or a module method)
  takes as keyword arguments: the signature is the one list of model inputs."""
  fn = fn.__call__ if isinstance(fn, nn.Module) else fn
  names = [p for p in inspect.signature(fn).parameters if p not in ("self", "deterministic")]
  return {k: batch[k] for k in names if k in batch}


def _init(model: nn.Module, rng: jax.Array, batch: dict[str, Any]):
  return model.init({"params": rng}, **model_inputs(model, batch), deterministic=True)


def init_params(model: nn.Module, rng: jax.Array, batch: dict[str, Any]):
  """Random float32 params, unboxed (no LogicallyPartitioned wrappers)."""
  return nn.meta.unbox(_init(model, rng, batch)["params"])


def logical_specs(model: nn.Module, batch: dict[str, Any]):
  """Logical PartitionSpec for every param (same tree as init_params), via eval_shape."""
  abstract = jax.eval_shape(lambda r: _init(model, r, batch), jax.random.key(0))
  return nn.get_partition_spec(abstract)["params"]


def abstract_params(model: nn.Module, batch: dict[str, Any]):
  """ShapeDtypeStructs of the params (nothing allocated)."""
  abstract = jax.eval_shape(lambda r: _init(model, r, batch), jax.random.key(0))
  return nn.meta.unbox(abstract["params"])


def param_count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def backbone_params(params: dict[str, Any]) -> dict[str, Any]:
  """{"bert": {"embeddings", "encoder"}} from PretrainingModel or ELECTRA params.

  Use it to warm-start ForSequenceClassification / ForQuestionAnswering (their heads stay
  freshly initialised). ELECTRA's backbone is the discriminator with the shared embeddings.
  """
  if "bert" in params:
    return {"bert": params["bert"]}
  if "discriminator_encoder" in params:
    return {"bert": {"embeddings": params["embeddings"],
                     "encoder": params["discriminator_encoder"]}}
  raise ValueError(f"Not pretraining params: top-level keys {sorted(params)}.")
