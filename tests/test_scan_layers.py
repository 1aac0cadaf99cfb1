"""config.model.scan_layers: nn.scan over the layers equals the unrolled stack, and every reader
of per-layer params (HF interop, warm starts, PEFT, layer-wise lr decay, distillation) copes."""

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax import batch as batch_lib
from bert_jax import models
from bert_jax import optim
from bert_jax import state as state_lib
from bert_jax import steps as steps_lib
from bert_jax.data import synthetic
from bert_jax.models import peft
from bert_jax.tasks import registry
from train_testlib import tiny_config, tree_max_diff

TOL = 1e-5


def _configs(family, layers=3, **model):
  """(unrolled, scanned) train configs of a tiny model, dropout off."""
  c = tiny_config(family)
  c.model.update(num_hidden_layers=layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **model)
  s = c.copy_and_resolve_references()
  s.model.scan_layers = True
  return c, s


def _batch(config, task):
  return batch_lib.select(task.features, synthetic.batch(config, 0, config.train.batch_size, 0))


def _random_params(task, seed=0):
  """Numpy params of the task's (unrolled) tree: no init to compile. LayerNorm scales near 1."""
  rng = np.random.default_rng(seed)

  def one(path, a):
    noise = rng.normal(0, 0.05, a.shape).astype(np.float32)
    return noise + 1 if getattr(path[-1], "key", None) == "scale" else noise

  return jax.tree_util.tree_map_with_path(one, jax.eval_shape(task.init_params, jax.random.key(0)))


def _outputs_loss_grads(task, params, batch):
  """(model outputs, objective loss, gradients) in train mode, one jit."""
  inputs = models.model_inputs(task.model, batch)

  def fn(p):
    out = task.model.apply({"params": p}, **inputs, deterministic=False, rngs={"dropout": jax.random.key(1)})
    return task.loss(p, batch, jax.random.key(3), deterministic=False)[0], out

  (loss, out), grads = jax.jit(jax.value_and_grad(fn, has_aux=True))(params)
  return out, loss, grads


@pytest.mark.parametrize("family,remat", [
    ("bert", "none"), ("bert", "full"), ("albert", "none"),
    # ~40 s each on a shared 2-core CPU; test_stack_unstack_round_trip_and_match runs ELECTRA's
    # forward pass (both towers) on every run.
    pytest.param("electra", "none", marks=pytest.mark.slow),
    pytest.param("electra", "full", marks=pytest.mark.slow)])
def test_scanned_equals_unrolled_outputs_loss_and_grads(family, remat):
  """Train mode (dropout off): same outputs, objective loss and gradients (unstacked), to 1e-5.
  ALBERT here shares one group over 2 layers: scanned with its params broadcast, same tree."""
  extra = {"num_hidden_groups": 1} if family == "albert" else {}
  c, s = _configs(family, layers=2, remat_policy=remat, **extra)
  task, stask = registry.get_task(c), registry.get_task(s)
  params = _random_params(task)
  want = jax.eval_shape(stask.init_params, jax.random.key(0))
  sparams = models.match_layers(params, want)
  assert jax.tree.map(np.shape, sparams) == jax.tree.map(lambda x: x.shape, want)
  if family != "albert":
    assert tree_max_diff(sparams, models.stack_layers(params)) == 0
  batch = _batch(c, task)
  a, loss, grads = _outputs_loss_grads(task, params, batch)
  b, sloss, sgrads = _outputs_loss_grads(stask, sparams, batch)
  for key in ("mlm_logits", "disc_logits", "sequence_output"):
    if key in a:
      np.testing.assert_allclose(np.asarray(b[key]), np.asarray(a[key]), atol=TOL, rtol=TOL)
  assert abs(float(loss) - float(sloss)) < TOL, (loss, sloss)
  assert tree_max_diff(models.match_layers(sgrads, params), grads) < TOL


