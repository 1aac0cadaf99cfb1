"""Device mesh and logical-axis rules: the only place that knows mesh axis names.

Model code names logical axes ("batch", "embed", "mlp", ...). A preset is an ORDERED list of
(logical, mesh axes) rules; flax resolves them in order and never uses a mesh axis twice in
one PartitionSpec, so e.g. activations ("batch", "length", "embed") under `fsdp` shard the
batch over (data, fsdp) and leave "embed" replicated, while a kernel ("embed", "mlp") shards
"embed" over fsdp.
No preset names "lora" (LoRA rank) or "adapter" (adapter bottleneck): those axes stay
replicated, while the other axes of LoRA/adapter params follow their kernel's. Nor "layers",
the stacked-layer axis of scanned params (config.model.scan_layers): every device holds all
layers of its shard, so scanning changes no kernel's sharding.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
Rules = tuple[tuple[str, Any], ...]

PRESETS: dict[str, Rules] = {
    # Pure data parallel: parameters replicated, batch split over every device.
    "dp": (("batch", ("data", "fsdp")),),
    # ZeRO-3 style: batch over data x fsdp, parameters split along their embed/vocab/mlp dims.
    "fsdp": (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("vocab", "fsdp"),
        ("mlp", "fsdp"),
        ("hidden", "fsdp"),
    ),
    # Megatron-style tensor parallel: heads / mlp / vocab split over `tensor`.
    "tp": (
        ("batch", ("data", "fsdp")),
        ("heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
    ),
    "fsdp_tp": (
        ("batch", ("data", "fsdp")),
        ("heads", "tensor"),
        ("mlp", "tensor"),
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("hidden", "fsdp"),
    ),
}


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh with axes (data, fsdp, tensor); at most one size may be -1 (the rest)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  auto = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(auto) > 1:
    raise ValueError(f"Only one of config.mesh.{{data,fsdp,tensor}} may be -1, got -1 for {auto}.")
  for a, s in zip(MESH_AXES, sizes):
    if s == 0 or s < -1:
      raise ValueError(f"config.mesh.{a}={s} must be a positive size or -1.")
  known = math.prod(s for s in sizes if s != -1)
  if auto:
    if len(devices) % known:
      raise ValueError(
          f"config.mesh {dict(zip(MESH_AXES, sizes))} does not fit {len(devices)} devices: the fixed "
          f"axes multiply to {known}, which does not divide {len(devices)}. Fix config.mesh.*.")
    sizes[MESH_AXES.index(auto[0])] = len(devices) // known
  elif known != len(devices):
    raise ValueError(
        f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {known} devices but {len(devices)} are "
        f"present. Set one of config.mesh.data/fsdp/tensor to -1 or fix the sizes.")
  # mesh_utils picks a physical ordering that keeps `tensor` (last axis) on nearby chips.
  try:
    grid = jax.experimental.mesh_utils.create_device_mesh(sizes, devices=devices)
  except Exception:  # pylint: disable=broad-except  # CPU / odd topologies
    grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, MESH_AXES)


def parse_rules(text: str) -> Rules:
  """'batch=data+fsdp,embed=fsdp,kv=' -> (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("kv", None))."""
  rules = []
  for item in (t.strip() for t in text.split(",")):
    if not item:
      continue
    if "=" not in item:
      raise ValueError(f"config.mesh.logical_axis_rules item {item!r} must look like logical=mesh[+mesh].")
    name, axes = (s.strip() for s in item.split("=", 1))
    parts = tuple(p for p in axes.split("+") if p)
    for p in parts:
      if p not in MESH_AXES:
        raise ValueError(f"config.mesh.logical_axis_rules: unknown mesh axis {p!r} in {item!r}; "
                         f"mesh axes are {MESH_AXES}.")
    rules.append((name, None if not parts else parts[0] if len(parts) == 1 else parts))
  return tuple(rules)


def rules_from_config(mesh_config) -> Rules:
  """The preset's rules, preceded by config.mesh.logical_axis_rules (earlier rules win)."""
  if mesh_config.preset not in PRESETS:
    raise ValueError(f"Unknown config.mesh.preset={mesh_config.preset!r}; choose one of {sorted(PRESETS)}.")
  return parse_rules(mesh_config.get("logical_axis_rules", "") or "") + PRESETS[mesh_config.preset]


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def resolve(logical: Sequence[str | None], shape: Sequence[int] | None, mesh: Mesh | None,
            rules: Rules) -> PartitionSpec:
  """Logical names -> mesh PartitionSpec, as flax does (rules in order, a mesh axis used once)
  plus one fallback: a rule whose mesh axes do not divide the dimension is skipped, so a 2-row
  token-type table on an 8-way axis stays replicated and the next dimension may take the axis.
  """
  used, out = set(), []
  for i, name in enumerate(logical):
    choice = None
    for rule_name, axes in rules:
      if name is None or rule_name != name:
        continue
      flat = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
      if used & set(flat):
        continue
      if shape is not None and mesh is not None and flat and shape[i] % _axis_size(mesh, flat):
        continue
      choice = axes
      used |= set(flat)
      break
    out.append(choice)
  return PartitionSpec(*out)


def logical_to_sharding(logical_specs, shapes, mesh: Mesh, rules: Rules):
  """NamedShardings for a pytree of logical PartitionSpecs and matching shapes."""

  def one(spec, shape):
    spec = tuple(spec) if spec is not None else ()
    spec = spec + (None,) * (len(shape.shape) - len(spec))
    return NamedSharding(mesh, resolve(spec, shape.shape, mesh, rules))

  is_spec = lambda x: isinstance(x, PartitionSpec) or x is None
  return jax.tree.map(one, logical_specs, shapes, is_leaf=is_spec)


def batch_axes(rules: Rules):
  """Mesh axes of the logical "batch" axis under `rules`."""
  return resolve(("batch",), None, None, rules)[0]


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Leading dim split over the batch mesh axes, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(rules), *([None] * (ndim - 1))))


def data_parallel_size(mesh: Mesh, rules: Rules) -> int:
  return _axis_size(mesh, batch_axes(rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh, rules: Rules) -> dict[str, jax.Array]:
  """Assembles global arrays from this host's rows (each host feeds only its own slice)."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, rules, np.ndim(v)), np.asarray(v))
          for k, v in local.items()}
