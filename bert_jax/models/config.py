"""Model configuration: a frozen dataclass built from `config.model`, and its validation.

The Flax modules hold a `ModelConfig` (hashable, immutable) rather than a ConfigDict.
Its fields and defaults are the schema of `config.model` too (configs/common.py::model_config
is built from them); key names follow HuggingFace's config.json.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

FAMILIES = ("bert", "albert", "electra")
# HF activation names we support (transformers.activations.ACT2FN spelling).
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish",
               "tanh")
DTYPES = ("float32", "bfloat16")
# Attention: xla / cudnn through jax.nn.dot_product_attention (cudnn: fused flash attention on
# NVIDIA GPUs, bf16 only); explicit: einsum + softmax written out. Attention-probability dropout
# in training, and distillation's attention scores, always take the explicit path.
ATTENTION_IMPLS = ("xla", "cudnn", "explicit")
# Rematerialisation of each transformer layer in the backward pass (jax.checkpoint policies).
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")
# LoRA target kernels of a transformer layer, and shorthands for them.
LORA_TARGETS = ("query", "key", "value", "attention_output", "intermediate", "output")
LORA_SHORTHANDS = {"q": ("query",), "k": ("key",), "v": ("value",), "out": ("attention_output",),
                   "ffn": ("intermediate", "output")}
ADAPTER_PLACEMENTS = ("attention", "ffn")
# Fields set by code, not by a config: configs/common.py::model_config leaves them out of
# config.model (generator_config sets mlm_act).
CODE_ONLY_FIELDS = ("mlm_act",)
# config.model keys a run takes from its own config whatever model it starts from (a fine-tuning's
# starting point, a continued pretraining's checkpoint): regularisation, numerics, memory, PEFT.
RUN_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dtype", "remat", "remat_policy", "scan_layers",
            "attention_impl", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_size",
            "adapter_placement")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Encoder hyperparameters; names follow HuggingFace's config.json where one exists.

  The one place the model's keys and defaults are written: configs/common.py::model_config
  builds `config.model` from these fields (all but CODE_ONLY_FIELDS), in this order.
  """
  family: str = "bert"             # see FAMILIES
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  # gelu (exact erf) | gelu_new / gelu_pytorch_tanh (tanh) | relu | silu; see ACTIVATIONS.
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  # Factorized embedding (ALBERT, ELECTRA); 0 means "same as hidden_size".
  embedding_size: int = 0
  # Cross-layer sharing with ALBERT's semantics: layer i uses group
  # i * num_hidden_groups // num_hidden_layers; each group holds inner_group_num layers.
  # 0 means "num_hidden_layers" (no sharing, BERT).
  num_hidden_groups: int = 0
  inner_group_num: int = 1
  use_pooler: bool = True
  # ELECTRA generator as fractions of the discriminator (reference: hidden 0.25 / 1/3).
  generator_hidden_size: float = 0.25
  generator_layers: float = 1.0
  generator_num_attention_heads: int = 0   # 0: max(1, generator hidden // 64) as the reference
  generator_intermediate_size: int = 0     # 0: 4 * generator hidden
  # Compute dtype (see DTYPES); parameters are always float32.
  dtype: str = "float32"
  # Rematerialise each layer in the backward pass (= remat_policy "full"; kept for old configs).
  remat: bool = False
  # Remat policy (overrides `remat` when set): none | full | dots_saveable (keep matmul outputs,
  # recompute the rest) | dots_with_no_batch_dims_saveable; empty: full if remat else none.
  remat_policy: str = ""
  # Run the layers through one flax.linen.scan (compile time of deep models): params stacked
  # [num_hidden_layers, ...] under encoder/layers, logical axis "layers" (replicated). ALBERT
  # groups keep their tree; inner_group_num > 1 is refused. See README "scan_layers" and
  # layers.Encoder.
  scan_layers: bool = False
  # Attention kernel (ATTENTION_IMPLS): xla | cudnn (fused, NVIDIA GPU, bfloat16) via
  # jax.nn.dot_product_attention, or explicit (einsum + softmax). Training with attention
  # dropout > 0 uses explicit.
  attention_impl: str = "xla"
  # Activation of the MLM transform; "" means hidden_act. HF's ELECTRA generator head
  # hard-codes exact gelu, which `generator_config` sets here. Not a config.model key
  # (CODE_ONLY_FIELDS).
  mlm_act: str = ""
  # Parameter-efficient fine-tuning, off by default (pretraining trees unchanged).
  # LoRA: y += dropout(x) A B * lora_alpha / lora_rank on the targeted kernels of every layer
  # (A: lora_a, B: lora_b = 0 at init). Targets: query, key, value, attention_output,
  # intermediate, output (FFN out); shorthands q, k, v, out, ffn (= intermediate,output).
  lora_rank: int = 0               # 0: off
  lora_alpha: float = 16.0         # the update is scaled by alpha / rank (as PEFT)
  lora_dropout: float = 0.0        # dropout on the LoRA branch input
  lora_targets: str = "query,value"
  # Houlsby bottleneck adapters (H -> adapter_size -> H + skip, identity at init) after the
  # attention output and/or the FFN output, before each residual add + LayerNorm.
  adapter_size: int = 0            # 0: off
  adapter_placement: str = "attention,ffn"   # attention | ffn | attention,ffn

  @property
  def emb_size(self) -> int:
    return self.embedding_size or self.hidden_size

  @property
  def num_groups(self) -> int:
    return self.num_hidden_groups or self.num_hidden_layers

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def remat_mode(self) -> str:
    """The effective remat policy name (REMAT_POLICIES)."""
    return self.remat_policy or ("full" if self.remat else "none")

  @property
  def lora_target_set(self) -> frozenset[str]:
    """The targeted kernels (shorthands expanded); empty when lora_rank is 0."""
    return frozenset(_split_targets(self.lora_targets)) if self.lora_rank else frozenset()

  @property
  def adapter_set(self) -> frozenset[str]:
    """Where adapters go (subset of ADAPTER_PLACEMENTS); empty when adapter_size is 0."""
    if not self.adapter_size:
      return frozenset()
    return frozenset(t.strip() for t in self.adapter_placement.split(",") if t.strip())

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0


