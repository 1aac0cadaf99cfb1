r"""Compiles a config's train step ahead of time for a device topology: memory and FLOPs per device.

No accelerator is needed: with libtpu installed (`pip install "jax[tpu]==<jax version>"`, not
part of requirements.txt) JAX compiles for a TPU topology on a CPU machine, so a pod-slice
layout can be checked before launching it:

  python -m bert_jax.benchmarks.aot_compile --config=configs/bert.py:large \
      --topology=v5e:4x4 --config.mesh.preset=fsdp --config.mesh.data=1 --config.mesh.fsdp=-1

--topology=cpu compiles for this process's devices instead (with
XLA_FLAGS=--xla_force_host_platform_device_count=8, eight fake CPU devices).

Topologies are described as JAX runs them on a slice: a v4 or v5p chip is ONE device ("megacore",
both TensorCores behind it: `v4:4x4x4` is 64 devices of 32 GiB, a v4-128), a v5e / v6e chip is one
device anyway. Printed per device (XLA's memory analysis of the compiled step): arguments (the
sharded train state and batch), outputs, temporaries, their sum as the peak estimate, and the
step's FLOPs. The state is donated, so arguments and outputs share buffers on the device. The
peak is compared with the memory of one device (its own bytes_limit when it reports one, else
the chip's HBM over the devices per chip). When XLA refuses the step (RESOURCE_EXHAUSTED), a
does-not-fit report says what was needed and available per device and what would help (remat,
gradient accumulation, bfloat16, more FSDP) instead of a traceback.

--max_batch searches the largest global batch that fits: from the config's batch, doubling while
the step compiles within memory (halving while it does not), then bisection between the last fit
and the first refusal down to --max_batch_step (default: the data-parallel size, the batch's
granule); each probe is one compile.

--table compiles the pod-slice table of docs/pod.md (BERT-large, ALBERT-xxlarge, ELECTRA-large
for v4-128 and v5e-256, `TABLE`) and prints it as markdown: per-device peak against the device's
memory, the model FLOPs of the step (bert_jax.flops: XLA's count covers a scanned layer stack's
body once) and a step time estimated at --mfu of the chips' bf16 peak; with --max_batch, also each
cell's largest batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from typing import Any

import jax
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import configs
from bert_jax import flops as flops_lib
from bert_jax import sharding
from bert_jax import state as state_lib
from bert_jax import steps as steps_lib
from bert_jax.tasks import registry

# HBM per chip in GiB (public Cloud TPU figures); split over the devices of one chip.
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}


class DoesNotFit(Exception):
  """XLA refused the step for lack of device memory; str() is the report."""

  def __init__(self, report: str, needed: float | None, available: float | None):
    super().__init__(report)
    self.needed, self.available = needed, available


@dataclasses.dataclass
class Report:
  topology: str
  devices: int
  mesh: dict[str, int]
  params: int
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  peak_bytes: int
  flops: float
  hbm_bytes: int | None          # memory of ONE device (see device_memory)
  memory_source: str = ""
  chips: int = 0
  model_flops: float = 0.0       # the whole step (all devices), bert_jax.flops
  peak_flops_per_chip: float | None = None

  def lines(self) -> list[str]:
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    out = [f"{self.topology}: {self.devices} devices, mesh {self.mesh}, {self.params / 1e6:.1f}M params",
           f"  per device: arguments {gib(self.argument_bytes)}, outputs {gib(self.output_bytes)}, "
           f"temporaries {gib(self.temp_bytes)}, peak estimate {gib(self.peak_bytes)}",
           f"  step FLOPs per device: {self.flops / 1e12:.3f} TFLOP (XLA's count; a scanned layer "
           f"stack counts once), model FLOPs {self.model_flops / self.devices / 1e12:.3f} TFLOP "
           f"(bert_jax.flops)"]
    if self.hbm_bytes:
      verdict = "fits" if self.peak_bytes <= self.hbm_bytes else "does NOT fit"
      out.append(f"  {verdict}: peak {gib(self.peak_bytes)} of {gib(self.hbm_bytes)} per device "
                 f"({self.memory_source})")
    return out


def devices_per_chip(devices) -> int:
  """Devices the topology lists per chip (2 on v4, whose TensorCores are listed separately)."""
  chips = len({getattr(d, "coords", None) and tuple(d.coords) or d.id for d in devices})
  return max(1, round(len(devices) / max(chips, 1)))


def device_memory(topology: str, devices) -> tuple[int | None, str]:
  """(bytes of memory per device, where the figure comes from), or (None, why)."""
  try:
    limit = (devices[0].memory_stats() or {}).get("bytes_limit")
  except Exception:  # pylint: disable=broad-except  # abstract topology devices have no stats
    limit = None
  if limit:
    return int(limit), "the device's own bytes_limit"
  kind = topology.split(":")[0]
  if kind not in HBM_GIB:
    return None, f"no HBM figure for {kind!r}"
  per_chip = devices_per_chip(devices)
  return (HBM_GIB[kind] * 2**30 // per_chip,
          f"{HBM_GIB[kind]} GiB per {kind} chip" + (f" / {per_chip} devices per chip" if per_chip > 1 else "")
          + "; XLA reserves a little of it")


_SIZE = r"([\d.]+)\s*([KMGT]?)i?B?"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _bytes(number: str, unit: str) -> float:
  return float(number) * _UNITS[unit.upper()]


def parse_oom(message: str) -> tuple[float | None, float | None]:
  """(needed, available) bytes per device from XLA's RESOURCE_EXHAUSTED message, if stated."""
  m = re.search(r"\(" + _SIZE + r"\)\s*exceeds available HBM\s*\(" + _SIZE + r"\)", message)
  if m:
    return _bytes(*m.group(1, 2)), _bytes(*m.group(3, 4))
  m = re.search(r"Used\s+" + _SIZE + r"\s+of\s+" + _SIZE, message)
  if m:
    return _bytes(*m.group(1, 2)), _bytes(*m.group(3, 4))
  return None, None


