r"""SpanBERT's span-boundary objective (SBO; Joshi et al. 2020, arXiv 1907.10529, section 3.2).

  python -m bert_jax.main --config=configs/spanbert.py:tiny,runlocal --workdir=runs/spanbert

For each masked span x_s..x_e, every token x_i in it is also predicted from the encoder outputs
of the two tokens just outside the span and a learned embedding of its position in the span:
  h0 = [x_{s-1}; x_{e+1}; p_{i-s+1}]
  h1 = LayerNorm(GeLU(W1 h0)),  y_i = LayerNorm(GeLU(W2 h1))
  logits_i = y_i . E^T + b      (E: the word table, tied as the MLM decoder is)
loss = MLM + SBO (each a mean over the prediction slots), with span masking and no NSP
(configs/spanbert.py). The spans come from the batch alone: a span is a maximal run of
consecutive masked positions (prediction slots with weight > 0), so two spans that touch are
read as one, and its boundaries are the tokens just outside the run (a [CLS] or [SEP] at the
ends of a segment; clipped to the row). Relative positions beyond
config.objective.sbo_max_targets - 1 share the last embedding row. The task is the MLM task
with this head added: same data contract, sharding by logical names, resumable checkpoints.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import models
from bert_jax.models import heads
from bert_jax.models import layers
from bert_jax.tasks import base
from bert_jax.tasks import pretraining


def span_boundaries(positions, weights, seq_len: int):
  """(left, right, offset), each [B, P]: for every prediction slot, the positions of the tokens
  just outside its span and its 1-based place in the span. Padding slots (weight 0) get
  (0, 0, 1) - they are weighted out of the loss."""
  B, P = positions.shape
  real = weights > 0
  big = jnp.iinfo(jnp.int32).max
  order = jnp.argsort(jnp.where(real, positions, big), axis=-1)  # real slots by position, padding last
  pos = jnp.take_along_axis(positions, order, -1).astype(jnp.int32)
  r = jnp.take_along_axis(real, order, -1)
  no = jnp.zeros((B, 1), bool)
  prev_joins = jnp.concatenate([no, r[:, :-1] & (pos[:, :-1] == pos[:, 1:] - 1)], -1)  # slot continues a run
  next_joins = jnp.concatenate([r[:, 1:] & (pos[:, 1:] == pos[:, :-1] + 1), no], -1)
  idx = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
  first = jax.lax.cummax(jnp.where(prev_joins, 0, idx), axis=1)           # first slot of the run
  last = jax.lax.cummin(jnp.where(next_joins, P - 1, idx), axis=1, reverse=True)  # last slot of the run
  left = jnp.clip(jnp.take_along_axis(pos, first, -1) - 1, 0, seq_len - 1)
  right = jnp.clip(jnp.take_along_axis(pos, last, -1) + 1, 0, seq_len - 1)
  offset = idx - first + 1
  inverse = jnp.argsort(order, axis=-1)
  unsort = lambda x: jnp.where(real, jnp.take_along_axis(x, inverse, -1), 0)  # noqa: E731
  return unsort(left), unsort(right), jnp.where(real, unsort(offset), 1)


class BoundaryHead(nn.Module):
  """The SBO head: two boundary states and a relative-position embedding -> vocabulary logits."""
  cfg: Any
  max_targets: int

  @nn.compact
  def __call__(self, left, right, offset, embeddings: layers.Embeddings):
    cfg = self.cfg
    table = self.param("position_embeddings", nn.with_logical_partitioning(
        nn.initializers.truncated_normal(cfg.initializer_range), (None, "embed")),
                       (self.max_targets, cfg.hidden_size), jnp.float32)
    pos = jnp.take(table, jnp.minimum(offset, self.max_targets - 1), axis=0).astype(left.dtype)
    x = jnp.concatenate([left, right, pos], -1)
    x = layers.dense(cfg, cfg.hidden_size, (None, "embed"), "dense_1")(x)
    x = layers.layer_norm(cfg, "embed", "LayerNorm_1")(layers.activation("gelu")(x))
    x = layers.dense(cfg, cfg.emb_size, ("embed", layers.EMB_AXIS), "dense_2")(x)
    x = layers.layer_norm(cfg, layers.EMB_AXIS, "LayerNorm_2")(layers.activation("gelu")(x))
    logits = embeddings.attend(x.astype(layers.dtype_of(cfg)))
    bias = self.param("bias", layers.bias_init(("vocab",)), (cfg.vocab_size,), jnp.float32)
    return nn.with_logical_constraint(logits.astype(jnp.float32) + bias, ("batch", "length", "vocab"))


class SpanBoundaryModel(models.PretrainingModel):
  """BERT's pretraining model (encoder, MLM, pooler/NSP head) plus the SBO head ("sbo")."""
  max_targets: int = 20

  def setup(self):
    super().setup()
    self.sbo = BoundaryHead(self.config, self.max_targets)

  def __call__(self, input_ids, input_mask, token_type_ids=None, masked_lm_positions=None,
               masked_lm_weights=None, segment_ids=None, position_ids=None, deterministic: bool = True):
    out = super().__call__(input_ids, input_mask, token_type_ids, masked_lm_positions, segment_ids,
                           position_ids, deterministic)
    seq = out["sequence_output"]
    positions = jnp.zeros(input_ids.shape[:1] + (1,), jnp.int32) if masked_lm_positions is None else masked_lm_positions
    weights = jnp.ones(positions.shape, jnp.float32) if masked_lm_weights is None else masked_lm_weights
    left, right, offset = span_boundaries(positions, weights, input_ids.shape[1])
    out["sbo_logits"] = self.sbo(heads.gather_positions(seq, left), heads.gather_positions(seq, right), offset,
                                 self.bert.embeddings)
    return out


