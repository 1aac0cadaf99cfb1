"""Transformer building blocks shared by BERT, ALBERT and ELECTRA (Flax Linen).

Shapes: B batch, L length, H hidden, E embedding width, N heads, D head dim, I intermediate.
Every parameter carries logical axis names; activations are constrained with logical names
too. Mapping names to mesh axes happens only in bert_jax/sharding.py.

Parameter-efficient fine-tuning (config.model.lora_rank / adapter_size, off by default): a
LoRA-targeted Dense adds `lora_a` (input dims + rank, axes: the kernel's input axes + "lora")
and `lora_b` (rank + output dims, axes "lora" + the kernel's output axes); a layer with
adapters adds `adapter_attention/{down,up}` and `adapter_ffn/{down,up}` (bottleneck axis
"adapter"). The presets map neither "lora" nor "adapter", so those axes stay replicated.

Scanned layers (config.model.scan_layers, off by default): the Encoder runs its layers through
flax.linen.scan. Unshared layers (BERT, ELECTRA, ALBERT with a group per layer) hold ONE
stacked parameter set `layers/...` with a leading [num_hidden_layers] axis, logical name
"layers" (never mapped to a mesh axis: replicated). ALBERT's shared groups keep their unrolled
tree (`group_{g}_layer_0`), scanned with the group's parameters broadcast. `stack_layers` /
`unstack_layers` / `match_layers` convert between the two trees: outside a model (HF files,
converted directories, warm-start sources) params are in the unrolled layout.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.models.config import ModelConfig

Array = jax.Array

# "embed" is the residual width H. "hidden" names any other width-sized axis that must not
# share a mesh axis with "embed" in the same kernel: the factorised embedding width E
# (ALBERT/ELECTRA), the pooler and MLM-transform outputs.
EMB_AXIS = "hidden"


def activation(name: str) -> Callable[[Array], Array]:
  """HF ACT2FN semantics: `gelu` is exact (erf), `gelu_new`/`gelu_pytorch_tanh` use tanh."""
  return {
      "gelu": functools.partial(jax.nn.gelu, approximate=False),
      "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
      "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
      "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
      "relu": jax.nn.relu,
      "silu": jax.nn.silu,
      "swish": jax.nn.silu,
      "tanh": jnp.tanh,
  }[name]


def dtype_of(cfg: ModelConfig):
  return jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32


def kernel_init(cfg: ModelConfig, axes: tuple[str, ...]):
  # google-research/bert: truncated normal with stddev initializer_range.
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(cfg.initializer_range), axes)


def bias_init(axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


LORA_AXIS = "lora"        # the LoRA rank axis
ADAPTER_AXIS = "adapter"  # the adapter bottleneck axis
SCAN_AXIS = "layers"      # the stacked-layer axis of scanned params (config.model.scan_layers)
SCANNED = "layers"        # the Encoder child that holds the stacked layers


def lora_a_init(axes: tuple[str, ...]):
  """PEFT's kaiming_uniform(a=sqrt(5)) on A: uniform(+-1/sqrt(fan_in)), fan_in = input dims."""

  def init(key, shape, dtype=jnp.float32):
    bound = 1.0 / float(np.sqrt(np.prod(shape[:-1])))
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return nn.with_logical_partitioning(init, axes)


def _contract(x: Array, w: Array, n: int) -> Array:
  """x [..., in (n dims)] . w [in (n dims), ...]."""
  return jax.lax.dot_general(x, w, ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))),
                                    ((), ())))


class Dense(nn.Module):
  """Dense over the last `n_in` input dims to `features` (int or tuple), params made at full rank.

  (flax's DenseGeneral initialises a flattened 2-D kernel and reshapes it, which breaks a
  3-name logical partitioning under jit with a mesh, hence this small module.) With `lora`,
  adds y += dropout(x) A B * lora_alpha / lora_rank (A: `lora_a`, B: `lora_b`, B starts at 0).
  """
  cfg: ModelConfig
  features: int | tuple[int, ...]
  axes: tuple[str, ...]
  n_in: int = 1
  lora: bool = False
  zero_init: bool = False   # kernel starts at 0 (adapter up-projections)

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    cfg = self.cfg
    feats = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    in_shape = x.shape[x.ndim - self.n_in:]
    init = (nn.with_logical_partitioning(nn.initializers.zeros_init(), self.axes)
            if self.zero_init else kernel_init(cfg, self.axes))
    kernel = self.param("kernel", init, in_shape + feats, jnp.float32)
    bias = self.param("bias", bias_init(self.axes[-len(feats):]), feats, jnp.float32)
    dtype = dtype_of(cfg)
    y = _contract(x.astype(dtype), kernel.astype(dtype), self.n_in) + bias.astype(dtype)
    if not self.lora:
      return y
    r = cfg.lora_rank
    in_axes, out_axes = self.axes[:self.n_in], self.axes[self.n_in:]
    a = self.param("lora_a", lora_a_init(in_axes + (LORA_AXIS,)), in_shape + (r,), jnp.float32)
    b = self.param("lora_b", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), (LORA_AXIS,) + out_axes), (r,) + feats, jnp.float32)
    h = nn.Dropout(cfg.lora_dropout)(x, deterministic=deterministic)
    h = _contract(h.astype(dtype), a.astype(dtype), self.n_in)
    h = _contract(h, b.astype(dtype), 1)
    return y + (h * cfg.lora_scale).astype(dtype)


