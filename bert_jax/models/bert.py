"""BERT / ALBERT pretraining model and the fine-tuning models (all families).

Parameter tree (names are stable; bert_jax/interop maps them to HF names):
  bert/embeddings/{word,position,token_type}_embeddings/embedding, bert/embeddings/LayerNorm
  bert/encoder/embeddings_project (ALBERT, or E != H), bert/encoder/group_{g}_layer_{j}/...,
  bert/encoder/pooler
  mlm/{transform, transform_LayerNorm, bias}, sentence/dense      (PretrainingModel)
  pre_classifier (ELECTRA only), classifier/dense               (ForSequenceClassification)
  qa_outputs (ForQuestionAnswering), classifier/dense (ForTokenClassification)
LoRA / adapter leaves (config.model.lora_rank, adapter_size): see models/peft.py.
With config.model.scan_layers, unshared layers are bert/encoder/layers/... stacked [L, ...]
(models.stack_layers / unstack_layers; see layers.Encoder).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models import config as config_lib
from bert_jax.models import heads
from bert_jax.models import layers

Array = jax.Array


def _prepare(input_ids, input_mask, token_type_ids, segment_ids, position_ids,
             max_positions: int):
  """Defaults for optional inputs, and the [B, 1, L, L] attention mask."""
  if input_ids.shape[-1] > max_positions:
    raise ValueError(f"Sequence length {input_ids.shape[-1]} exceeds "
                     f"config.model.max_position_embeddings={max_positions}; lower "
                     "config.data.max_seq_length or raise max_position_embeddings.")
  if token_type_ids is None:
    token_type_ids = jnp.zeros_like(input_ids)
  if position_ids is None:
    position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
  mask = layers.attention_mask(input_mask, segment_ids)
  return token_type_ids, position_ids, mask


class _ConfigMixin:
  """Accepts a ConfigDict / dict / ModelConfig as `config` and validates it once."""

  def __post_init__(self):
    object.__setattr__(self, "config", config_lib.validate(self.config))
    super().__post_init__()


class BertModel(_ConfigMixin, nn.Module):
  """Embeddings + encoder (+ pooler): the backbone every model below wraps."""
  config: Any

  def setup(self):
    self.embeddings = layers.Embeddings(self.config)
    self.encoder = layers.Encoder(self.config)

  def __call__(self, input_ids, input_mask, token_type_ids=None, segment_ids=None,
               position_ids=None, deterministic: bool = True):
    token_type_ids, position_ids, mask = _prepare(
        input_ids, input_mask, token_type_ids, segment_ids, position_ids,
        self.config.max_position_embeddings)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    return self.encoder(x, mask, deterministic)


class PretrainingModel(_ConfigMixin, nn.Module):
  """BERT / ALBERT: encoder, MLM head tied to the word table, NSP/SOP head."""
  config: Any

  def setup(self):
    self.bert = BertModel(self.config, name="bert")
    self.mlm = heads.MLMHead(self.config)
    if self.config.use_pooler:
      # The reference NSP/SOP heads (google-research/bert, albert) apply no dropout.
      self.sentence = heads.Classifier(self.config, 2, dropout_rate=0.0)

  def __call__(self, input_ids, input_mask, token_type_ids=None, masked_lm_positions=None,
               segment_ids=None, position_ids=None, deterministic: bool = True):
    seq, pooled = self.bert(input_ids, input_mask, token_type_ids, segment_ids, position_ids,
                            deterministic)
    mlm_logits = self.mlm(heads.gather_positions(seq, masked_lm_positions),
                          self.bert.embeddings)
    sentence_logits = None
    if self.config.use_pooler:
      sentence_logits = self.sentence(pooled, deterministic)
    return {"sequence_output": seq, "pooled_output": pooled, "mlm_logits": mlm_logits,
            "sentence_logits": sentence_logits}


class ForSequenceClassification(_ConfigMixin, nn.Module):
  """Sentence(-pair) classification: pooled [CLS] (BERT/ALBERT) or ELECTRA's head.

  ELECTRA (no pooler) uses HF ElectraClassificationHead: dense on [CLS], gelu, out.
  """
  config: Any
  num_labels: int = 2

  @nn.compact
  def __call__(self, input_ids, input_mask, token_type_ids=None, segment_ids=None,
               position_ids=None, deterministic: bool = True):
    cfg = self.config
    seq, pooled = BertModel(cfg, name="bert")(input_ids, input_mask, token_type_ids,
                                              segment_ids, position_ids, deterministic)
    if pooled is None:
      x = nn.Dropout(cfg.hidden_dropout_prob)(seq[:, 0], deterministic=deterministic)
      x = layers.dense(cfg, cfg.hidden_size, ("embed", "hidden"), "pre_classifier")(x)
      pooled = layers.activation("gelu")(x)
    return heads.Classifier(cfg, self.num_labels, name="classifier")(pooled, deterministic)


class ForQuestionAnswering(_ConfigMixin, nn.Module):
  """SQuAD-style span head: per-token start and end logits, [B, L] each."""
  config: Any

  @nn.compact
  def __call__(self, input_ids, input_mask, token_type_ids=None, segment_ids=None,
               position_ids=None, deterministic: bool = True):
    cfg = self.config
    seq, _ = BertModel(cfg, name="bert")(input_ids, input_mask, token_type_ids, segment_ids,
                                         position_ids, deterministic)
    logits = layers.dense(cfg, 2, ("embed", "classes"), "qa_outputs")(seq)
    logits = logits.astype(jnp.float32)
    return logits[..., 0], logits[..., 1]


class ForTokenClassification(_ConfigMixin, nn.Module):
  """Per-token labels (NER, POS): dropout and a dense layer on every position, [B, L, num_labels]
  (HF *ForTokenClassification)."""
  config: Any
  num_labels: int = 2

  @nn.compact
  def __call__(self, input_ids, input_mask, token_type_ids=None, segment_ids=None,
               position_ids=None, deterministic: bool = True):
    seq, _ = BertModel(self.config, name="bert")(input_ids, input_mask, token_type_ids, segment_ids,
                                                 position_ids, deterministic)
    return heads.Classifier(self.config, self.num_labels, name="classifier")(seq, deterministic)
