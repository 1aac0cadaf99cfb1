"""Everything jittable about a run, before any step: `setup(config, task) -> Setup`.

Abstract first, then sharded: the task's params and the optimizer state are shapes
(jax.eval_shape) whose shardings come from the model's logical axis names and config.mesh's
rules (bert_jax.sharding); nothing is built until the loop's jitted init runs with those
shardings as out_shardings. `validate` runs every cheap check of the config before that.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from bert_jax import batch as batch_lib
from bert_jax import models
from bert_jax import optim
from bert_jax import sharding
from bert_jax.tasks import base
from bert_jax.tasks import registry


def validate(config, mesh=None, rules=None) -> None:
  """Raises ValueError naming the config key (and the fix) for inconsistent settings; reads no
  data and builds nothing (the task's own checks: its class's `validate`)."""
  t, e = config.train, config.eval
  if t.num_steps <= 0:
    raise ValueError(f"config.train.num_steps must be > 0, got {t.num_steps}.")
  if t.grad_accum_steps < 1 or t.batch_size % t.grad_accum_steps:
    raise ValueError(f"config.train.batch_size={t.batch_size} must be divisible by "
                     f"config.train.grad_accum_steps={t.grad_accum_steps} (>= 1).")
  pc = jax.process_count()
  for key, bs in (("train.batch_size", t.batch_size), ("eval.batch_size", e.batch_size or t.batch_size)):
    if bs % pc:
      raise ValueError(f"config.{key}={bs} must be divisible by the number of processes ({pc}).")
  if mesh is not None:
    dp = sharding.data_parallel_size(mesh, rules)
    micro = t.batch_size // t.grad_accum_steps
    if micro % dp:
      raise ValueError(
          f"config.train.batch_size={t.batch_size} / grad_accum_steps={t.grad_accum_steps} = {micro} "
          f"is not divisible by the data-parallel size {dp} (mesh {dict(mesh.shape)}, preset "
          f"{config.mesh.preset!r}). Change config.train.batch_size or config.mesh.*.")
    if (e.batch_size or t.batch_size) % dp:
      raise ValueError(f"config.eval.batch_size={e.batch_size or t.batch_size} is not divisible by the "
                       f"data-parallel size {dp}; set config.eval.batch_size.")
  for key in ("checkpoint.every_steps", "eval.every_steps", "log.every_steps"):
    section, name = key.split(".")
    if config[section][name] <= 0:
      raise ValueError(f"config.{key} must be > 0, got {config[section][name]}.")
  if t.get("max_consecutive_nonfinite", 1) < 1:
    raise ValueError("config.train.max_consecutive_nonfinite must be >= 1.")
  if config.init.hf_checkpoint and "://" not in config.init.hf_checkpoint and not os.path.isdir(
      config.init.hf_checkpoint):
    raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r} is not a directory.")
  optim.validate(config.optimizer, t.num_steps)
  # The task's checks (config.objective, config.data: TF-free), before a tokenizer is trained or a
  # step compiled.
  registry.task_class(config).validate(config)


# ----------------------------------------------------------------------------------------------
# Trainable / frozen halves of the params.
# ----------------------------------------------------------------------------------------------
def split_trainable(tree, mask):
  """(trainable, frozen) halves of a params-shaped tree; absent leaves are None."""
  if mask is None:
    return tree, None
  pick = lambda keep: jax.tree.map(lambda x, m: x if m == keep else None, tree, mask)  # noqa: E731
  return pick(True), pick(False)


def merge_trainable(trainable, frozen):
  if frozen is None:
    return trainable
  return jax.tree.map(lambda t, f: f if t is None else t, trainable, frozen, is_leaf=lambda x: x is None)


def make_init_fn(task, tx, mask):
  """rng -> the train state: params, optimizer state of the trainable ones, step, rng, counters."""

  def init_fn(rng):
    params = task.init_params(rng)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(split_trainable(params, mask)[0]),
            "rng": jax.random.key_data(jax.random.fold_in(rng, 1)),
            "nonfinite": jnp.zeros((), jnp.int32), "skipped": jnp.zeros((), jnp.int32)}

  return init_fn


@dataclasses.dataclass(frozen=True)
class Setup:
  """A run's mesh, task, optimizer, abstract train state and every sharding the steps use."""
  mesh: jax.sharding.Mesh
  rules: Any                      # logical axis rules (an ordered list), bert_jax.sharding
  task: base.Task
  tx: optax.GradientTransformation
  lr_fn: Callable[[Any], Any]     # step -> learning rate
  init_fn: Callable[[Any], Any]   # rng -> train state (jitted by the loop with state_sh)
  abstract: Any                   # the train state's ShapeDtypeStructs (no shardings)
  state_sh: Any                   # its NamedShardings
  param_sh: Any                   # = state_sh["params"]
  trainable: Any                  # bool mask of the trained params (None: all)
  batch_sh: Any                   # NamedShardings of a global batch
  frozen_sh: Any                  # NamedShardings of the task's frozen state (None: no frozen state)

  @property
  def model(self):
    return self.task.model

  def abstract_state(self):
    """The train state's ShapeDtypeStructs carrying their target shardings (to restore into)."""
    return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), self.abstract,
                        self.state_sh)

  def opt_init(self, params):
    """A fresh optimizer state for `params` (sharded like the state's)."""
    fn = lambda p: self.tx.init(split_trainable(p, self.trainable)[0])  # noqa: E731
    return jax.jit(fn, out_shardings=self.state_sh["opt_state"])(params)