def dense(cfg: ModelConfig, features, axes: tuple[str, ...], name: str, axis=-1,
          lora_target: str = ""):
  """Dense with logical names on kernel (all axes) and bias (output axes).

  `lora_target` (one of config.LORA_TARGETS) adds LoRA params when config.model.lora_targets
  names it and lora_rank > 0.
  """
  n_in = len(axis) if isinstance(axis, tuple) else 1
  return Dense(cfg, features, axes, n_in, lora=lora_target in cfg.lora_target_set, name=name)


class Adapter(nn.Module):
  """Houlsby bottleneck adapter: x + up(act(down(x))), H -> adapter_size -> H.

  `up` starts at zero, so a fresh adapter is the identity.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    h = dense(cfg, cfg.adapter_size, ("embed", ADAPTER_AXIS), "down")(x)
    h = activation(cfg.hidden_act)(h)
    h = Dense(cfg, cfg.hidden_size, (ADAPTER_AXIS, "embed"), zero_init=True, name="up")(h)
    return x + h


def layer_norm(cfg: ModelConfig, axis_name: str, name: str):
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=dtype_of(cfg), param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
      bias_init=bias_init((axis_name,)), name=name)


def attention_mask(input_mask: Array, segment_ids: Array | None) -> Array:
  """Boolean [B, 1, L, L]: may query i attend key j.

  Key j must be a real token. With packing, i and j must also share a segment id. Padding
  queries (segment 0) see all real keys, as in HF, so their (ignored) outputs stay finite
  and the unpacked case (segment_ids == input_mask) is exactly HF's padding mask.
  """
  keys = input_mask[:, None, None, :].astype(bool)
  if segment_ids is None:
    return keys
  q = segment_ids[:, None, :, None]
  k = segment_ids[:, None, None, :]
  return keys & ((q == k) | (q == 0))


class Embed(nn.Module):
  """A lookup table [num, features] with logical names (param name "embedding")."""
  cfg: ModelConfig
  num: int
  axes: tuple[str, str]

  def setup(self):
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(
            nn.initializers.truncated_normal(self.cfg.initializer_range), self.axes),
        (self.num, self.cfg.emb_size), jnp.float32)

  def __call__(self, ids: Array) -> Array:
    # Keep only the row (vocab) sharding for the gather: a gather from a table sharded on its
    # width makes XLA reshard the [B, L, E] result inefficiently ("involuntary full
    # rematerialization") under the fsdp presets; a row-sharded gather is a masked local
    # lookup plus an all-reduce.
    table = nn.with_logical_constraint(self.embedding, (self.axes[0], None))
    return jnp.take(table, ids, axis=0).astype(dtype_of(self.cfg))

  def attend(self, x: Array) -> Array:
    """x @ table.T: [..., E] -> [..., num] (the tied MLM decoder)."""
    dtype = dtype_of(self.cfg)
    return jnp.dot(x.astype(dtype), self.embedding.astype(dtype).T)


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout (width E)."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    # With a projection E -> H the table width is its own logical axis.
    width = "embed" if cfg.family == "bert" else EMB_AXIS
    self.width_axis = width
    self.word_embeddings = Embed(cfg, cfg.vocab_size, ("vocab", width))
    self.position_embeddings = Embed(cfg, cfg.max_position_embeddings, ("position", width))
    self.token_type_embeddings = Embed(cfg, cfg.type_vocab_size, ("type_vocab", width))
    self.LayerNorm = layer_norm(cfg, width, "LayerNorm")
    self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
    x = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
         + self.token_type_embeddings(token_type_ids))
    x = self.LayerNorm(x)
    x = self.dropout(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", self.width_axis))

  def attend(self, x: Array) -> Array:
    """Logits against the word table (tied MLM decoder): [..., E] -> [..., V]."""
    return self.word_embeddings.attend(x)


class SelfAttention(nn.Module):
  """Multi-head self-attention with HF numerics (masked logits pushed to dtype min)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool = True) -> Array:
    cfg = self.cfg
    n, d = cfg.num_attention_heads, cfg.head_dim
    proj = lambda name: dense(cfg, (n, d), ("embed", "heads", "kv"), name,  # noqa: E731
                              lora_target=name)(x, deterministic)
    q, k, v = proj("query"), proj("key"), proj("value")
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
    k = nn.with_logical_constraint(k, ("batch", "length", "heads", "kv"))
    v = nn.with_logical_constraint(v, ("batch", "length", "heads", "kv"))
    dropout = cfg.attention_probs_dropout_prob > 0 and not deterministic
    if cfg.attention_impl != "explicit" and not dropout and not self.is_mutable_collection("intermediates"):
      # jax.nn.dot_product_attention has no dropout on the probabilities and returns no scores:
      # training with attention dropout and distillation's attention term take the path below.
      ctx = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=1.0 / float(np.sqrt(d)),
                                         implementation=cfg.attention_impl)
    else:
      ctx = self._explicit(q, k, v, mask, deterministic)
    ctx = nn.with_logical_constraint(ctx, ("batch", "length", "heads", "kv"))
    return dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "output", axis=(-2, -1),
                 lora_target="attention_output")(ctx, deterministic)

  def _explicit(self, q: Array, k: Array, v: Array, mask: Array, deterministic: bool) -> Array:
    cfg, d = self.cfg, self.cfg.head_dim
    # Softmax in float32 whatever the compute dtype.
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(d))
    # Kept only when "intermediates" is mutable (distillation's attention term, bert_jax.tasks.distill).
    self.sow("intermediates", "attention_scores", logits)
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
    return jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v)


