"""bert_jax.flops against XLA's own FLOP count of the loop's train step, for every family."""

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import pytest

from bert_jax import flops
from bert_jax.benchmarks import aot_compile
from train_testlib import tiny_config


def _config(family: str):
  """Small but matmul-dominated (width 256, FFN 1024, length 64): elementwise work, which the
  formula leaves out by convention, stays a few percent of XLA's count."""
  c = tiny_config(family, batch=8, seq=64)
  c.model.update(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
                 vocab_size=512, max_position_embeddings=64)
  if family != "bert":
    c.model.embedding_size = 128
  if family == "albert":
    c.model.num_hidden_groups = 1  # one shared layer applied twice: counted per application
  c.data.max_predictions_per_seq = 10
  return c


def _xla_flops(cost) -> float:
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


@pytest.mark.parametrize("family", ["bert", "albert", "electra"])
def test_formula_matches_xla_count_of_the_train_step(family):
  """XLA's HLO cost analysis of the lowered step (the same analysis the compiled executable
  reports, without the compile; the slow test below checks the compiled one)."""
  c = _config(family)
  lowered, s = aot_compile.lower_train_step(c, jax.devices()[:1])
  ours, xla = flops.train_step_flops(c, s.task), _xla_flops(lowered.cost_analysis())
  assert abs(ours / xla - 1) < 0.10, (family, ours, xla)


def test_formula_terms():
  """The encoder-specific terms: ALBERT sharing is counted per application (same FLOPs as
  unshared), the MLM head scales with the prediction slots not the length, ELECTRA's generator
  adds its own tower, heads differ."""
  a = _config("albert").model
  shared = flops.forward_flops(a, 8, 64, 10)
  a.num_hidden_groups = 0
  assert flops.forward_flops(a, 8, 64, 10) == shared
  b = _config("bert").model
  head_10, head_20 = (flops.forward_flops(b, 8, 64, p) - flops.forward_flops(b, 8, 64, 0) for p in (10, 20))
  assert head_20 == pytest.approx(2 * head_10)
  e = _config("electra").model
  e_small = e.copy_and_resolve_references()
  e_small.generator_hidden_size = 0.25
  assert flops.forward_flops(e, 8, 64, 10) > flops.forward_flops(e_small, 8, 64, 10)
  assert flops.forward_flops(b, 8, 64, 0, "qa") != flops.forward_flops(b, 8, 64, 0, "classify")
  # Bidirectional attention: the L^2 term is 4 * B * L^2 * H per layer (2 layers), forward.
  cfg = flops.config_lib.validate(b)
  quadratic = flops.encoder_forward(cfg, 8 * 128, 128) - 2 * flops.encoder_forward(cfg, 8 * 64, 64)
  assert quadratic == pytest.approx(2 * 4 * 8 * (128**2 - 2 * 64**2) * 256)


def test_peak_table_and_mfu():
  class Dev:
    device_kind, platform = "TPU v5 lite", "tpu"
  peak, source = flops.chip_peak_flops(Dev())
  assert peak == 197e12 and "197" in source
  Dev.device_kind = "NVIDIA H200"
  assert flops.chip_peak_flops(Dev())[0] == 989e12
  Dev.device_kind = "cpu"
  assert flops.chip_peak_flops(Dev())[0] is None
  assert flops.mfu(1e12, 0.5, 4, 1e12) == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "albert", "electra"])
def test_formula_matches_compiled_cost_analysis(family):
  c = _config(family)
  compiled, s = aot_compile.compile_train_step(c, jax.devices()[:1])
  ours, xla = flops.train_step_flops(c, s.task), _xla_flops(compiled.cost_analysis())
  assert abs(ours / xla - 1) < 0.10, (family, ours, xla)