def does_not_fit_report(config, topology: str, devices: int, mesh: dict[str, int], message: str) -> str:
  """What did not fit, per device, and the config changes that would help."""
  needed, available = parse_oom(message)
  gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
  t, m = config.train, config.model
  over = needed / available if needed and available else None
  head = (f"{topology}: the train step does NOT fit: it needs {gib(needed)} per device, {gib(available)} "
          f"is available ({over:.1f}x)" if over else f"{topology}: the train step does NOT fit "
          f"(XLA: {message.strip().splitlines()[0][:300]})")
  out = [head, f"  {devices} devices, mesh {mesh}, preset {config.mesh.preset!r}, batch {t.batch_size} x "
         f"{config.data.max_seq_length}, grad_accum_steps {t.grad_accum_steps}, dtype {m.dtype}, remat "
         f"{m.get('remat_policy', '') or ('full' if m.remat else 'none')}", "  what would help:"]
  remat = m.get("remat_policy", "") or ("full" if m.remat else "none")
  if remat != "full":
    out.append("    --config.model.remat_policy=full (recompute each layer's activations in the backward pass)"
               + ("; dots_saveable keeps more" if remat == "none" else ""))
  accum = t.grad_accum_steps * 2  # at least double; more when far over (activations dominate)
  while over and accum * 2 <= t.batch_size and accum / t.grad_accum_steps < over:
    accum *= 2
  if t.batch_size % accum == 0:
    out.append(f"    --config.train.grad_accum_steps={accum} (activations scale with the micro-batch, "
               f"{t.batch_size // accum} sequences)")
  if m.dtype != "bfloat16":
    out.append("    --config.model.dtype=bfloat16 (activations and matmuls in bf16; params stay float32)")
  preset = config.mesh.preset
  if "fsdp" not in preset:
    out.append("    --config.mesh.preset=fsdp --config.mesh.data=1 --config.mesh.fsdp=-1 (shard params and "
               "optimizer state over the devices)")
  elif mesh.get("data", 1) > 1:
    out.append(f"    --config.mesh.data=1 --config.mesh.fsdp=-1 (FSDP over all {devices} devices, "
               f"not {mesh.get('fsdp')})")
  out.append("    or a larger slice / a chip with more HBM")
  return "\n".join(out)


# How JAX runs each generation on a real slice: v4 and v5p chips as one "megacore" device each
# (both TensorCores of a chip behind one device), v5e / v6e with their one TensorCore per chip.
# Described without the chip configuration, libtpu lists a v4 chip's two TensorCores as two
# devices of half the HBM each, a layout no v4 slice runs.
MEGACORE = ("v4", "v5p")


