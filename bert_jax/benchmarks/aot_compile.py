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
The state is donated, so arguments and outputs share buffers on the device.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import train

# HBM per chip in GiB, for the "fits" column (public Cloud TPU figures).
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}


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
  hbm_bytes: int | None

  def lines(self) -> list[str]:
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    out = [f"{self.topology}: {self.devices} devices, mesh {self.mesh}, {self.params / 1e6:.1f}M params",
           f"  per device: arguments {gib(self.argument_bytes)}, outputs {gib(self.output_bytes)}, "
           f"temporaries {gib(self.temp_bytes)}, peak estimate {gib(self.peak_bytes)}",
           f"  step FLOPs per device: {self.flops / 1e12:.3f} TFLOP"]
    if self.hbm_bytes:
      verdict = "fits" if self.peak_bytes <= self.hbm_bytes else "does NOT fit"
      out.append(f"  {verdict} in {gib(self.hbm_bytes)} of HBM per chip")
    return out


def topology_devices(topology: str) -> list[Any]:
  if topology == "cpu":
    return jax.devices()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--topology={topology!r}: cannot describe it ({e}). TPU topologies such as "
                     "v5e:4x4 need libtpu: pip install \"jax[tpu]==<your jax version>\".") from e


def compile_train_step(config, devices) -> tuple[Any, dict]:
  """The compiled train step for `devices` and the setup dict (see bert_jax.train.setup)."""
  s = train.setup(config, devices=devices)
  train_step, _, _ = train.compile_steps(config, s)
  state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                       s["abstract"], s["state_sh"])
  batch = batch_lib.abstract(s["task"].features, config.train.batch_size, s["mesh"], s["rules"])
  with train.mesh_context(s["mesh"], s["rules"]):
    compiled = train_step.lower(state, batch).compile()
  return compiled, s


def report(config, topology: str) -> Report:
  devices = topology_devices(topology)
  compiled, s = compile_train_step(config, devices)
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(s["abstract"]["params"]))
  arg, out, tmp = (int(getattr(mem, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp"))
  alias = int(getattr(mem, "alias_size_in_bytes", 0))  # donated state: outputs reuse arguments
  kind = topology.split(":")[0]
  hbm = HBM_GIB.get(kind)
  return Report(topology=topology, devices=len(devices), mesh=dict(s["mesh"].shape), params=params,
                argument_bytes=arg, output_bytes=out, temp_bytes=tmp, peak_bytes=arg + out - alias + tmp,
                flops=float((cost or {}).get("flops", 0.0)), hbm_bytes=hbm * 2**30 if hbm else None)


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  r = report(flags.FLAGS.config, flags.FLAGS.topology)
  print("\n".join(r.lines()))
  if flags.FLAGS.json:
    print(json.dumps(dataclasses.asdict(r)))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<arg>", lock_config=True)
  flags.DEFINE_string("topology", "v5e:4x4", "TPU topology (needs libtpu) or 'cpu'")
  flags.DEFINE_bool("json", False, "also print the figures as one JSON line")
  flags.mark_flags_as_required(["config"])
  app.run(main)
