"""Output heads: MLM (tied decoder), sentence pair (NSP/SOP), ELECTRA discriminator, fine-tuning."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models import layers
from bert_jax.models.config import ModelConfig

Array = jax.Array


def gather_positions(x: Array, positions: Array | None) -> Array:
  """[B, L, H] at positions [B, P] -> [B, P, H]; all positions when None."""
  if positions is None:
    return x
  return jnp.take_along_axis(x, positions[..., None].astype(jnp.int32), axis=1)


class MLMHead(nn.Module):
  """dense H -> E, activation, LayerNorm(E), logits against the tied E table + output bias.

  Runs only on the gathered masked positions [B, P] (static shape), never on [B, L, V].
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, embeddings: layers.Embeddings) -> Array:
    cfg = self.cfg
    x = layers.dense(cfg, cfg.emb_size, ("embed", layers.EMB_AXIS), "transform")(x)
    x = layers.activation(cfg.mlm_act or cfg.hidden_act)(x)
    x = layers.layer_norm(cfg, layers.EMB_AXIS, "transform_LayerNorm")(x)
    logits = embeddings.attend(x.astype(layers.dtype_of(cfg)))
    bias = self.param("bias", layers.bias_init(("vocab",)), (cfg.vocab_size,),
                      jnp.float32)
    logits = logits.astype(jnp.float32) + bias
    return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


class Classifier(nn.Module):
  """Dropout then dense to `num_labels` (NSP/SOP head with 2 labels, fine-tuning heads)."""
  cfg: ModelConfig
  num_labels: int
  dropout_rate: float | None = None   # None: hidden_dropout_prob

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    rate = self.cfg.hidden_dropout_prob if self.dropout_rate is None else self.dropout_rate
    x = nn.Dropout(rate)(x, deterministic=deterministic)
    logits = layers.dense(self.cfg, self.num_labels, ("embed", "classes"), "dense")(x)
    return logits.astype(jnp.float32)


class DiscriminatorHead(nn.Module):
  """ELECTRA replaced-token detection: dense H -> H, activation, dense -> 1 per token."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    x = layers.dense(cfg, cfg.hidden_size, ("embed", "hidden"), "dense")(x)
    x = layers.activation(cfg.hidden_act)(x)
    x = layers.dense(cfg, 1, ("hidden", "classes"), "prediction")(x)
    return x[..., 0].astype(jnp.float32)