def topology_kwargs(topology: str) -> dict[str, str]:
  """Extra arguments of jax.experimental.topologies.get_topology_desc for `topology`."""
  return {"chip_config_name": "megacore"} if topology.split(":")[0] in MEGACORE else {}


def topology_devices(topology: str) -> list[Any]:
  if topology == "cpu":
    return jax.devices()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # Compile-only devices: no TPU is opened, so libtpu's one-process-per-host lock is not needed
  # (without this, a machine without TPUs can fail with "libtpu multi-process lockfile").
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology,
                                             **topology_kwargs(topology)).devices)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--topology={topology!r}: cannot describe it ({e}). TPU topologies such as "
                     "v5e:4x4 need libtpu: pip install \"jax[tpu]==<your jax version>\".") from e


def lower_train_step(config, devices) -> tuple[Any, state_lib.Setup]:
  """The loop's train step (state.setup + steps.compile_steps) lowered for `devices` with
  abstract state and batch (nothing allocated), and the Setup."""
  s = state_lib.setup(config, registry.get_task(config), devices=devices)
  train_step = steps_lib.compile_steps(config, s).train
  batch = batch_lib.abstract(s.task.features, config.train.batch_size, s.mesh, s.rules)
  frozen = () if s.frozen_sh is None else (jax.tree.map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
      jax.eval_shape(s.task.frozen_params), s.frozen_sh),)
  with steps_lib.mesh_context(s.mesh, s.rules):
    lowered = train_step.lower(s.abstract_state(), batch, *frozen)
  return lowered, s


def compile_train_step(config, devices) -> tuple[Any, state_lib.Setup]:
  """The compiled train step for `devices` and the Setup (bert_jax.state.setup)."""
  lowered, s = lower_train_step(config, devices)
  with steps_lib.mesh_context(s.mesh, s.rules):
    compiled = lowered.compile()
  return compiled, s


