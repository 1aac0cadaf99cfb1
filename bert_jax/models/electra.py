"""ELECTRA: generator (MLM) and discriminator (replaced-token detection) in one module.

As google-research/electra with shared embeddings: both towers use ONE embeddings module
(word, position, token-type tables and their LayerNorm, width E); each tower projects E to
its own hidden size when they differ. The generator's MLM head is tied to the shared table.

Parameter tree:
  embeddings/...                                   shared
  generator_encoder/{embeddings_project?, group_{g}_layer_0/...}, generator_mlm/...
  discriminator_encoder/{embeddings_project?, group_{g}_layer_0/...}, discriminator_head/...
With config.model.scan_layers each tower's layers are one stacked `layers/...` subtree.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from bert_jax.models import config as config_lib
from bert_jax.models import heads
from bert_jax.models import layers
from bert_jax.models.bert import _ConfigMixin, _prepare

Array = jax.Array


class ElectraPretrainingModel(_ConfigMixin, nn.Module):
  """`config` is the discriminator's; the generator's derives from it (config.generator_config)."""
  config: Any

  def setup(self):
    gen = config_lib.generator_config(self.config)
    self.embeddings = layers.Embeddings(self.config)
    self.generator_encoder = layers.Encoder(gen)
    self.generator_mlm = heads.MLMHead(gen)
    self.discriminator_encoder = layers.Encoder(self.config)
    self.discriminator_head = heads.DiscriminatorHead(self.config)

  def generator(self, input_ids, input_mask, token_type_ids=None, masked_lm_positions=None,
                segment_ids=None, position_ids=None, deterministic: bool = True) -> Array:
    """MLM logits [B, P, V] at masked_lm_positions ([B, L, V] when None)."""
    token_type_ids, position_ids, mask = _prepare(
        input_ids, input_mask, token_type_ids, segment_ids, position_ids,
        self.config.max_position_embeddings)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    seq, _ = self.generator_encoder(x, mask, deterministic)
    return self.generator_mlm(heads.gather_positions(seq, masked_lm_positions), self.embeddings)

  def discriminator(self, input_ids, input_mask, token_type_ids=None, segment_ids=None,
                    position_ids=None, deterministic: bool = True) -> Array:
    """Replaced-token logits [B, L] (positive: replaced)."""
    return self.discriminator_logits_and_states(
        input_ids, input_mask, token_type_ids, segment_ids, position_ids, deterministic)[0]

  def discriminator_logits_and_states(self, input_ids, input_mask, token_type_ids=None,
                                      segment_ids=None, position_ids=None,
                                      deterministic: bool = True) -> tuple[Array, Array]:
    """(logits [B, L], last hidden states [B, L, H]) of the discriminator."""
    token_type_ids, position_ids, mask = _prepare(
        input_ids, input_mask, token_type_ids, segment_ids, position_ids,
        self.config.max_position_embeddings)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    seq, _ = self.discriminator_encoder(x, mask, deterministic)
    return self.discriminator_head(seq), seq

  def __call__(self, input_ids, input_mask, token_type_ids=None, masked_lm_positions=None,
               segment_ids=None, position_ids=None, deterministic: bool = True):
    """Runs both towers on the same input (used for init and smoke tests)."""
    mlm_logits = self.generator(input_ids, input_mask, token_type_ids, masked_lm_positions,
                                segment_ids, position_ids, deterministic)
    disc_logits, seq = self.discriminator_logits_and_states(
        input_ids, input_mask, token_type_ids, segment_ids, position_ids, deterministic)
    return {"mlm_logits": mlm_logits, "disc_logits": disc_logits, "sequence_output": seq}
