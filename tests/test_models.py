"""Model API smoke tests: build/init/specs/apply for every family, dropout, remat, packing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import models

SMALL = dict(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
             intermediate_size=64, max_position_embeddings=64)
FAMILIES = {
    "bert": dict(family="bert"),
    "albert": dict(family="albert", embedding_size=16, num_hidden_groups=1, inner_group_num=2),
    "electra": dict(family="electra", embedding_size=16, generator_hidden_size=0.5,
                    use_pooler=False),
}


def make(family, **kw):
  cfg = models.validate({**SMALL, **FAMILIES[family], **kw})
  return cfg, models.build(cfg)


def random_batch(cfg, b=2, l=12, p=3, seed=0):
  rng = np.random.default_rng(seed)
  batch = models.dummy_batch(cfg, b, l, p)
  batch["input_ids"] = rng.integers(5, cfg.vocab_size, (b, l)).astype(np.int32)
  batch["input_mask"][1, 9:] = 0          # padding in row 1
  batch["segment_ids"] = batch["input_mask"].copy()
  batch["token_type_ids"][:, 6:] = 1
  batch["masked_lm_positions"] = rng.integers(0, 9, (b, p)).astype(np.int32)
  return batch


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_init_specs_apply(family):
  cfg, model = make(family)
  batch = random_batch(cfg)
  params = models.init_params(model, jax.random.key(0), batch)
  specs = models.logical_specs(model, batch)
  # Same tree; every param has one logical name per dimension; all float32.
  assert jax.tree.structure(params) == jax.tree.structure(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))):
    assert p.dtype == jnp.float32 and len(s) == p.ndim and all(a for a in s), (p.shape, s)
  inputs = models.model_inputs(model, batch)
  out = model.apply({"params": params}, **inputs)
  assert out["mlm_logits"].shape == (2, 3, cfg.vocab_size)
  if family == "electra":
    assert out["disc_logits"].shape == (2, 12)
    disc = model.apply({"params": params}, **{k: v for k, v in inputs.items()
                                              if k != "masked_lm_positions"},
                       method=model.discriminator)
    np.testing.assert_allclose(disc, out["disc_logits"], atol=1e-6)
  else:
    assert out["sequence_output"].shape == (2, 12, 48)
    assert out["pooled_output"].shape == (2, 48)
    assert out["sentence_logits"].shape == (2, 2)
  for x in jax.tree.leaves(out):
    assert np.all(np.isfinite(np.asarray(x)))


def test_albert_sharing_has_one_param_set_per_group():
  cfg, model = make("albert", num_hidden_layers=4, num_hidden_groups=2, inner_group_num=1)
  params = models.init_params(model, jax.random.key(0), random_batch(cfg))
  layer_keys = sorted(k for k in params["bert"]["encoder"] if k.startswith("group_"))
  assert layer_keys == ["group_0_layer_0", "group_1_layer_0"]


def test_dropout_only_with_rng_and_remat_matches():
  cfg, model = make("bert", hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3,
                    num_hidden_layers=1)
  batch = random_batch(cfg)
  params = models.init_params(model, jax.random.key(0), batch)
  inputs = models.model_inputs(model, batch)
  a = model.apply({"params": params}, **inputs)["sequence_output"]
  b = model.apply({"params": params}, **inputs, deterministic=True,
                  rngs={"dropout": jax.random.key(1)})["sequence_output"]
  np.testing.assert_array_equal(a, b)
  c = model.apply({"params": params}, **inputs, deterministic=False,
                  rngs={"dropout": jax.random.key(1)})["sequence_output"]
  assert np.abs(np.asarray(a - c)).max() > 1e-3

  _, remat_model = make("bert", hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3,
                        num_hidden_layers=1, remat=True)

  def loss(p, m):
    out = m.apply({"params": p}, **inputs, deterministic=False,
                  rngs={"dropout": jax.random.key(1)})
    return jnp.sum(out["mlm_logits"] ** 2)

  # One jitted program for both gradients: much faster on CPU than eager grads.
  g1, g2 = jax.jit(lambda p: (jax.grad(loss)(p, model), jax.grad(loss)(p, remat_model)))(params)
  for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", pytest.param("electra", marks=pytest.mark.slow)])
def test_packed_rows_match_examples_run_alone(family):
  """Two examples packed into one row (segment + position ids) == each run alone."""
  cfg, model = make(family)
  rng = np.random.default_rng(1)
  lens, L = (5, 4), 12
  alone, packed = [], models.dummy_batch(cfg, 1, L, 1)
  packed["input_ids"][:] = 0
  packed["input_mask"][:] = 0
  packed["segment_ids"][:] = 0
  packed["position_ids"][:] = 0
  start = 0
  for k, n in enumerate(lens):
    b = models.dummy_batch(cfg, 1, L, 1)
    b["input_ids"][0, :n] = rng.integers(5, cfg.vocab_size, n)
    b["input_mask"][0, n:] = 0
    b["segment_ids"] = b["input_mask"].copy()
    b["token_type_ids"][0, 3:n] = 1
    alone.append(b)
    sl = slice(start, start + n)
    for key in ("input_ids", "token_type_ids"):
      packed[key][0, sl] = b[key][0, :n]
    packed["input_mask"][0, sl] = 1
    packed["segment_ids"][0, sl] = k + 1
    packed["position_ids"][0, sl] = np.arange(n)
    start += n
  params = models.init_params(model, jax.random.key(0), packed)

  def run(batch):
    inputs = dict(models.model_inputs(model, batch), masked_lm_positions=None)
    out = model.apply({"params": params}, **inputs)
    if family == "electra":  # discriminator states and logits; generator MLM logits
      return np.concatenate([out["sequence_output"], out["disc_logits"][..., None],
                             out["mlm_logits"]], axis=-1)
    return np.concatenate([out["sequence_output"], out["mlm_logits"]], axis=-1)

  got = np.asarray(run(packed))[0]
  start = 0
  for n, b in zip(lens, alone):
    want = np.asarray(run(b))[0, :n]
    np.testing.assert_allclose(got[start:start + n], want, atol=2e-5)
    start += n
  # Without segment ids the two examples would see each other: the check has teeth.
  mixed = dict(packed, segment_ids=None)
  del mixed["segment_ids"]
  assert np.abs(np.asarray(run(mixed))[0, :lens[0]] - got[:lens[0]]).max() > 1e-3


def test_bfloat16_compute_close_to_float32():
  """bf16 compute (f32 params, f32 softmax) vs f32. Measured max |diff| on this config:
  sequence_output 2.8e-2 (LayerNorm-ed, unit scale), MLM logits 3e-3."""
  cfg32, model32 = make("bert")
  _, model16 = make("bert", dtype="bfloat16")
  batch = random_batch(cfg32)
  params = models.init_params(model32, jax.random.key(0), batch)
  inputs = models.model_inputs(model32, batch)
  o32 = model32.apply({"params": params}, **inputs)
  o16 = model16.apply({"params": params}, **inputs)
  assert o16["sequence_output"].dtype == jnp.bfloat16
  assert o16["mlm_logits"].dtype == jnp.float32
  seq_diff = np.abs(np.asarray(o16["sequence_output"], np.float32)
                    - np.asarray(o32["sequence_output"])).max()
  mlm_diff = np.abs(np.asarray(o16["mlm_logits"]) - np.asarray(o32["mlm_logits"])).max()
  print(f"bf16 vs f32 max abs diff: sequence_output {seq_diff:.3g}, mlm_logits {mlm_diff:.3g}")
  assert 0 < seq_diff < 0.1 and mlm_diff < 0.1


@pytest.mark.parametrize("family", ["electra"])  # the backbone is renamed for ELECTRA
def test_fine_tuning_models_warm_start_from_pretraining_params(family):
  cfg, model = make(family)
  batch = random_batch(cfg)
  pre = models.init_params(model, jax.random.key(0), batch)
  inputs = {k: batch[k] for k in ("input_ids", "input_mask", "token_type_ids")}
  for ft, shapes in ((models.ForSequenceClassification(cfg, num_labels=3), [(2, 3)]),
                     (models.ForQuestionAnswering(cfg), [(2, 12), (2, 12)])):
    params = models.init_params(ft, jax.random.key(1), batch)
    backbone = models.backbone_params(pre)
    # Same backbone tree: the pretrained weights drop in, only the head stays fresh.
    assert jax.tree.structure(backbone["bert"]) == jax.tree.structure(params["bert"])
    params = {**params, **backbone}
    out = ft.apply({"params": params}, **inputs)
    out = out if isinstance(out, tuple) else (out,)
    assert [o.shape for o in out] == shapes
  # The backbone really is the pretrained one: same hidden states as the pretraining model.
  seq = models.BertModel(cfg).apply({"params": backbone["bert"]}, **inputs)[0]
  ref = (model.apply({"params": pre}, **inputs, masked_lm_positions=None)["sequence_output"])
  np.testing.assert_allclose(seq, ref, atol=1e-6)


def test_sharded_init_and_forward_match_unsharded():
  """Params initialised under jit with shardings from the logical names (fsdp_tp preset on
  the 8 fake devices) and a jitted forward give the unsharded result."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bert_jax import sharding  # pylint: disable=g-import-not-at-top
  if len(jax.devices()) < 8:
    pytest.skip("needs the 8 fake CPU devices of conftest.py")
  cfg, model = make("albert", hidden_size=64, num_attention_heads=4, vocab_size=128)
  batch = random_batch(cfg, b=8)
  mesh_cfg = ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2, preset="fsdp_tp",
                                            logical_axis_rules=""))
  mesh, rules = sharding.make_mesh(mesh_cfg), sharding.rules_from_config(mesh_cfg)
  shardings = sharding.logical_to_sharding(models.logical_specs(model, batch),
                                           models.abstract_params(model, batch), mesh, rules)
  inputs = models.model_inputs(model, batch)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params = jax.jit(lambda r: models.init_params(model, r, batch),
                     out_shardings=shardings)(jax.random.key(0))
    out = jax.jit(lambda p, x: model.apply({"params": p}, **x))(params, inputs)
  kernel = params["bert"]["encoder"]["group_0_layer_0"]["attention"]["query"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
  ref = model.apply({"params": jax.device_get(params)}, **inputs)
  for k in ("sequence_output", "mlm_logits", "sentence_logits"):
    np.testing.assert_allclose(np.asarray(out[k]), np.asarray(ref[k]), atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "electra"])
def test_sequence_longer_than_positions_fails_clearly(family):
  cfg, model = make(family)
  batch = models.dummy_batch(cfg, 1, cfg.max_position_embeddings + 1, 1)
  with pytest.raises(ValueError, match="config.model.max_position_embeddings=64"):
    models.init_params(model, jax.random.key(0), batch)
