"""Mesh construction, rule presets, and: one sharded step == one single-device step (f32, 1e-5)."""

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax.data import synthetic
from bert_jax import sharding
from bert_jax import state as state_lib
from bert_jax import steps as steps_lib
from bert_jax.tasks import registry
from train_testlib import tiny_config, tree_max_diff

MESHES = {"dp": dict(data=-1, fsdp=1, tensor=1), "fsdp": dict(data=2, fsdp=-1, tensor=1),
          "tp": dict(data=-1, fsdp=1, tensor=2), "fsdp_tp": dict(data=1, fsdp=4, tensor=2)}


def _mesh_cfg(preset, **sizes):
  c = tiny_config().mesh
  c.update(preset=preset, **sizes)
  return c


def test_make_mesh_fills_minus_one_and_rejects_mismatch():
  mesh = sharding.make_mesh(_mesh_cfg("dp", data=-1, fsdp=2, tensor=2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ValueError, match="needs 6 devices but 8"):
    sharding.make_mesh(_mesh_cfg("dp", data=3, fsdp=2, tensor=1))
  with pytest.raises(ValueError, match="does not divide 8"):
    sharding.make_mesh(_mesh_cfg("dp", data=-1, fsdp=3, tensor=1))
  with pytest.raises(ValueError, match="Only one"):
    sharding.make_mesh(_mesh_cfg("dp", data=-1, fsdp=-1, tensor=1))


def test_rules_are_ordered_and_override_first():
  c = _mesh_cfg("fsdp_tp")
  rules = sharding.rules_from_config(c)
  mesh = sharding.make_mesh(_mesh_cfg("fsdp_tp", data=1, fsdp=4, tensor=2))
  shapes = {"k": jax.ShapeDtypeStruct((32, 64), np.float32), "emb": jax.ShapeDtypeStruct((128, 32), np.float32),
            "tt": jax.ShapeDtypeStruct((2, 32), np.float32)}
  specs = {"k": P("embed", "mlp"), "emb": P("vocab", "embed"), "tt": P("type_vocab", "embed")}
  out = sharding.logical_to_sharding(specs, shapes, mesh, rules)
  assert out["k"].spec == P("fsdp", "tensor")
  assert out["emb"].spec == P("tensor", "fsdp")
  # Activations: batch takes (data, fsdp) first, so "embed" cannot reuse fsdp and stays replicated.
  import flax.linen as nn
  assert nn.logical_to_mesh_axes(("batch", "length", "embed"), rules) == P(("data", "fsdp"), None, None)
  c.logical_axis_rules = "embed=,mlp=fsdp"
  out = sharding.logical_to_sharding(specs, shapes, mesh, sharding.rules_from_config(c))
  assert out["k"].spec == P(None, "fsdp")
  with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
    sharding.parse_rules("mlp=model")
  with pytest.raises(ValueError, match="preset"):
    sharding.rules_from_config(_mesh_cfg("zero3"))


def test_indivisible_dims_stay_replicated():
  mesh = sharding.make_mesh(_mesh_cfg("fsdp", data=1, fsdp=-1, tensor=1))
  out = sharding.logical_to_sharding({"w": P("embed", "mlp")}, {"w": jax.ShapeDtypeStruct((6, 16), np.float32)},
                                     mesh, sharding.PRESETS["fsdp"])
  assert out["w"].spec == P(None, "fsdp")


def _one_step(config, mesh):
  s = state_lib.setup(config, registry.get_task(config), mesh=mesh)
  train_step, _, init = steps_lib.compile_steps(config, s)
  state = init(jax.random.PRNGKey(0))
  batch = synthetic.batch(config, 0, config.train.batch_size, 0)
  with steps_lib.mesh_context(s.mesh, s.rules):
    new_state, metrics = train_step(state, steps_lib.to_global(batch, s))
  return jax.device_get(new_state["params"]), float(np.asarray(metrics["loss"])[0]), new_state, s


def _check_family(family, meshes):
  config = tiny_config(family)
  config.model.num_hidden_layers = 1  # compile time dominates; one layer still covers every weight kind
  ref_params, ref_loss, _, _ = _one_step(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
  for preset, sizes in meshes:
    config.mesh.update(preset=preset, **sizes)
    params, loss, state, _ = _one_step(config, None)
    assert abs(loss - ref_loss) < 1e-5, (preset, loss, ref_loss)
    assert tree_max_diff(params, ref_params) < 1e-5, preset
    if preset != "dp":  # the step really ran sharded: some parameter is split over devices
      specs = [x.sharding.spec for x in jax.tree.leaves(state["params"])]
      assert any(any(d is not None for d in spec) for spec in specs), preset


@pytest.mark.slow  # moved from the fast suite (10-minute budget); test_models keeps a sharded forward there
@pytest.mark.parametrize("family", ["bert", "electra"])
def test_one_step_fsdp_tp_matches_single_device(family):
  """All three mesh axes in use (data=2, fsdp=2, tensor=2), dropout on."""
  _check_family(family, [("fsdp_tp", dict(data=2, fsdp=2, tensor=2))])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "albert", "electra"])
def test_one_step_every_preset_matches_single_device(family):
  _check_family(family, list(MESHES.items()))


@pytest.mark.slow  # about 15 s
def test_aot_compile_reports_fsdp_sharded_state():
  """bert_jax.benchmarks.aot_compile on the 8 fake CPU devices: FSDP holds about 1/4 of the
  state per device that data parallelism holds (XLA's memory analysis of the compiled step)."""
  from bert_jax.benchmarks import aot_compile  # pylint: disable=g-import-not-at-top
  reports = {}
  for preset, data, fsdp in (("dp", 8, 1), ("fsdp", 2, 4)):
    c = tiny_config("bert", batch=16, seq=32)
    c.model.update(hidden_size=64, intermediate_size=256, vocab_size=512)
    c.mesh.update(preset=preset, data=data, fsdp=fsdp, tensor=1)
    reports[preset] = aot_compile.report(c, "cpu")
  dp, fs = reports["dp"], reports["fsdp"]
  state_bytes = 3 * 4 * dp.params  # float32 params + Adam's two moments
  assert dp.mesh == {"data": 8, "fsdp": 1, "tensor": 1} and fs.mesh == {"data": 2, "fsdp": 4, "tensor": 1}
  assert state_bytes <= dp.argument_bytes < 1.2 * state_bytes, (dp, state_bytes)
  assert 0.2 * dp.argument_bytes < fs.argument_bytes < 0.35 * dp.argument_bytes, (fs, dp)
  assert dp.flops > 0 and dp.peak_bytes >= dp.argument_bytes
  assert any("per device" in line for line in fs.lines())