class SpanBoundary(pretraining.Pretraining):
  """MLM + SBO (no sentence loss); the data contract of bert_jax.data.pipeline with span masking."""

  best_metric = "eval/loss"
  fresh_heads = ("SBO head",)

  def __init__(self, config):
    super().__init__(config)
    self.model = SpanBoundaryModel(models.validate(config.model), int(config.objective.sbo_max_targets))

  @classmethod
  def validate(cls, config) -> None:
    super().validate(config)
    if config.model.family == "electra":
      raise ValueError("config.objective.name='sbo' needs a BERT or ALBERT model (config.model.family); "
                       "use configs/spanbert.py.")
    if config.objective.sentence_loss != "none":
      raise ValueError(f"config.objective.name='sbo' trains without a sentence loss (SpanBERT): set "
                       f"config.objective.sentence_loss=none (got {config.objective.sentence_loss!r}).")
    if config.data.masking != "span":
      raise ValueError(f"config.objective.name='sbo' predicts masked spans from their boundaries: set "
                       f"config.data.masking=span (got {config.data.masking!r}).")
    if config.objective.get("sbo_max_targets", 0) < 1:
      raise ValueError("config.objective.sbo_max_targets must be >= 1 (positions in a span, SpanBERT: 20); "
                       "use configs/spanbert.py.")

  def _losses(self, params, batch, rng, deterministic):
    out = self.model.apply({"params": params}, **models.model_inputs(self.model, batch), deterministic=deterministic,
                           rngs=None if deterministic else {"dropout": rng})
    ids, w = batch["masked_lm_ids"], batch["masked_lm_weights"]
    mlm, metrics = pretraining.mlm_loss(out["mlm_logits"], ids, w)
    sbo, sbo_metrics = pretraining.mlm_loss(out["sbo_logits"], ids, w)
    metrics.update({"sbo_" + k[len("mlm_"):]: v for k, v in sbo_metrics.items()})
    loss = mlm + sbo
    metrics["loss"] = base.pair(loss, 1.0)
    return loss, metrics

  def loss(self, params, batch, rng, deterministic: bool = False, frozen=None):
    del frozen
    return self._losses(params, batch, rng, deterministic)

  def eval_step(self, params, batch, rng, frozen=None):
    del frozen
    metrics = self._losses(params, batch, rng, True)[1]
    return metrics, {"masked_lm_ids": batch["masked_lm_ids"], "masked_lm_weights": batch["masked_lm_weights"]}

  def train_line(self, values):
    return super().train_line(values) + f" | sbo_accuracy {values['sbo_accuracy']:.3f}"

  def eval_line(self, values):
    return super().eval_line(values) + f" | sbo accuracy {values['sbo_accuracy']:.4f}"