def _split_targets(text: str) -> list[str]:
  out = []
  for t in (t.strip() for t in text.split(",")):
    if t:
      out += LORA_SHORTHANDS.get(t, (t,))
  return out


def from_any(cfg: Any) -> ModelConfig:
  """ModelConfig from a ModelConfig, ConfigDict or mapping; unknown keys are an error."""
  if isinstance(cfg, ModelConfig):
    return cfg
  if hasattr(cfg, "to_dict"):
    cfg = cfg.to_dict()
  if not isinstance(cfg, Mapping):
    raise TypeError(f"Expected a model config (ConfigDict or dict), got {type(cfg).__name__}.")
  names = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(cfg) - names)
  if unknown:
    raise ValueError(f"Unknown config.model keys {unknown}; known keys: {sorted(names)}.")
  return ModelConfig(**dict(cfg))


def validate(cfg: Any) -> ModelConfig:
  """Checks a model config; raises ValueError naming the offending `config.model.<key>`."""
  c = from_any(cfg)

  def bad(key: str, why: str):
    raise ValueError(f"config.model.{key}={getattr(c, key)!r}: {why}")

  if c.family not in FAMILIES:
    bad("family", f"must be one of {FAMILIES}.")
  for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "max_position_embeddings", "type_vocab_size"):
    value = getattr(c, key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      bad(key, "must be a positive integer.")
  for key in ("embedding_size", "num_hidden_groups", "generator_num_attention_heads",
              "generator_intermediate_size"):
    value = getattr(c, key)
    if not isinstance(value, int) or value < 0:
      bad(key, "must be a non-negative integer (0 means the default).")
  if not isinstance(c.inner_group_num, int) or c.inner_group_num <= 0:
    bad("inner_group_num", "must be a positive integer.")
  if c.hidden_size % c.num_attention_heads:
    bad("hidden_size", f"must be divisible by num_attention_heads={c.num_attention_heads}.")
  for key in ("hidden_act",) + (("mlm_act",) if c.mlm_act else ()):
    if getattr(c, key) not in ACTIVATIONS:
      bad(key, f"unknown activation; choose one of {ACTIVATIONS}.")
  for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
    if not 0.0 <= getattr(c, key) < 1.0:
      bad(key, "must be in [0, 1).")
  if not c.layer_norm_eps > 0:
    bad("layer_norm_eps", "must be positive.")
  if not c.initializer_range > 0:
    bad("initializer_range", "must be positive.")
  if c.num_groups > c.num_hidden_layers or c.num_hidden_layers % c.num_groups:
    bad("num_hidden_groups",
        f"must divide num_hidden_layers={c.num_hidden_layers} (0 means one group per layer).")
  if c.family == "bert" and (c.num_groups != c.num_hidden_layers or c.inner_group_num != 1):
    bad("num_hidden_groups", "cross-layer sharing is an ALBERT feature; set family='albert'.")
  if c.family == "bert" and c.embedding_size not in (0, c.hidden_size):
    bad("embedding_size", "a factorised embedding is an ALBERT/ELECTRA feature; use 0 for BERT.")
  if c.dtype not in DTYPES:
    bad("dtype", f"must be one of {DTYPES}.")
  if c.remat_policy and c.remat_policy not in REMAT_POLICIES:
    bad("remat_policy", f"must be one of {REMAT_POLICIES} (or empty: config.model.remat decides).")
  if not isinstance(c.scan_layers, bool):
    bad("scan_layers", "must be True or False.")
  if c.scan_layers and c.inner_group_num != 1:
    bad("scan_layers", f"an ALBERT group of inner_group_num={c.inner_group_num} layers cannot be "
        "scanned (one scan step runs one layer); set config.model.scan_layers=False or "
        "config.model.inner_group_num=1.")
  if c.attention_impl not in ATTENTION_IMPLS:
    bad("attention_impl", f"must be one of {ATTENTION_IMPLS}.")
  if c.attention_impl == "cudnn" and c.dtype != "bfloat16":
    bad("attention_impl", "cudnn attention runs in bfloat16 only: set config.model.dtype=bfloat16 "
        "or config.model.attention_impl=xla.")
  if not isinstance(c.lora_rank, int) or isinstance(c.lora_rank, bool) or c.lora_rank < 0:
    bad("lora_rank", "must be a non-negative integer (0 turns LoRA off).")
  if c.lora_rank:
    if not c.lora_alpha > 0:
      bad("lora_alpha", "must be positive (the LoRA update is scaled by lora_alpha / lora_rank).")
    if not 0.0 <= c.lora_dropout < 1.0:
      bad("lora_dropout", "must be in [0, 1).")
    targets = _split_targets(c.lora_targets)
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if not targets or unknown:
      bad("lora_targets", f"needs a comma list of {LORA_TARGETS} or the shorthands "
          f"{sorted(LORA_SHORTHANDS)}" + (f"; unknown {unknown}." if unknown else "."))
  if not isinstance(c.adapter_size, int) or isinstance(c.adapter_size, bool) or c.adapter_size < 0:
    bad("adapter_size", "must be a non-negative integer (0 turns adapters off).")
  if c.adapter_size:
    places = [t.strip() for t in c.adapter_placement.split(",") if t.strip()]
    if not places or set(places) - set(ADAPTER_PLACEMENTS):
      bad("adapter_placement", f"must be a comma list of {ADAPTER_PLACEMENTS}.")
  if c.family == "electra":
    if c.use_pooler:
      bad("use_pooler", "ELECTRA has no pooler (HF ElectraModel); set it to False.")
    if not 0 < c.generator_hidden_size <= 1:
      bad("generator_hidden_size", "must be a fraction in (0, 1] of hidden_size.")
    if not 0 < c.generator_layers <= 1:
      bad("generator_layers", "must be a fraction in (0, 1] of num_hidden_layers.")
    g = generator_config(c, check=False)
    if g.hidden_size % g.num_attention_heads:
      bad("generator_hidden_size", f"gives a generator hidden size {g.hidden_size} not "
          f"divisible by its {g.num_attention_heads} heads (set "
          "config.model.generator_num_attention_heads).")
  return c


def generator_config(cfg: Any, check: bool = True) -> ModelConfig:
  """ELECTRA generator: hidden and depth as fractions of the discriminator.

  As google-research/electra `get_generator_config`: hidden = round(H * fraction),
  intermediate = 4 * hidden, heads = max(1, hidden // 64), layers = round(L * fraction).
  The embedding width is the discriminator's (embeddings are shared).
  """
  c = validate(cfg) if check else from_any(cfg)
  hidden = max(1, int(round(c.hidden_size * c.generator_hidden_size)))
  return dataclasses.replace(
      c, hidden_size=hidden, intermediate_size=c.generator_intermediate_size or 4 * hidden,
      num_attention_heads=c.generator_num_attention_heads or max(1, hidden // 64),
      num_hidden_layers=max(1, int(round(c.num_hidden_layers * c.generator_layers))),
      num_hidden_groups=0, inner_group_num=1, use_pooler=False, embedding_size=c.emb_size,
      mlm_act="gelu")
