"""The jitted steps of a Setup (bert_jax.state), and evaluation over a task's held-out batches.

  compile_steps(config, s) -> Steps(train, eval, init): jax.jit with explicit in/out shardings
      (our pjit); the train state is donated
  train(state, batch[, frozen]) -> (state, metrics): one optimizer update over
      config.train.grad_accum_steps micro-batches; non-finite updates are skipped and counted
  evaluate(eval_step, params, batches_fn, s) -> the task's eval values (device + host metrics)
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import batch as batch_lib
from bert_jax import sharding
from bert_jax.state import Setup
from bert_jax.state import merge_trainable
from bert_jax.state import split_trainable
from bert_jax.tasks import base


@contextlib.contextmanager
def mesh_context(mesh, rules):
  """Mesh + logical rules active while tracing, so the model's activation constraints resolve."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def make_train_step(config, s: Setup):
  """step(state, batch, frozen) -> (state, metrics): one optimizer update over grad_accum_steps
  micro-batches; gradients and optimizer state cover the task's trainable parameters only."""
  task, tx, lr_fn, mask = s.task, s.tx, s.lr_fn, s.trainable
  accum = int(config.train.grad_accum_steps)
  batch_axes = sharding.batch_axes(s.rules)

  def step(state, batch, frozen=None):
    params = state["params"]
    train_p, fixed_p = split_trainable(params, mask)
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    loss_fn = lambda tp, b, r: task.loss(merge_trainable(tp, fixed_p), b, r, frozen=frozen)  # noqa: E731
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum == 1:
      (loss, metrics), grads = grad_fn(train_p, batch, rng)
    else:
      # Micro-batch i takes rows i, i+A, i+2A, ...: every device keeps its own rows (no reshuffle).
      def split(x):
        x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
        spec = jax.sharding.PartitionSpec(None, batch_axes, *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(s.mesh, spec))

      micro = jax.tree.map(split, batch)

      def body(carry, xs):
        mb, i = xs
        (l, m), g = grad_fn(train_p, mb, jax.random.fold_in(rng, i))
        g_acc, m_acc, l_acc = carry
        return (jax.tree.map(jnp.add, g_acc, g), base.sum_metrics(m_acc, m), l_acc + l), None

      zeros_g = jax.tree.map(jnp.zeros_like, train_p)
      first_mb = jax.tree.map(lambda x: x[0], micro)
      zeros_m = jax.eval_shape(lambda: loss_fn(train_p, first_mb, rng)[1])
      zeros_m = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), zeros_m)
      (grads, metrics, loss), _ = jax.lax.scan(body, (zeros_g, zeros_m, jnp.zeros((), jnp.float32)),
                                               (micro, jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, grads)
      loss = loss / accum
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, state["opt_state"], train_p)
    new_params = merge_trainable(optax.apply_updates(train_p, updates), fixed_p)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
    nonfinite = jnp.where(ok, 0, state["nonfinite"] + 1)
    new_state = {"step": state["step"] + 1, "params": keep(new_params, params),
                 "opt_state": keep(new_opt, state["opt_state"]), "rng": state["rng"],
                 "nonfinite": nonfinite, "skipped": state["skipped"] + (~ok).astype(jnp.int32)}
    one = jnp.ones((), jnp.float32)
    metrics = dict(metrics)
    metrics["grad_norm"] = jnp.stack([jnp.where(ok, grad_norm, 0.0), ok.astype(jnp.float32)])
    metrics["learning_rate"] = jnp.stack([lr_fn(state["step"]), one])
    metrics["nonfinite_run"] = jnp.stack([nonfinite.astype(jnp.float32), one])
    metrics["skipped_total"] = jnp.stack([new_state["skipped"].astype(jnp.float32), one])
    return new_state, metrics

  return step


def make_eval_step(config, s: Setup):
  task = s.task

  def step(params, batch, frozen=None):
    # ELECTRA samples replacements at eval too: a fixed key keeps eval reproducible.
    return task.eval_step(params, batch, jax.random.PRNGKey(config.seed + 1), frozen=frozen)

  return step


class Steps(NamedTuple):
  train: Callable[..., Any]  # (state, batch[, frozen]) -> (state, metrics); the state is donated
  eval: Callable[..., Any]   # (params, batch[, frozen]) -> (metrics, outputs)
  init: Callable[..., Any]   # rng -> the sharded train state


def compile_steps(config, s: Setup) -> Steps:
  """Jitted train / eval / init functions with explicit shardings; the state is donated."""
  repl = sharding.replicated(s.mesh)
  frozen_sh = () if s.frozen_sh is None else (s.frozen_sh,)  # a third argument only when used
  train_step = jax.jit(make_train_step(config, s), in_shardings=(s.state_sh, s.batch_sh) + frozen_sh,
                       out_shardings=(s.state_sh, repl), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(config, s), in_shardings=(s.param_sh, s.batch_sh) + frozen_sh,
                      out_shardings=repl)
  init = jax.jit(s.init_fn, out_shardings=s.state_sh)
  return Steps(train_step, eval_step, init)


def to_global(batch, s: Setup):
  """A host batch as global arrays on the mesh."""
  return batch_lib.to_global(s.task.features, batch, s.mesh, s.rules)


def frozen_args(s: Setup, task=None) -> tuple:
  """() or (the task's frozen state on the devices,): the steps' optional last argument."""
  if s.frozen_sh is None:
    return ()
  return (jax.device_put((task or s.task).frozen_params(), s.frozen_sh),)


def predict(eval_step, params, batches, s: Setup, frozen=()) -> dict[str, np.ndarray]:
  """The eval step's per-example outputs over `batches`, concatenated on the host."""
  outputs = [jax.device_get(eval_step(params, to_global(b, s), *frozen)[1]) for b in batches]
  return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]} if outputs else {}


def evaluate(eval_step, params, eval_fn, s: Setup, task=None, frozen=()) -> dict[str, float]:
  """The task's eval metrics over the held-out batches: device metrics summed, per-example
  outputs gathered for the task's host-side metrics."""
  total, outputs = None, []
  for batch in eval_fn():
    m, out = eval_step(params, to_global(batch, s), *frozen)
    total = m if total is None else base.sum_metrics(total, m)
    outputs.append(jax.device_get(out))
  if total is None:
    raise ValueError("The eval iterator yielded no batches: check config.eval.num_batches and the eval split.")
  values = base.reduce_metrics(total)
  values.update((task or s.task).host_metrics({k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}))
  return values
