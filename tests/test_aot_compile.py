"""bert_jax.benchmarks.aot_compile: per-device memory, the does-not-fit report, a TPU topology."""

import importlib.util

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import pytest

from bert_jax.benchmarks import aot_compile
from train_testlib import tiny_config

# What XLA (libtpu) said for ALBERT-xxlarge, batch 4096 x 512, FSDP on v4:4x4x4 (issue 14).
OOM = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
       "Used 59.08G of 15.25G hbm. Exceeded hbm capacity by 43.83G.\n\nTotal hbm usage >= 59.08G: ...\n"
       "HLO temporaries (51.92G) exceeds available HBM (15.25G)")


def test_parse_oom_reads_needed_and_available_per_device():
  needed, available = aot_compile.parse_oom(OOM)
  assert needed == pytest.approx(51.92 * 2**30) and available == pytest.approx(15.25 * 2**30)
  assert aot_compile.parse_oom("Used 3.5M of 2.0M hbm") == (3.5 * 2**20, 2.0 * 2**20)
  assert aot_compile.parse_oom("something else") == (None, None)


def test_does_not_fit_report_names_what_would_help():
  c = tiny_config("albert")
  c.train.batch_size = 4096
  c.mesh.update(preset="fsdp", data=2, fsdp=-1)
  text = aot_compile.does_not_fit_report(c, "v4:4x4x4", 128, {"data": 2, "fsdp": 64, "tensor": 1}, OOM)
  assert "needs 51.92 GiB per device, 15.25 GiB is available (3.4x)" in text
  assert "--config.model.remat_policy=full" in text
  assert "--config.train.grad_accum_steps=4" in text  # 2x is not enough at 3.4x over
  assert "--config.model.dtype=bfloat16" in text
  assert "--config.mesh.data=1 --config.mesh.fsdp=-1" in text
  c.model.update(remat=True, dtype="bfloat16")
  c.train.grad_accum_steps = 8
  c.mesh.update(preset="dp")
  text = aot_compile.does_not_fit_report(c, "v4:4x4x4", 128, {"data": 128, "fsdp": 1, "tensor": 1}, OOM)
  assert "remat_policy" not in text and "bfloat16 (" not in text
  assert "--config.train.grad_accum_steps=32" in text and "--config.mesh.preset=fsdp" in text


def test_device_memory_is_per_device_not_per_chip():
  class Dev:  # an abstract TPU topology device: two TensorCores per v4 chip, no memory stats
    def __init__(self, i):
      self.id, self.coords = i, (i // 2, 0, 0)

    def memory_stats(self):
      return None

  mem, source = aot_compile.device_memory("v4:2x2x1", [Dev(i) for i in range(8)])
  assert mem == 16 * 2**30 and "2 devices per chip" in source
  mem, _ = aot_compile.device_memory("v5e:2x2", [Dev(2 * i) for i in range(4)])
  assert mem == 16 * 2**30
  assert aot_compile.device_memory("cpu", [Dev(0)])[0] is None


def test_pod_table_rows():
  """--table's rows: step time = model FLOPs / (chips * bf16 peak * MFU); a refusal says so."""
  over = dict(aot_compile.TABLE[0][2])
  r = aot_compile.Report(topology="v4:4x4x4", devices=128, mesh={"fsdp": 128}, params=336_000_000,
                         argument_bytes=2**30, output_bytes=2**30, temp_bytes=2**31, peak_bytes=3 * 2**30,
                         flops=1.0, hbm_bytes=16 * 2**30, chips=64, model_flops=4.4e15,
                         peak_flops_per_chip=275e12)
  row = aot_compile.table_row("bert.py:large", over, r, 0.5)
  assert "64 chips, 128 devices" in row and "3.00 of 16.00 GiB" in row
  assert f"{4.4e15 / (64 * 275e12 * 0.5):.2f} s" in row and "4096 x 512, fsdp, bfloat16" in row
  refused = aot_compile.table_row("albert.py:xxlarge", over,
                                  aot_compile.DoesNotFit("x", 20 * 2**30, 16 * 2**30), 0.5)
  assert "does not fit: needs 20.00 of 16.00 GiB" in refused
  assert {t for _, t, _ in aot_compile.TABLE} == {"v4:4x4x4", "v5e:16x16"}


@pytest.mark.slow  # a TPU compile through libtpu: ~2 min on a busy 2-core machine
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install \"jax[tpu]==<jax version>\")")
def test_compiles_for_a_small_tpu_topology():
  c = tiny_config("bert", batch=16, seq=32)
  c.mesh.update(preset="fsdp", data=1, fsdp=-1)
  r = aot_compile.report(c, "v5e:2x2")
  assert r.devices == 4 and r.mesh["fsdp"] == 4
  assert r.flops > 0 and 0 < r.peak_bytes < r.hbm_bytes and "v5e" in r.memory_source
  assert any("fits: peak" in line for line in r.lines())
  assert r.chips == 4 and r.model_flops > 0 and r.peak_flops_per_chip == 197e12
