r"""Compiles a config's train step ahead of time for a device topology: memory and FLOPs per device.

No accelerator is needed: with libtpu installed (`pip install "jax[tpu]==<jax version>"`, not
part of requirements.txt) JAX compiles for a TPU topology on a CPU machine, so a pod-slice
layout can be checked before launching it:

  python -m bert_jax.benchmarks.aot_compile --config=configs/bert.py:large \
      --topology=v5e:4x4 --config.mesh.preset=fsdp --config.mesh.data=1 --config.mesh.fsdp=-1

--topology=cpu compiles for this process's devices instead (with
XLA_FLAGS=--xla_force_host_platform_device_count=8, eight fake CPU devices).

Printed per device (XLA's memory analysis of the compiled step): arguments (the sharded train
state and batch), outputs, temporaries, their sum as the peak estimate, and the step's FLOPs.
The state is donated, so arguments and outputs share buffers on the device. The peak is compared
with the memory of one DEVICE (a v4 chip is two devices of 16 GiB when the topology lists its
TensorCores separately; a real device reports its own limit). When XLA refuses the step
(RESOURCE_EXHAUSTED), a does-not-fit report says what was needed and available per device and
what would help (remat, gradient accumulation, bfloat16, more FSDP) instead of a traceback.

--table compiles the pod-slice table README carries (BERT-large, ALBERT-xxlarge, ELECTRA-large
for v4-128 and v5e-256, `TABLE`) and prints it as markdown: per-device peak against the device's
memory, the model FLOPs of the step (bert_jax.flops: XLA's count covers a scanned layer stack's
body once) and a step time estimated at --mfu of the chips' bf16 peak.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import jax
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import flops as flops_lib
from bert_jax import train

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


def topology_devices(topology: str) -> list[Any]:
  if topology == "cpu":
    return jax.devices()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--topology={topology!r}: cannot describe it ({e}). TPU topologies such as "
                     "v5e:4x4 need libtpu: pip install \"jax[tpu]==<your jax version>\".") from e


def lower_train_step(config, devices) -> tuple[Any, dict]:
  """The loop's train step (train.setup + train.compile_steps) lowered for `devices` with
  abstract state and batch (nothing allocated), and the setup dict."""
  s = train.setup(config, devices=devices)
  train_step, _, _ = train.compile_steps(config, s)
  state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                       s["abstract"], s["state_sh"])
  batch = batch_lib.abstract(s["task"].features, config.train.batch_size, s["mesh"], s["rules"])
  frozen = () if s["frozen_sh"] is None else (jax.tree.map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
      jax.eval_shape(s["task"].frozen_params), s["frozen_sh"]),)
  with train.mesh_context(s["mesh"], s["rules"]):
    lowered = train_step.lower(state, batch, *frozen)
  return lowered, s


def compile_train_step(config, devices) -> tuple[Any, dict]:
  """The compiled train step for `devices` and the setup dict (see bert_jax.train.setup)."""
  lowered, s = lower_train_step(config, devices)
  with train.mesh_context(s["mesh"], s["rules"]):
    compiled = lowered.compile()
  return compiled, s


def report(config, topology: str) -> Report:
  """Compiles and measures; raises DoesNotFit (with the report) when XLA runs out of memory."""
  devices = topology_devices(topology)
  lowered, s = lower_train_step(config, devices)
  try:
    with train.mesh_context(s["mesh"], s["rules"]):
      compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError / JaxRuntimeError
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    needed, available = parse_oom(str(e))
    raise DoesNotFit(does_not_fit_report(config, topology, len(devices), dict(s["mesh"].shape), str(e)),
                     needed, available) from None
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(s["abstract"]["params"]))
  arg, out, tmp = (int(getattr(mem, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp"))
  alias = int(getattr(mem, "alias_size_in_bytes", 0))  # donated state: outputs reuse arguments
  hbm, source = device_memory(topology, devices)
  return Report(topology=topology, devices=len(devices), mesh=dict(s["mesh"].shape), params=params,
                argument_bytes=arg, output_bytes=out, temp_bytes=tmp, peak_bytes=arg + out - alias + tmp,
                flops=float((cost or {}).get("flops", 0.0)), hbm_bytes=hbm, memory_source=source,
                chips=len(devices) // devices_per_chip(devices),
                model_flops=flops_lib.train_step_flops(config, s["task"]),
                peak_flops_per_chip=flops_lib.chip_peak_flops(devices[0])[0])


# The pod-slice table: (config, topology, overrides). Global batches are the papers': ALBERT
# trains BERT-large and ALBERT-xxlarge at 4096 x 512, ELECTRA-large at 2048 x 512. Every cell is
# FSDP over all devices, bfloat16 activations, full remat and a scanned layer stack.
_POD = dict(**{"mesh.preset": "fsdp", "mesh.data": 1, "mesh.fsdp": -1, "model.dtype": "bfloat16",
               "model.remat_policy": "full", "model.scan_layers": True, "data.max_seq_length": 512})
TABLE = [(cfg, topo, dict(_POD, **{"train.batch_size": batch}))
         for cfg, batch in (("bert.py:large", 4096), ("albert.py:xxlarge", 4096),
                            ("electra.py:large", 2048))
         for topo in ("v4:4x4x4", "v5e:16x16")]


def table_row(name: str, overrides: dict, r: Report | DoesNotFit, mfu: float) -> str:
  """One markdown row of the pod-slice table."""
  gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
  setup = (f"{overrides['train.batch_size']} x {overrides['data.max_seq_length']}, "
           f"{overrides['mesh.preset']}, {overrides['model.dtype']}, remat {overrides['model.remat_policy']}")
  if isinstance(r, DoesNotFit):
    return (f"| {name} | {setup} | does not fit: needs {gib(r.needed or 0)} of {gib(r.available or 0)} "
            "GiB per device | | | |")
  step = (r.model_flops / (r.chips * r.peak_flops_per_chip * mfu)) if r.peak_flops_per_chip else float("nan")
  return (f"| {name} | {r.topology} ({r.chips} chips, {r.devices} devices) | {setup} | "
          f"{gib(r.peak_bytes)} of {gib(r.hbm_bytes or 0)} GiB per device | "
          f"{r.model_flops / 1e15:.1f} PFLOP ({r.model_flops / r.chips / 1e12:.1f} TFLOP per chip) | "
          f"{step:.2f} s |")


def run_table(mfu: float, only: str = "") -> None:
  """Compiles every TABLE cell (or those whose config or topology contains `only`) and prints
  the markdown table row by row (each compile takes minutes on a CPU)."""
  from bert_jax import configs  # pylint: disable=g-import-not-at-top
  print(f"| model | slice | global batch, preset, dtype, remat | peak memory | model FLOPs per step | "
        f"step at {mfu:.0%} MFU |\n|---|---|---|---:|---:|---:|", flush=True)
  for name, topo, overrides in TABLE:
    if only and only not in name and only not in topo:
      continue
    config = configs.load(name)
    config.update_from_flattened_dict(overrides)
    # The papers' prediction slots at length 512: the mask rate's share of the tokens.
    config.data.max_predictions_per_seq = math.ceil(config.data.max_seq_length * config.data.mask_rate)
    try:
      r = report(config, topo)
    except DoesNotFit as e:
      r = e
    print(table_row(f"{name} ({r.params / 1e6:.0f}M)" if isinstance(r, Report) else name, overrides, r,
                    mfu), flush=True)


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  if flags.FLAGS.table:
    run_table(flags.FLAGS.mfu, flags.FLAGS.only)
    return
  if flags.FLAGS.config is None:
    raise SystemExit("--config=configs/<family>.py:<arg> is required (or --table).")
  try:
    r = report(flags.FLAGS.config, flags.FLAGS.topology)
  except DoesNotFit as e:
    print(e)
    raise SystemExit(2) from None
  print("\n".join(r.lines()))
  if flags.FLAGS.json:
    print(json.dumps(dataclasses.asdict(r)))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  from bert_jax import configs  # pylint: disable=g-import-not-at-top
  configs.define_flag("config", "configs/<family>.py:<arg> or a packaged <family>.py:<arg>")
  flags.DEFINE_string("topology", "v5e:4x4", "TPU topology (needs libtpu) or 'cpu'")
  flags.DEFINE_bool("json", False, "also print the figures as one JSON line")
  flags.DEFINE_bool("table", False, "compile the pod-slice table (TABLE) and print it as markdown")
  flags.DEFINE_float("mfu", 0.5, "--table: MFU the estimated step time assumes")
  flags.DEFINE_string("only", "", "--table: only the cells whose config or topology contains this")
  app.run(main)