def setup(config, task: base.Task, mesh=None, devices=None, check: bool = True) -> Setup:
  """Builds everything jittable of `task` under `config`: mesh, optimizer, abstract state, shardings.

  check=False skips the run checks (corpus present, batch divisible, ...): for readers of a
  finished run's checkpoints, which need its abstract state only."""
  models.validate(config.model)
  mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.mesh)
  if check:
    validate(config, mesh, rules)
  L = max((f.shape[0] for k, f in task.features.items() if k == "input_ids"), default=0)
  if L > config.model.max_position_embeddings:
    raise ValueError(f"config.data.max_seq_length={L} exceeds config.model.max_position_embeddings="
                     f"{config.model.max_position_embeddings}.")
  abstract_params = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
  mask = task.trainable(abstract_params)
  tx, lr_fn = optim.build(config.optimizer, config.train.num_steps,
                          lr_scales=optim.layer_lr_scales(config.optimizer, split_trainable(abstract_params, mask)[0],
                                                          config.model.num_hidden_layers))

  init_fn = make_init_fn(task, tx, mask)
  # Init is traced WITHOUT the mesh context: params come out sharded via out_shardings, and
  # flax's boxed-kernel reshape in DenseGeneral would otherwise add rank-mismatched constraints.
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  logical = task.logical_specs()
  repl = sharding.replicated(mesh)
  param_sh = sharding.logical_to_sharding(logical, abstract["params"], mesh, rules)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract["opt_state"], split_trainable(param_sh, mask)[0],
                                 transform_non_params=lambda _: repl)
  state_sh = {"step": repl, "params": param_sh, "opt_state": opt_sh, "rng": repl, "nonfinite": repl,
              "skipped": repl}
  frozen = task.frozen_params()
  frozen_sh = None
  if frozen is not None:
    specs = task.frozen_logical_specs()
    frozen_sh = (jax.tree.map(lambda _: repl, frozen) if specs is None else
                 sharding.logical_to_sharding(specs, jax.eval_shape(lambda: frozen), mesh, rules))
  return Setup(mesh=mesh, rules=rules, task=task, tx=tx, lr_fn=lr_fn, init_fn=init_fn, abstract=abstract,
               state_sh=state_sh, param_sh=param_sh, trainable=mask,
               batch_sh=batch_lib.shardings(task.features, mesh, rules), frozen_sh=frozen_sh)