def test_stack_unstack_round_trip_and_match():
  """ELECTRA (two towers): stack / unstack / match_layers, and the scanned forward pass (train
  mode, dropout off) on the stacked params gives the unrolled one's logits."""
  c, s = _configs("electra")
  task, stask = registry.get_task(c), registry.get_task(s)
  params = _random_params(task)
  stacked = models.stack_layers(params)
  inputs = models.model_inputs(task.model, _batch(c, task))
  run = lambda t, p: jax.jit(lambda q: t.model.apply(  # noqa: E731
      {"params": q}, **inputs, deterministic=False, rngs={"dropout": jax.random.key(1)}))(p)
  a, b = run(task, params), run(stask, stacked)
  for key in ("mlm_logits", "disc_logits"):
    np.testing.assert_allclose(np.asarray(b[key]), np.asarray(a[key]), atol=TOL, rtol=TOL)
  for tower in ("generator_encoder", "discriminator_encoder"):
    assert "layers" in stacked[tower] and not any(k.startswith("group_") for k in stacked[tower])
  n = c.model.num_hidden_layers
  assert stacked["discriminator_encoder"]["layers"]["attention"]["query"]["kernel"].shape[0] == n
  back = models.unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(params) and tree_max_diff(back, params) == 0
  # match_layers: either layout into either; unrolled trees pass through unstack_layers.
  assert tree_max_diff(models.match_layers(params, stacked), stacked) == 0
  assert tree_max_diff(models.match_layers(stacked, params), params) == 0
  assert tree_max_diff(models.unstack_layers(params), params) == 0
  # A partial source (warm starts): only what it holds, in the target's layout.
  part = models.match_layers({"discriminator_encoder": params["discriminator_encoder"]}, stacked)
  assert set(part) == {"discriminator_encoder"} and "layers" in part["discriminator_encoder"]
  with pytest.raises(ValueError, match="inner_group_num"):
    models.stack_layers({"encoder": {"group_0_layer_0": {"w": np.zeros(2)}, "group_0_layer_1": {"w": np.zeros(2)}}})


def test_scanned_params_carry_layers_axis_and_shard_on_the_mesh():
  """Logical axis "layers" in front of every layer param, mapped to no mesh axis; the sharded
  train state builds on the 8-device mesh (fsdp x tensor) with the other axes still sharded."""
  _, s = _configs("bert", layers=2)
  s.model.update(hidden_size=64, num_attention_heads=4, intermediate_size=128)
  s.mesh.update(preset="fsdp_tp", data=2, fsdp=2, tensor=2)
  st = state_lib.setup(s, registry.get_task(s))
  specs = st.task.logical_specs()["bert"]["encoder"]["layers"]
  assert specs["attention"]["query"]["kernel"] == P("layers", "embed", "heads", "kv")
  assert specs["output_LayerNorm"]["scale"] == P("layers", "embed")
  init = jax.jit(st.init_fn, out_shardings=st.state_sh)
  state = init(jax.random.key(0))
  query = state["params"]["bert"]["encoder"]["layers"]["attention"]["query"]["kernel"]
  assert query.shape == (2, 64, 4, 16)
  assert query.sharding.spec == P(None, "fsdp", "tensor", None)
  mu = jax.tree.leaves(state["opt_state"], is_leaf=lambda x: hasattr(x, "sharding"))
  assert any(x.shape == query.shape and x.sharding.spec == query.sharding.spec for x in mu)


@pytest.mark.slow
def test_one_sharded_step_scanned_equals_unrolled():
  """A whole train step (objective, AdamW, fsdp_tp mesh, dropout off) from the same params:
  same loss and updated params (unstacked)."""
  out = {}
  for scan in (False, True):
    c, _ = _configs("bert", layers=2)
    c.model.scan_layers = scan
    c.mesh.update(preset="fsdp_tp", data=2, fsdp=2, tensor=2)
    st = state_lib.setup(c, registry.get_task(c))
    train_step, _, init = steps_lib.compile_steps(c, st)
    state = init(jax.random.PRNGKey(0))
    if scan:  # the unrolled run's initial params, stacked
      state["params"] = jax.device_put(models.stack_layers(out[False][2]), st.state_sh["params"])
    batch = steps_lib.to_global(synthetic.batch(c, 0, c.train.batch_size, 0), st)
    start = jax.device_get(state["params"])
    with steps_lib.mesh_context(st.mesh, st.rules):
      new, metrics = train_step(state, batch)
    out[scan] = (float(np.asarray(metrics["loss"])[0]), jax.device_get(new["params"]), start)
  assert abs(out[True][0] - out[False][0]) < TOL
  assert tree_max_diff(models.unstack_layers(out[True][1]), out[False][1]) < TOL