def report(config, topology: str, devices=None) -> Report:
  """Compiles and measures; raises DoesNotFit (with the report) when XLA runs out of memory."""
  devices = devices if devices is not None else topology_devices(topology)
  lowered, s = lower_train_step(config, devices)
  try:
    with steps_lib.mesh_context(s.mesh, s.rules):
      compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError / JaxRuntimeError
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    needed, available = parse_oom(str(e))
    raise DoesNotFit(does_not_fit_report(config, topology, len(devices), dict(s.mesh.shape), str(e)),
                     needed, available) from None
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(s.abstract["params"]))
  arg, out, tmp = (int(getattr(mem, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp"))
  alias = int(getattr(mem, "alias_size_in_bytes", 0))  # donated state: outputs reuse arguments
  hbm, source = device_memory(topology, devices)
  return Report(topology=topology, devices=len(devices), mesh=dict(s.mesh.shape), params=params,
                argument_bytes=arg, output_bytes=out, temp_bytes=tmp, peak_bytes=arg + out - alias + tmp,
                flops=float((cost or {}).get("flops", 0.0)), hbm_bytes=hbm, memory_source=source,
                chips=len(devices) // devices_per_chip(devices),
                model_flops=flops_lib.train_step_flops(config, s.task),
                peak_flops_per_chip=peak_flops_per_chip(topology, devices[0]))


# bf16 dense peak per chip by topology name, for device kinds bert_jax.flops does not list (a v5p
# device calls itself "TPU v5").
PEAK_TFLOPS = {"v4": 275.0, "v5p": 459.0, "v5e": 197.0, "v5litepod": 197.0, "v6e": 918.0}


def peak_flops_per_chip(topology: str, device) -> float | None:
  peak = flops_lib.chip_peak_flops(device)[0]
  kind = topology.split(":")[0]
  return peak if peak is not None or kind not in PEAK_TFLOPS else PEAK_TFLOPS[kind] * 1e12


# --- the largest batch that fits --------------------------------------------------------------
def batch_unit(config, devices) -> int:
  """The global batch's granule: a multiple of the data-parallel size (data x fsdp devices)
  times the gradient accumulation steps."""
  mesh = sharding.make_mesh(config.mesh, devices)
  return sharding.data_parallel_size(mesh, sharding.rules_from_config(config.mesh)) * config.train.grad_accum_steps


def with_batch(config, batch: int):
  c = config.copy_and_resolve_references()
  c.train.batch_size = batch
  return c


def max_batch(config, topology: str, step: int = 0, limit: int = 2**20, devices=None,
              log=lambda line: print(line, flush=True)) -> tuple[int, Report | None, list[tuple[int, bool]]]:
  """The largest global batch (a multiple of `step`, at least batch_unit) whose train step XLA
  compiles within the device's memory: from config.train.batch_size, doubling while it fits (or
  halving while it does not), then bisecting between the last fit and the first refusal. Each
  probe is a compile. Returns (batch, its report, [(batch, fits), ...] in probe order); (0, None,
  probes) when even one granule does not fit."""
  devices = devices if devices is not None else topology_devices(topology)
  unit = batch_unit(config, devices)
  step = max(unit, -(-step // unit) * unit) if step else unit
  probes: list[tuple[int, bool]] = []
  best: dict[int, Report] = {}

  def fits(batch: int) -> bool:
    start = time.perf_counter()
    try:
      best[batch] = report(with_batch(config, batch), topology, devices)
      ok = best[batch].peak_bytes <= (best[batch].hbm_bytes or float("inf"))
    except DoesNotFit:
      ok = False
    probes.append((batch, ok))
    log(f"  batch {batch}: " + (f"fits, peak {best[batch].peak_bytes / 2**30:.2f} GiB per device" if ok
                                else "does not fit") + f" (compiled in {time.perf_counter() - start:.0f} s)")
    return ok

  lo, hi = 0, None  # lo fits (0: none yet), hi does not (None: none yet)
  b = max(step, config.train.batch_size // step * step)
  if fits(b):
    lo = b
    while hi is None:
      if 2 * lo > limit:
        log(f"  stopped doubling at --max_batch_limit={limit}")
        return lo, best[lo], probes
      if fits(2 * lo):
        lo *= 2
      else:
        hi = 2 * lo
  else:
    hi = b
    while lo == 0 and hi > step:
      b = max(step, hi // 2 // step * step)
      if fits(b):
        lo = b
      else:
        hi = b
    if lo == 0:
      return 0, None, probes
  while hi - lo > step:
    mid = (lo + hi) // 2 // step * step
    if fits(mid):
      lo = mid
    else:
      hi = mid
  return lo, best[lo], probes


# The pod-slice table: (config, topology, overrides). Global batches are the papers': ALBERT
# trains BERT-large and ALBERT-xxlarge at 4096 x 512, ELECTRA-large at 2048 x 512. Every cell is
# FSDP over all devices, bfloat16 activations, full remat and a scanned layer stack.
_POD = dict(**{"mesh.preset": "fsdp", "mesh.data": 1, "mesh.fsdp": -1, "model.dtype": "bfloat16",
               "model.remat_policy": "full", "model.scan_layers": True, "data.max_seq_length": 512})
TABLE = [(cfg, topo, dict(_POD, **{"train.batch_size": batch}))
         for cfg, batch in (("bert.py:large", 4096), ("albert.py:xxlarge", 4096),
                            ("electra.py:large", 2048))
         for topo in ("v4:4x4x4", "v5e:16x16")]
# What the topologies are called when one is created (launch/tpu_vm.py --accelerator-type).
SLICE_NAMES = {"v4:4x4x4": "v4-128", "v5e:16x16": "v5litepod-256"}


def table_row(name: str, overrides: dict, r: Report | DoesNotFit, mfu: float, largest: str | None = None) -> str:
  """One markdown row of the pod-slice table (`largest`: the --max_batch column)."""
  gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
  setup = (f"{overrides['train.batch_size']} x {overrides['data.max_seq_length']}, "
           f"{overrides['mesh.preset']}, {overrides['model.dtype']}, remat {overrides['model.remat_policy']}")
  extra = "" if largest is None else f" {largest} |"
  if isinstance(r, DoesNotFit):
    return (f"| {name} | {setup} | does not fit: needs {gib(r.needed or 0)} of {gib(r.available or 0)} "
            "GiB per device | | | |" + extra)
  step = (r.model_flops / (r.chips * r.peak_flops_per_chip * mfu)) if r.peak_flops_per_chip else float("nan")
  slice_name = SLICE_NAMES.get(r.topology, r.topology)
  return (f"| {name} | {slice_name} (`{r.topology}`: {r.chips} chips, {r.devices} devices) | {setup} | "
          f"{gib(r.peak_bytes)} of {gib(r.hbm_bytes or 0)} GiB per device | "
          f"{r.model_flops / 1e15:.1f} PFLOP ({r.model_flops / r.chips / 1e12:.1f} TFLOP per chip) | "
          f"{step:.2f} s |" + extra)


def table_config(name: str, overrides: dict):
  config = configs.load(name)
  config.update_from_flattened_dict(overrides)
  # The papers' prediction slots at length 512: the mask rate's share of the tokens.
  config.data.max_predictions_per_seq = math.ceil(config.data.max_seq_length * config.data.mask_rate)
  return config


def run_table(mfu: float, only: str = "", search: bool = False, step: int = 0, limit: int = 2**20) -> None:
  """Compiles every TABLE cell (or those whose config or topology contains `only`) and prints
  the markdown table row by row (each compile takes minutes on a CPU); with `search`, also the
  largest global batch that fits in each cell (max_batch, a compile per probe)."""
  extra = (" largest global batch that fits (peak per device) |", "---:|") if search else ("", "")
  print(f"| model | slice | global batch, preset, dtype, remat | peak memory | model FLOPs per step | "
        f"step at {mfu:.0%} MFU |{extra[0]}\n|---|---|---|---:|---:|---:|{extra[1]}", flush=True)
  for name, topo, overrides in TABLE:
    if only and only not in name and only not in topo:
      continue
    config = table_config(name, overrides)
    try:
      r = report(config, topo)
    except DoesNotFit as e:
      r = e
    largest = None
    if search:
      b, best, _ = max_batch(config, topo, step=step, limit=limit, log=lambda line: print(line, file=sys.stderr,
                                                                                        flush=True))
      largest = f"{b} ({best.peak_bytes / 2**30:.2f} GiB)" if best else "none"
    print(table_row(f"{name} ({r.params / 1e6:.0f}M)" if isinstance(r, Report) else name, overrides, r,
                    mfu, largest), flush=True)


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.table:
    run_table(f.mfu, f.only, f.max_batch, f.max_batch_step, f.max_batch_limit)
    return
  if f.config is None:
    raise SystemExit("--config=configs/<family>.py:<arg> is required (or --table).")
  if f.max_batch:
    b, best, probes = max_batch(f.config, f.topology, step=f.max_batch_step, limit=f.max_batch_limit)
    print(f"{f.topology}: largest global batch that fits: {b} ({len(probes)} compiles: "
          + ", ".join(f"{n} {'fits' if ok else 'no'}" for n, ok in probes) + ")")
    if best:
      print("\n".join(best.lines()))
    raise SystemExit(0 if best else 2)
  try:
    r = report(f.config, f.topology)
  except DoesNotFit as e:
    print(e)
    raise SystemExit(2) from None
  print("\n".join(r.lines()))
  if f.json:
    print(json.dumps(dataclasses.asdict(r)))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  configs.define_flag("config", "configs/<family>.py:<arg> or a packaged <family>.py:<arg>")
  flags.DEFINE_string("topology", "v5e:4x4", "TPU topology (needs libtpu) or 'cpu'")
  flags.DEFINE_bool("json", False, "also print the figures as one JSON line")
  flags.DEFINE_bool("table", False, "compile the pod-slice table (TABLE) and print it as markdown")
  flags.DEFINE_float("mfu", 0.5, "--table: MFU the estimated step time assumes")
  flags.DEFINE_string("only", "", "--table: only the cells whose config or topology contains this")
  flags.DEFINE_bool("max_batch", False, "search the largest global batch that fits (doubling, then bisection; "
                    "a compile per probe); with --table, for every cell")
  flags.DEFINE_integer("max_batch_step", 0, "--max_batch: resolution of the search, rounded up to a multiple of "
                       "the data-parallel size (0: that size)")
  flags.DEFINE_integer("max_batch_limit", 2**20, "--max_batch: stop doubling past this batch")
  app.run(main)
