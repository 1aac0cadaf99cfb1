"""bert_jax.benchmarks.aot_compile: per-device memory, the does-not-fit report, a TPU topology."""

import importlib.util

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
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
  class Dev:  # an abstract TPU topology device, no memory stats
    def __init__(self, i, chip):
      self.id, self.coords = i, (chip, 0, 0)

    def memory_stats(self):
      return None

  # megacore v4 (as a slice runs it): one device per chip, the chip's 32 GiB
  mem, source = aot_compile.device_memory("v4:2x2x1", [Dev(i, i) for i in range(4)])
  assert mem == 32 * 2**30 and "devices per chip" not in source
  # a topology listing two TensorCores per chip splits the chip's memory between them
  mem, source = aot_compile.device_memory("v4:2x2x1", [Dev(i, i // 2) for i in range(8)])
  assert mem == 16 * 2**30 and "2 devices per chip" in source
  assert aot_compile.device_memory("v5e:2x2", [Dev(i, i) for i in range(4)])[0] == 16 * 2**30
  assert aot_compile.device_memory("v5p:2x2x1", [Dev(i, i) for i in range(4)])[0] == 95 * 2**30
  assert aot_compile.device_memory("cpu", [Dev(0, 0)])[0] is None


def test_v4_and_v5p_are_described_as_megacore():
  assert aot_compile.topology_kwargs("v4:4x4x4") == {"chip_config_name": "megacore"}
  assert aot_compile.topology_kwargs("v5p:2x2x1") == {"chip_config_name": "megacore"}
  assert aot_compile.topology_kwargs("v5e:16x16") == {} and aot_compile.topology_kwargs("v6e:2x2") == {}


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install \"jax[tpu]==<jax version>\")")
def test_tpu_topologies_list_one_device_per_chip():
  """As JAX runs them: v4-128 (4x4x4) is 64 devices, not the 128 TensorCores; v5e-256 is 256."""
  for topo, n, kind in (("v4:4x4x4", 64, "TPU v4"), ("v4:2x2x1", 4, "TPU v4"), ("v5p:2x2x1", 4, "TPU v5"),
                        ("v5e:16x16", 256, "TPU v5 lite"), ("v6e:2x2", 4, "TPU v6 lite")):
    devices = aot_compile.topology_devices(topo)
    assert len(devices) == n and devices[0].device_kind == kind, topo
    assert aot_compile.devices_per_chip(devices) == 1
  assert aot_compile.peak_flops_per_chip("v5p:2x2x1", devices[0]) == 918e12  # v6e: flops' own table
  v5p = aot_compile.topology_devices("v5p:2x2x1")
  assert aot_compile.peak_flops_per_chip("v5p:2x2x1", v5p[0]) == 459e12  # "TPU v5" is not in flops' table


def test_max_batch_doubles_then_bisects(monkeypatch):
  """Each probe a compile (here a stand-in: memory = 1 MiB per sequence of 24 MiB per device):
  from the config's batch 4, doubling 8, 16, 32 (refused), then bisection on multiples of the
  granule (4: the data-parallel size of 4 devices x 1) down to the largest that fits."""
  c = tiny_config("bert", batch=4, seq=16)
  compiled = []

  def fake_report(config, topology, devices=None):
    b = config.train.batch_size
    compiled.append(b)
    if b > 24:
      raise aot_compile.DoesNotFit("x", b * 2**20, 24 * 2**20)
    return aot_compile.Report(topology=topology, devices=4, mesh={}, params=1, argument_bytes=0, output_bytes=0,
                              temp_bytes=b * 2**20, peak_bytes=b * 2**20, flops=1.0, hbm_bytes=24 * 2**20)

  monkeypatch.setattr(aot_compile, "report", fake_report)
  devices = jax.devices()[:4]
  b, best, probes = aot_compile.max_batch(c, "cpu", devices=devices, log=lambda _: None)
  assert (b, best.peak_bytes) == (24, 24 * 2**20)
  assert probes == [(4, True), (8, True), (16, True), (32, False), (24, True), (28, False)]
  assert compiled == [4, 8, 16, 32, 24, 28]
  # too large to start with: halving until it fits, then bisection; a coarser step stops sooner
  c.train.batch_size = 100
  b, _, probes = aot_compile.max_batch(c, "cpu", devices=devices, step=8, log=lambda _: None)
  assert b == 24 and [n for n, _ in probes] == [96, 48, 24, 32]
  c.train.batch_size = 4
  b, best, probes = aot_compile.max_batch(c, "cpu", devices=devices, limit=8, log=lambda _: None)
  assert b == 8 and [n for n, _ in probes] == [4, 8]  # stopped doubling at the limit
  monkeypatch.setattr(aot_compile, "report", lambda *a, **k: (_ for _ in ()).throw(aot_compile.DoesNotFit("x", 1, 0)))
  assert aot_compile.max_batch(c, "cpu", devices=devices, log=lambda _: None)[:2] == (0, None)


def test_max_batch_granule_is_the_data_parallel_size_times_accumulation():
  c = tiny_config("bert", batch=16, seq=16)
  c.mesh.update(preset="fsdp", data=2, fsdp=-1)
  assert aot_compile.batch_unit(c, jax.devices()) == 8
  c.train.grad_accum_steps = 2
  assert aot_compile.batch_unit(c, jax.devices()) == 16


@pytest.mark.slow  # two compiles of the train step (~40 s each on a busy 2-core machine)
def test_max_batch_compiles_on_cpu_devices():
  """The search with real compiles (CPU: nothing is refused, so it doubles to the limit)."""
  c = tiny_config("bert", batch=8, seq=16)
  b, best, probes = aot_compile.max_batch(c, "cpu", limit=16, log=lambda _: None)
  assert (b, [n for n, _ in probes]) == (16, [8, 16]) and best.devices == 8 and best.peak_bytes > 0


def test_pod_table_rows():
  """--table's rows: step time = model FLOPs / (chips * bf16 peak * MFU); a refusal says so."""
  over = dict(aot_compile.TABLE[0][2])
  r = aot_compile.Report(topology="v4:4x4x4", devices=128, mesh={"fsdp": 128}, params=336_000_000,
                         argument_bytes=2**30, output_bytes=2**30, temp_bytes=2**31, peak_bytes=3 * 2**30,
                         flops=1.0, hbm_bytes=16 * 2**30, chips=64, model_flops=4.4e15,
                         peak_flops_per_chip=275e12)
  row = aot_compile.table_row("bert.py:large", over, r, 0.5)
  assert "v4-128 (`v4:4x4x4`: 64 chips, 128 devices)" in row and "3.00 of 16.00 GiB" in row
  assert f"{4.4e15 / (64 * 275e12 * 0.5):.2f} s" in row and "4096 x 512, fsdp, bfloat16" in row
  refused = aot_compile.table_row("albert.py:xxlarge", over,
                                  aot_compile.DoesNotFit("x", 20 * 2**30, 16 * 2**30), 0.5)
  assert "does not fit: needs 20.00 of 16.00 GiB" in refused
  assert {t for _, t, _ in aot_compile.TABLE} == {"v4:4x4x4", "v5e:16x16"}
  assert row.endswith("|") and aot_compile.table_row("bert.py:large", over, r, 0.5, "8192 (5.1 GiB)").endswith(
      "| 8192 (5.1 GiB) |")


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