def _tiny_hf_bert(tmp_path):
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  ref = transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=99, hidden_size=36, num_hidden_layers=3, num_attention_heads=3, intermediate_size=37,
      max_position_embeddings=40, attn_implementation="eager"))
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  ref.eval().save_pretrained(tmp_path / "hf")
  return ref, torch


def test_hf_checkpoint_into_a_scanned_model_and_export(tmp_path):
  """config.init.hf_checkpoint -> a scanned model (warm_start restacks) gives transformers'
  outputs; exporting the scanned params writes the HF tensors back bit for bit."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bert_jax import starts  # pylint: disable=g-import-not-at-top
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top
  ref, torch = _tiny_hf_bert(tmp_path)
  cfg, _, _ = hf.import_hf(str(tmp_path / "hf"))
  scfg = dataclasses.replace(cfg, scan_layers=True)
  model = models.build(scfg)
  x = dict(input_ids=np.random.default_rng(0).integers(1, 99, (2, 11)).astype(np.int32),
           input_mask=np.ones((2, 11), np.int32), token_type_ids=np.zeros((2, 11), np.int32),
           masked_lm_positions=np.array([[1, 2, 3], [4, 5, 6]], np.int32))
  x["input_mask"][1, 7:] = 0
  fresh = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), models.abstract_params(model, x))
  config = ml_collections.ConfigDict({"init": {"hf_checkpoint": str(tmp_path / "hf")}, "model": {"family": "bert"}})
  params = starts.from_hf(config, fresh)
  assert params["bert"]["encoder"]["layers"]["attention"]["query"]["kernel"].shape[0] == 3
  out = model.apply({"params": params}, **x)
  with torch.no_grad():
    o = ref(input_ids=torch.tensor(x["input_ids"], dtype=torch.long),
            attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
            token_type_ids=torch.tensor(x["token_type_ids"], dtype=torch.long))
  mlm = np.take_along_axis(o.prediction_logits.numpy(), x["masked_lm_positions"][..., None], axis=1)
  np.testing.assert_allclose(np.asarray(out["mlm_logits"]), mlm, atol=1e-4)
  np.testing.assert_allclose(np.asarray(out["sentence_logits"]), o.seq_relationship_logits.numpy(), atol=1e-4)
  (written,) = hf.export_hf(scfg, params, str(tmp_path / "export"))
  a, b = hf.read_state_dict(str(tmp_path / "hf")), hf.read_state_dict(written)
  for k, v in a.items():
    if not k.endswith(hf._TIED_OR_BUFFERS):  # pylint: disable=protected-access
      assert np.array_equal(b[k], v), k


def test_lora_adapters_merge_and_layerwise_lr_decay_with_scan():
  """PEFT leaves are stacked with their layer; merge_lora merges layer by layer; layer-wise lr
  decay gives each row of a stacked leaf its layer's factor."""
  base = dict(family="bert", vocab_size=101, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
              intermediate_size=48, max_position_embeddings=32, lora_rank=2, lora_targets="q,v,ffn",
              adapter_size=4)
  cfg = models.validate(base)
  scfg = dataclasses.replace(cfg, scan_layers=True)
  batch = models.dummy_batch(cfg, 2, 8, 2)
  batch["input_ids"] = np.random.default_rng(0).integers(5, 100, (2, 8)).astype(np.int32)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda a: rng.normal(0, 0.1, a.shape).astype(np.float32),  # non-zero lora_b, adapters
                        models.abstract_params(models.build(cfg), batch))
  sparams = models.stack_layers(params)
  assert sparams["bert"]["encoder"]["layers"]["attention"]["query"]["lora_a"].shape == (3, 32, 2)
  inputs = models.model_inputs(models.build(cfg), batch)
  apply = lambda c, p: jax.jit(lambda q: models.build(c).apply({"params": q}, **inputs)["mlm_logits"])(p)  # noqa: E731
  np.testing.assert_allclose(apply(scfg, sparams), apply(cfg, params), atol=TOL)
  mcfg, merged = peft.merge_lora(cfg, params)
  smcfg, smerged = peft.merge_lora(scfg, sparams)
  assert smcfg.scan_layers and not peft.has_lora(smerged)
  assert tree_max_diff(models.unstack_layers(smerged), merged) < 1e-6
  np.testing.assert_allclose(apply(smcfg, smerged), apply(mcfg, merged), atol=TOL)
  mask = peft.trainable_mask({"bert": sparams["bert"]})["bert"]["encoder"]["layers"]
  assert mask["attention"]["query"]["lora_a"] and mask["adapter_ffn"]["up"]["kernel"]
  assert not mask["attention"]["query"]["kernel"]
  opt = {"layerwise_lr_decay": 0.8}
  scales = optim.layer_lr_scales(opt, params, 3)
  sscales = optim.layer_lr_scales(opt, sparams, 3)
  for i in range(3):
    for a, b in zip(jax.tree.leaves(scales["bert"]["encoder"][f"group_{i}_layer_0"]),
                    jax.tree.leaves(sscales["bert"]["encoder"]["layers"])):
      assert np.all(b[i] == np.float32(a))
  leaf = sscales["bert"]["encoder"]["layers"]["attention"]["query"]["kernel"]
  assert leaf.shape == (3, 1, 1, 1)
  assert sscales["bert"]["embeddings"] == scales["bert"]["embeddings"]


