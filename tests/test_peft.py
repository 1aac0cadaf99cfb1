"""LoRA and bottleneck adapters: identity at init, parameter counts, merging, sharded steps."""

import dataclasses

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import models
from bert_jax.models import peft

SMALL = dict(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
             intermediate_size=64, max_position_embeddings=64)
FAMILIES = {
    "bert": dict(family="bert"),
    "albert": dict(family="albert", embedding_size=16, num_hidden_groups=1, inner_group_num=2),
    "electra": dict(family="electra", embedding_size=16, use_pooler=False),
}
ALL_TARGETS = "q,k,v,out,ffn"


def config(family="bert", **kw):
  return models.validate({**SMALL, **FAMILIES[family], **kw})


def batch_for(cfg, b=2, l=12):
  rng = np.random.default_rng(0)
  batch = models.dummy_batch(cfg, b, l)
  batch["input_ids"] = rng.integers(5, cfg.vocab_size, (b, l)).astype(np.int32)
  batch["input_mask"][1, 9:] = 0
  batch["token_type_ids"][:, 6:] = 1
  return {k: batch[k] for k in ("input_ids", "input_mask", "token_type_ids")}


def flat(tree):
  return {"/".join(getattr(k, "key", str(k)) for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflat(d):
  out = {}
  for k, v in d.items():
    node = out
    *head, last = k.split("/")
    for h in head:
      node = node.setdefault(h, {})
    node[last] = v
  return out


def init(cfg, batch, num_labels=3, seed=0):
  model = models.ForSequenceClassification(cfg, num_labels)
  return model, models.init_params(model, jax.random.key(seed), batch)


def with_base(peft_params, base_params):
  """The PEFT tree with every non-PEFT leaf taken from the plain model's params."""
  p, b = flat(peft_params), flat(base_params)
  assert set(b) == {k for k in p if not peft.is_peft_path(tuple(k.split("/")))}
  return unflat({k: b.get(k, v) for k, v in p.items()})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fresh_lora_and_adapters_are_the_plain_model(family):
  plain = config(family)
  cfg = dataclasses.replace(plain, lora_rank=4, lora_targets=ALL_TARGETS, adapter_size=5)
  batch = batch_for(plain)
  model0, base = init(plain, batch)
  model, params = init(cfg, batch, seed=1)
  params = with_base(params, base)
  want = model0.apply({"params": base}, **batch)
  got = model.apply({"params": params}, **batch)
  np.testing.assert_allclose(got, want, atol=1e-6)
  # Default config: no PEFT leaf at all (pretraining trees unchanged).
  assert not any(peft.is_peft_path(tuple(k.split("/"))) for k in flat(base))
  # Perturbing B (or the adapter up-projection) changes the outputs (hidden states: the
  # fresh head's logits are tiny).
  backbone = models.BertModel(cfg)
  run = jax.jit(lambda p: backbone.apply({"params": p["bert"]}, **batch)[0])
  seq = lambda p: np.asarray(run(p))  # noqa: E731
  np.testing.assert_allclose(seq(params), np.asarray(models.BertModel(plain).apply(
      {"params": base["bert"]}, **batch)[0]), atol=1e-5)
  rng = np.random.default_rng(0)
  for leaf in ("lora_b", "adapter_ffn/up/kernel", "adapter_attention/up/kernel"):
    bumped = unflat({k: v + rng.normal(0, 0.5, v.shape).astype(np.float32) if k.endswith(leaf)
                     else v for k, v in flat(params).items()})
    assert np.abs(seq(bumped) - seq(params)).max() > 1e-3, leaf


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_parameter_counts_match_formulas(family):
  r, m = 4, 5
  cfg = config(family, lora_rank=r, lora_targets="query,value,out,ffn", adapter_size=m,
               adapter_placement="attention,ffn")
  shapes = flat(models.abstract_params(models.ForSequenceClassification(cfg, 3), batch_for(cfg)))
  h, i = cfg.hidden_size, cfg.intermediate_size
  layers = cfg.num_groups * cfg.inner_group_num   # ALBERT: shared layers hold one set
  # Per layer: query, value, attention_output (H -> H each), intermediate (H -> I), output (I -> H).
  lora = layers * r * (3 * (h + h) + (h + i) + (i + h))
  adapters = layers * 2 * (2 * h * m + m + h)
  count = lambda pred: sum(int(np.prod(s.shape)) for k, s in shapes.items() if pred(k))  # noqa: E731
  assert count(lambda k: k.rsplit("/", 1)[-1] in ("lora_a", "lora_b")) == lora
  assert count(lambda k: "/adapter_" in k) == adapters
  assert all(k.startswith("bert/encoder/group_") for k in shapes
             if peft.is_peft_path(tuple(k.split("/"))))
  # Targets: only query/value by default; the key stays plain.
  cfg = config(family, lora_rank=r)
  shapes = flat(models.abstract_params(models.ForSequenceClassification(cfg, 3), batch_for(cfg)))
  targeted = {k.split("/")[-2] for k in shapes if k.endswith("lora_a")}
  assert targeted == {"query", "value"}
  lora_a = shapes["bert/encoder/group_0_layer_0/attention/query/lora_a"]
  assert lora_a.shape == (h, r)
  assert shapes["bert/encoder/group_0_layer_0/attention/query/lora_b"].shape == (
      r, cfg.num_attention_heads, cfg.head_dim)


def test_lora_init_logical_axes_and_dropout():
  cfg = config("bert", lora_rank=4, lora_targets=ALL_TARGETS, lora_dropout=0.5,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  batch = batch_for(cfg)
  model, params = init(cfg, batch)
  layer = params["bert"]["encoder"]["group_0_layer_0"]
  a = np.asarray(layer["attention"]["output"]["lora_a"])     # [N, D, r], fan_in = H
  assert a.shape == (3, 16, 4) and 0.5 / np.sqrt(48) < np.abs(a).max() <= 1 / np.sqrt(48)
  assert not np.any(np.asarray(layer["intermediate"]["lora_b"]))
  specs = models.logical_specs(model, batch)["bert"]["encoder"]["group_0_layer_0"]
  P = jax.sharding.PartitionSpec
  assert specs["attention"]["query"]["lora_a"] == P("embed", "lora")
  assert specs["attention"]["query"]["lora_b"] == P("lora", "heads", "kv")
  assert specs["attention"]["output"]["lora_a"] == P("heads", "kv", "lora")
  assert specs["output"]["lora_b"] == P("lora", "embed")
  # LoRA dropout acts only when not deterministic (and only once B != 0).
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 0.3 if getattr(p[-1], "key", "") == "lora_b" else v, params)
  det = model.apply({"params": params}, **batch)
  same = model.apply({"params": params}, **batch, rngs={"dropout": jax.random.key(1)})
  np.testing.assert_array_equal(det, same)
  drop = model.apply({"params": params}, **batch, deterministic=False,
                     rngs={"dropout": jax.random.key(1)})
  assert np.abs(np.asarray(drop - det)).max() > 1e-3


@pytest.mark.parametrize("family,targets", [("bert", ALL_TARGETS), ("electra", "query,value")])
def test_merge_lora_equals_unmerged(family, targets):
  cfg = config(family, lora_rank=3, lora_alpha=6.0, lora_targets=targets)
  batch = batch_for(cfg)
  model, params = init(cfg, batch)
  rng = np.random.default_rng(1)
  # Every leaf perturbed (B no longer 0, a head with non-tiny logits).
  params = jax.tree.map(lambda v: v + rng.normal(0, 0.2, v.shape).astype(np.float32), params)
  merged_cfg, merged = peft.merge_lora(cfg, params)
  assert merged_cfg.lora_rank == 0 and not peft.has_lora(merged)
  plain = models.ForSequenceClassification(merged_cfg, 3)
  assert jax.tree.structure(merged) == jax.tree.structure(
      models.abstract_params(plain, batch))
  want = model.apply({"params": params}, **batch)
  got = plain.apply({"params": merged}, **batch)
  base = unflat({k: v for k, v in flat(params).items() if not k.endswith(("lora_a", "lora_b"))})
  assert np.abs(np.asarray(want - plain.apply({"params": base}, **batch))).max() > 1e-2
  print("merged vs unmerged max |diff|", np.abs(np.asarray(got - want)).max(),
        "logits max", np.abs(np.asarray(want)).max())
  np.testing.assert_allclose(got, want, atol=1e-5)
  with pytest.raises(ValueError, match="lora_rank=0"):
    peft.merge_lora(merged_cfg, params)


def test_trainable_mask_and_bad_configs():
  cfg = config("electra", lora_rank=2, adapter_size=3, adapter_placement="ffn")
  batch = batch_for(cfg)
  mask = flat(peft.trainable_mask(models.init_params(
      models.ForSequenceClassification(cfg, 3), jax.random.key(0), batch)))
  on = sorted(k for k, v in mask.items() if v)
  assert all(k.endswith(("lora_a", "lora_b")) or "/adapter_ffn/" in k
             or k.startswith(("classifier/", "pre_classifier/")) for k in on)
  assert "bert/encoder/group_0_layer_0/adapter_ffn/up/kernel" in on
  assert not any("adapter_attention" in k for k in mask)
  assert not mask["bert/encoder/group_0_layer_0/attention/query/kernel"]
  for kw, match in ((dict(lora_rank=-1), "lora_rank"),
                    (dict(lora_rank=4, lora_targets="query,qkv"), r"lora_targets.*'qkv'"),
                    (dict(lora_rank=4, lora_targets=""), "lora_targets"),
                    (dict(lora_rank=4, lora_alpha=0.0), "lora_alpha"),
                    (dict(lora_rank=4, lora_dropout=1.0), "lora_dropout"),
                    (dict(adapter_size=8, adapter_placement="ffn,pooler"), "adapter_placement")):
    with pytest.raises(ValueError, match=f"config.model.{match}"):
      config("bert", **kw)


@pytest.mark.slow
def test_jitted_lora_step_under_sharded_mesh_matches_single_device():
  """LoRA params get shardings from their logical names (fsdp_tp: data=2, fsdp=2, tensor=2; the
  "lora" axis stays replicated) and a jitted LoRA-only SGD step equals the unsharded one."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  if len(jax.devices()) < 8:
    pytest.skip("needs the 8 fake CPU devices of conftest.py")
  cfg = config("bert", hidden_size=64, num_attention_heads=4, vocab_size=128, num_hidden_layers=1,
               lora_rank=4,
               lora_targets=ALL_TARGETS, adapter_size=8, lora_dropout=0.1)
  batch = batch_for(cfg, b=8)
  labels = np.arange(8, dtype=np.int32) % 3
  model = models.ForSequenceClassification(cfg, 3)
  mesh_cfg = ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2, preset="fsdp_tp",
                                            logical_axis_rules=""))
  mesh, rules = sharding.make_mesh(mesh_cfg), sharding.rules_from_config(mesh_cfg)
  shardings = sharding.logical_to_sharding(models.logical_specs(model, batch),
                                           models.abstract_params(model, batch), mesh, rules)
  layer = shardings["bert"]["encoder"]["group_0_layer_0"]
  P = jax.sharding.PartitionSpec
  assert layer["attention"]["query"]["lora_a"].spec == P("fsdp", None)
  assert layer["attention"]["query"]["lora_b"].spec == P(None, "tensor", None)
  assert layer["intermediate"]["lora_b"].spec == P(None, "tensor")
  for preset in sharding.PRESETS:  # no preset shards the rank axis
    assert sharding.resolve(("lora", "embed"), None, None, sharding.PRESETS[preset])[0] is None

  mask = peft.trainable_mask(models.abstract_params(model, batch))

  def step(params, x, key):
    def loss_fn(p):
      logits = model.apply({"params": p}, **x, deterministic=False, rngs={"dropout": key})
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    new = jax.tree.map(lambda p, g, m: p - 0.5 * g if m else p, params, grads, mask)
    return new, loss

  key = jax.random.key(3)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params = jax.jit(lambda r: models.init_params(model, r, batch),
                     out_shardings=shardings)(jax.random.key(0))
    new, loss = jax.jit(step, out_shardings=(shardings, None))(params, batch, key)
  host = jax.device_get(params)
  ref_new, ref_loss = jax.jit(step)(host, batch, key)
  assert abs(float(loss) - float(ref_loss)) < 1e-5
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(new)[0], jax.tree.leaves(ref_new)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=str(path))
  moved = flat(jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                            jax.device_get(new), host))
  assert moved["bert/encoder/group_0_layer_0/attention/query/lora_b"]
  assert not moved["bert/encoder/group_0_layer_0/attention/query/kernel"]