class TransformerLayer(nn.Module):
  """Post-LN block: x + attn -> LN -> x + FFN -> LN (BERT / ALBERT / ELECTRA).

  With adapters, each sublayer's (dropped-out) output goes through its adapter before the
  residual add and LayerNorm, as Houlsby et al. (2019).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool = True) -> Array:
    cfg = self.cfg

    def sublayer_out(h, place):
      h = nn.Dropout(cfg.hidden_dropout_prob)(h, deterministic=deterministic)
      return Adapter(cfg, name=f"adapter_{place}")(h) if place in cfg.adapter_set else h

    h = SelfAttention(cfg, name="attention")(x, mask, deterministic)
    x = layer_norm(cfg, "embed", "attention_LayerNorm")(x + sublayer_out(h, "attention"))
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    h = dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate",
              lora_target="intermediate")(x, deterministic)
    h = activation(cfg.hidden_act)(h)
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    h = dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output", lora_target="output")(
        h, deterministic)
    x = layer_norm(cfg, "embed", "output_LayerNorm")(x + sublayer_out(h, "ffn"))
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Encoder(nn.Module):
  """Projection E -> H (if needed), the layer stack with ALBERT sharing, optional pooler.

  Layer i of num_hidden_layers runs group i * G // num_hidden_layers (G groups), and a group
  runs its inner_group_num layers in order, as HF AlbertTransformer. BERT/ELECTRA are G =
  num_hidden_layers, inner 1. Parameters: group_{g}_layer_{j}; shared groups are called
  several times (one parameter set, no copies). With config.model.scan_layers, see
  `_scan_layers` (inner_group_num must be 1).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array,
               deterministic: bool = True) -> tuple[Array, Array | None]:
    cfg = self.cfg
    # HF ALBERT always has embedding_hidden_mapping_in; ELECTRA only when E != H.
    if cfg.family == "albert" or x.shape[-1] != cfg.hidden_size:
      x = dense(cfg, cfg.hidden_size, (EMB_AXIS, "embed"), "embeddings_project")(x)
      x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    layer_cls = TransformerLayer
    if cfg.remat_mode != "none":
      policy = None if cfg.remat_mode == "full" else getattr(jax.checkpoint_policies, cfg.remat_mode)
      # static_argnums counts self: (self, x, mask, deterministic).
      layer_cls = nn.remat(TransformerLayer, prevent_cse=True, static_argnums=(3,), policy=policy)
    if cfg.scan_layers:
      x = _scan_layers(cfg, layer_cls, x, mask, deterministic)
    else:
      groups = [[layer_cls(cfg, name=f"group_{g}_layer_{j}")
                 for j in range(cfg.inner_group_num)] for g in range(cfg.num_groups)]
      for i in range(cfg.num_hidden_layers):
        for layer in groups[i * cfg.num_groups // cfg.num_hidden_layers]:
          x = layer(x, mask, deterministic)
    pooled = None
    if cfg.use_pooler:
      pooled = dense(cfg, cfg.hidden_size, ("embed", "hidden"), "pooler")(x[:, 0])
      pooled = jnp.tanh(pooled)
    return x, pooled


def _scan_layers(cfg: ModelConfig, layer_cls, x: Array, mask: Array, deterministic: bool) -> Array:
  """The layer stack as flax.linen.scan over (remat'ed) layers, as MaxText: one traced layer.

  Unshared (G = num_hidden_layers): one module `layers` whose params are stacked on a leading
  axis (logical name "layers"); params and dropout rngs are split per step. Shared ALBERT
  groups (G < num_hidden_layers, runs of L / G consecutive layers): group g is scanned L / G
  times with its parameters broadcast, so the tree stays group_{g}_layer_0. Sown
  intermediates (distillation's hidden states and attention scores) are stacked per step.
  """

  def body(layer, carry, mask):
    return layer(carry, mask, deterministic), None

  if cfg.num_groups == cfg.num_hidden_layers:
    scan = nn.scan(body, variable_axes={"params": 0, "intermediates": 0},
                   split_rngs={"params": True, "dropout": True}, in_axes=(nn.broadcast,),
                   length=cfg.num_hidden_layers, metadata_params={nn.PARTITION_NAME: SCAN_AXIS})
    return scan(layer_cls(cfg, name=SCANNED), x, mask)[0]
  scan = nn.scan(body, variable_broadcast="params", variable_axes={"intermediates": 0},
                 split_rngs={"params": False, "dropout": True}, in_axes=(nn.broadcast,),
                 length=cfg.num_hidden_layers // cfg.num_groups)
  for g in range(cfg.num_groups):
    x = scan(layer_cls(cfg, name=f"group_{g}_layer_0"), x, mask)[0]
  return x


# ---------------------------------------------------------------------------------------------
# Unrolled <-> scanned parameter trees (config.model.scan_layers).
# ---------------------------------------------------------------------------------------------
_LAYER = re.compile(r"^group_(\d+)_layer_(\d+)$")


def _layer_keys(tree: dict[str, Any]) -> list[str]:
  return [k for k in tree if _LAYER.match(k)]


def _stack(xs):
  return np.stack(xs) if all(isinstance(x, np.ndarray) for x in xs) else jnp.stack(xs)


def _stack_encoder(tree: dict[str, Any]) -> dict[str, Any]:
  keys = _layer_keys(tree)
  index = {int(_LAYER.match(k).group(1)): int(_LAYER.match(k).group(2)) for k in keys}
  if sorted(index) != list(range(len(keys))) or any(index.values()):
    raise ValueError(f"stack_layers: layers {sorted(keys)} are not group_0_layer_0 .. "
                     f"group_{{L-1}}_layer_0 (config.model.scan_layers needs one layer per group "
                     "and inner_group_num=1).")
  layers = [tree[f"group_{i}_layer_0"] for i in range(len(keys))]
  out = {k: v for k, v in tree.items() if k not in keys}
  out[SCANNED] = jax.tree.map(lambda *xs: _stack(xs), *layers)
  return out


def _unstack_encoder(tree: dict[str, Any]) -> dict[str, Any]:
  stacked = tree[SCANNED]
  n = jax.tree.leaves(stacked)[0].shape[0]
  out = {k: v for k, v in tree.items() if k != SCANNED}
  for i in range(n):
    out[f"group_{i}_layer_0"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return out


def stack_layers(params: dict[str, Any]) -> dict[str, Any]:
  """The scanned tree of unrolled params: in every encoder, group_{i}_layer_0 (i < L) become
  one `layers` subtree with a leading [L] axis. For unshared layers only: a shared ALBERT
  tree is already its scanned layout (use `match_layers` when unsure)."""
  if not isinstance(params, dict):
    return params
  if _layer_keys(params):
    return _stack_encoder(params)
  return {k: stack_layers(v) for k, v in params.items()}


def unstack_layers(params: dict[str, Any]) -> dict[str, Any]:
  """The unrolled tree of scanned params (inverse of `stack_layers`; unrolled trees pass)."""
  if not isinstance(params, dict):
    return params
  if SCANNED in params:
    return _unstack_encoder(params)
  return {k: unstack_layers(v) for k, v in params.items()}


def match_layers(params: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
  """`params` (possibly partial) in the layout of `like`, encoder by encoder: stacked where
  `like` holds `layers`, unrolled where it holds group_{g}_layer_{j}. For warm starts."""
  if not isinstance(params, dict) or not isinstance(like, dict):
    return params
  if SCANNED in like and _layer_keys(params):
    return _stack_encoder(params)
  if _layer_keys(like) and SCANNED in params:
    return _unstack_encoder(params)
  return {k: match_layers(v, like[k]) if k in like else v for k, v in params.items()}