def test_distillation_hidden_states_and_student_init_with_scan():
  """apply_with_intermediates reads a scanned stack's hidden states and attention scores row by
  row; every_kth_layer takes its layers from a scanned source too."""
  from bert_jax.tasks import distill  # pylint: disable=g-import-not-at-top
  cfg = models.validate(dict(family="bert", vocab_size=101, hidden_size=32, num_hidden_layers=4,
                             num_attention_heads=2, intermediate_size=48, max_position_embeddings=32))
  scfg = dataclasses.replace(cfg, scan_layers=True)
  batch = models.dummy_batch(cfg, 2, 8, 2)
  batch["input_ids"] = np.random.default_rng(0).integers(5, 100, (2, 8)).astype(np.int32)
  model, smodel = models.build(cfg), models.build(scfg)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda a: rng.normal(0, 0.1, a.shape).astype(np.float32),
                        models.abstract_params(model, batch))
  sparams = models.stack_layers(params)
  inputs = models.model_inputs(model, batch)
  run = lambda m, p: jax.jit(lambda q: distill.apply_with_intermediates(  # noqa: E731
      m, q, inputs, deterministic=True))(p)
  a, b = run(model, params), run(smodel, sparams)
  assert len(b[2]) == len(b[3]) == 4
  np.testing.assert_allclose(b[1], a[1], atol=TOL)
  for x, y in zip(a[2] + a[3], b[2] + b[3]):
    np.testing.assert_allclose(y, x, atol=TOL)
  assert tree_max_diff(distill.every_kth_layer(sparams, 2), distill.every_kth_layer(params, 2)) == 0


def test_refusals_name_the_keys_before_anything_compiles():
  with pytest.raises(ValueError, match=r"config\.model\.scan_layers=True.*inner_group_num=2"):
    models.validate(dict(family="albert", num_hidden_layers=4, num_hidden_groups=1, inner_group_num=2,
                         scan_layers=True))
  with pytest.raises(ValueError, match=r"config\.model\.scan_layers"):
    models.validate(dict(scan_layers="yes"))
  c = tiny_config("albert")
  c.model.update(inner_group_num=2, scan_layers=True)
  with pytest.raises(ValueError, match=r"config\.model\.scan_layers.*inner_group_num"):
    state_lib.setup(c, registry.get_task(c))


def test_off_by_default_and_unrolled_tree_unchanged():
  from bert_jax.configs import common  # pylint: disable=g-import-not-at-top
  assert common.model_config().scan_layers is False and models.ModelConfig().scan_layers is False
  cfg = models.validate(dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=48, max_position_embeddings=32))
  keys = models.abstract_params(models.build(cfg), models.dummy_batch(cfg, 1, 8, 2))["bert"]["encoder"]
  assert sorted(keys) == ["group_0_layer_0", "group_1_layer_0", "pooler"]
