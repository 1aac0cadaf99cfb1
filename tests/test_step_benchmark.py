"""bert_jax.benchmarks.step on a tiny config: the loop's step timed, FLOPs and MFU consistent."""

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import pytest

from bert_jax import flops
from bert_jax.benchmarks import step
from train_testlib import tiny_config


@pytest.mark.slow
def test_step_benchmark_and_torch_peer():
  c = tiny_config("bert", batch=8, seq=16)
  r = step.with_mfu(step.measure(c, steps=2, warmup=1))
  assert r["tokens_per_step"] == 8 * 16 and r["step_seconds"] > 0
  assert r["tokens_per_second"] == pytest.approx(128 / r["step_seconds"])
  assert r["model_flops_per_step"] == flops.train_step_flops(c)
  assert r["platform"] == "cpu" and r["chips"] == 1 and "measured fp32 GEMM" in r["peak_source"]
  assert 0 < r["mfu"] < 1.5 and r["loss"] > 0
  peer = step.torch_peer(step.peer_spec(c), steps=1, warmup=1)
  assert peer["tokens_per_second"] > 0 and "BertForMaskedLM" in peer["name"]
  text = "\n".join(step.lines(dict(r, peers=[peer]), c))
  assert "MFU" in text and "bert_jax / peer" in text
