"""The one training loop for BERT, ALBERT and ELECTRA: `train_and_evaluate(config, workdir)`.

Sections: validate -> mesh -> input -> model + abstract state -> shardings -> init / resume ->
step -> loop (log, eval, checkpoint, preemption). Where the starting point comes from, in order:
a checkpoint in <workdir>/checkpoints (auto-resume, with the data position) > config.init.hf_checkpoint
(warm start, fresh optimizer) > random init.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import checkpointing
from bert_jax import objectives
from bert_jax import optim
from bert_jax import sharding

BATCH_KEYS_2D = ("input_ids", "input_mask", "token_type_ids", "segment_ids", "position_ids")


def _print(*args) -> None:
  """Console output from process 0 only."""
  if jax.process_index() == 0:
    print(*args, flush=True)


# ----------------------------------------------------------------------------------------------
# Validation: every check that is cheap runs before anything is built or compiled.
# ----------------------------------------------------------------------------------------------
def validate(config, mesh=None, rules=None) -> None:
  """Raises ValueError naming the config key (and the fix) for inconsistent settings."""
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
  d = config.data
  if d.source == "text" and "://" not in d.text_glob and not glob.glob(d.text_glob or "\0"):
    raise ValueError(f"config.data.text_glob={d.text_glob!r} matches no file: missing corpus. "
                     "Point it at your text files or use config.data.source=builtin.")
  if d.source == "tfrecord" and "://" not in d.tfrecord_glob and not glob.glob(d.tfrecord_glob or "\0"):
    raise ValueError(f"config.data.tfrecord_glob={d.tfrecord_glob!r} matches no file: missing corpus.")
  if config.init.hf_checkpoint and "://" not in config.init.hf_checkpoint and not os.path.isdir(
      config.init.hf_checkpoint):
    raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r} is not a directory.")
  optim.validate(config.optimizer, t.num_steps)
  objectives.validate(config.objective, config.model)


# ----------------------------------------------------------------------------------------------
# Input: the real tf.data pipeline (bert_jax.data) or TF-free synthetic batches (tests, benchmarks).
# ----------------------------------------------------------------------------------------------
SYN_PAD, SYN_CLS, SYN_SEP, SYN_MASK, SYN_FIRST = 0, 1, 2, 3, 5


def synthetic_batch(config, index: int, batch_size: int, seed: int) -> dict[str, np.ndarray]:
  """A learnable global batch: each row counts up from a random start with a random stride.

  Deterministic in (seed, index), so resumed and multi-process runs see identical data.
  """
  rs = np.random.RandomState((seed * 1_000_003 + index) % (2**32))
  L, P, V = config.data.max_seq_length, config.data.max_predictions_per_seq, config.model.vocab_size
  span = V - SYN_FIRST
  start = rs.randint(0, span, (batch_size, 1))
  stride = rs.randint(1, 4, (batch_size, 1))
  ids = SYN_FIRST + (start + stride * np.arange(L)[None]) % span
  ids[:, 0], ids[:, -1] = SYN_CLS, SYN_SEP
  n_real = rs.randint(L // 2, L + 1, batch_size)
  mask = (np.arange(L)[None] < n_real[:, None]).astype(np.int32)
  ids = np.where(mask, ids, SYN_PAD)
  ttype = ((np.arange(L)[None] >= n_real[:, None] // 2) & (mask > 0)).astype(np.int32)
  pos = np.zeros((batch_size, P), np.int32)
  weights = np.zeros((batch_size, P), np.float32)
  for r in range(batch_size):
    k = min(P, max(1, int(round(0.15 * (n_real[r] - 2)))))
    pos[r, :k] = np.sort(rs.choice(np.arange(1, n_real[r] - 1), k, replace=False))
    weights[r, :k] = 1.0
  labels = np.take_along_axis(ids, pos, 1) * (weights > 0)
  roll = rs.rand(batch_size, P)
  replaced = np.where(roll < 0.8, SYN_MASK, np.where(roll < 0.9, rs.randint(SYN_FIRST, V, (batch_size, P)), labels))
  masked = ids.copy()
  for r in range(batch_size):
    k = int(weights[r].sum())
    masked[r, pos[r, :k]] = replaced[r, :k]
  return {
      "input_ids": masked.astype(np.int32), "input_mask": mask, "token_type_ids": ttype,
      "segment_ids": mask.copy(), "position_ids": np.broadcast_to(np.arange(L, dtype=np.int32), (batch_size, L)).copy(),
      "masked_lm_positions": pos, "masked_lm_ids": labels.astype(np.int32), "masked_lm_weights": weights,
      "next_sentence_labels": rs.randint(0, 2, batch_size).astype(np.int32),
  }


def _synthetic_iter(config, global_bs: int, start: int, seed: int, stop: int | None = None):
  pi, pc = jax.process_index(), jax.process_count()
  rows = slice(pi * global_bs // pc, (pi + 1) * global_bs // pc)
  i = start
  while stop is None or i < stop:
    yield {k: v[rows] for k, v in synthetic_batch(config, i, global_bs, seed).items()}
    i += 1


def make_inputs(config, workdir: str, start_batch: int):
  """(train iterator at `start_batch`, eval-iterator factory) of per-host numpy batches."""
  pi, pc = jax.process_index(), jax.process_count()
  bs, ebs = config.train.batch_size, config.eval.batch_size or config.train.batch_size
  if config.data.source == "synthetic":
    # Eval batches use a separate index range so they are never trained on.
    return (_synthetic_iter(config, bs, start_batch, config.data.seed),
            lambda: _synthetic_iter(config, ebs, 10**9, config.data.seed, 10**9 + config.eval.num_batches))
  from bert_jax.data import pipeline, tokenizers  # pylint: disable=g-import-not-at-top  # TF only here
  tok = tokenizers.build_or_load(config.data, workdir)
  if tok.vocab_size > config.model.vocab_size:
    raise ValueError(f"The tokenizer has {tok.vocab_size} ids but config.model.vocab_size="
                     f"{config.model.vocab_size}; raise config.model.vocab_size to >= {tok.vocab_size}.")
  train_it = pipeline.train_iterator(config.data, tok, batch_size=bs // pc, process_index=pi,
                                     process_count=pc, start_batch=start_batch, seed=config.data.seed)
  eval_fn = lambda: pipeline.eval_iterator(config.data, tok, batch_size=ebs // pc, process_index=pi,
                                           process_count=pc, num_batches=config.eval.num_batches,
                                           seed=config.data.seed)
  return train_it, eval_fn


# ----------------------------------------------------------------------------------------------
# Model, abstract state and shardings.
# ----------------------------------------------------------------------------------------------
def setup(config, mesh=None, devices=None):
  """Builds everything jittable: model, optimizer, shardings, init and step functions."""
  from bert_jax import models  # pylint: disable=g-import-not-at-top

  models.validate(config.model)
  mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.mesh)
  validate(config, mesh, rules)
  model = models.build(config.model)
  L, P = config.data.max_seq_length, config.data.max_predictions_per_seq
  if L > config.model.max_position_embeddings:
    raise ValueError(f"config.data.max_seq_length={L} exceeds config.model.max_position_embeddings="
                     f"{config.model.max_position_embeddings}.")
  dummy = models.dummy_batch(config.model, 2, L, P)
  tx, lr_fn = optim.build(config.optimizer, config.train.num_steps)

  def init_fn(rng):
    params = models.init_params(model, rng, dummy)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "rng": jax.random.key_data(jax.random.fold_in(rng, 1)),
            "nonfinite": jnp.zeros((), jnp.int32), "skipped": jnp.zeros((), jnp.int32)}

  # Init is traced WITHOUT the mesh context: params come out sharded via out_shardings, and
  # flax's boxed-kernel reshape in DenseGeneral would otherwise add rank-mismatched constraints.
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  logical = models.logical_specs(model, dummy)
  repl = sharding.replicated(mesh)
  param_sh = sharding.logical_to_sharding(logical, abstract["params"], mesh, rules)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract["opt_state"], param_sh,
                                 transform_non_params=lambda _: repl)
  state_sh = {"step": repl, "params": param_sh, "opt_state": opt_sh, "rng": repl, "nonfinite": repl,
              "skipped": repl}
  return dict(mesh=mesh, rules=rules, model=model, tx=tx, lr_fn=lr_fn, init_fn=init_fn, abstract=abstract,
              state_sh=state_sh, param_sh=param_sh)


@contextlib.contextmanager
def mesh_context(mesh, rules):
  """Mesh + logical rules active while tracing, so the model's activation constraints resolve."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def _batch_shardings(mesh, rules, keys):
  return {k: sharding.batch_sharding(mesh, rules, 1 if k == "next_sentence_labels" else 2) for k in keys}


def make_train_step(config, s):
  """step(state, batch) -> (state, metrics): one optimizer update over grad_accum_steps micro-batches."""
  loss_fn = objectives.build(config, s["model"])
  tx, lr_fn = s["tx"], s["lr_fn"]
  accum = int(config.train.grad_accum_steps)
  batch_axes = sharding.batch_axes(s["rules"])

  def step(state, batch):
    params = state["params"]
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum == 1:
      (loss, metrics), grads = grad_fn(params, batch, rng)
    else:
      # Micro-batch i takes rows i, i+A, i+2A, ...: every device keeps its own rows (no reshuffle).
      def split(x):
        x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
        spec = jax.sharding.PartitionSpec(None, batch_axes, *([None] * (x.ndim - 2)))
        return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(s["mesh"], spec))

      micro = jax.tree.map(split, batch)

      def body(carry, xs):
        mb, i = xs
        (l, m), g = grad_fn(params, mb, jax.random.fold_in(rng, i))
        g_acc, m_acc, l_acc = carry
        return (jax.tree.map(jnp.add, g_acc, g), objectives.sum_metrics(m_acc, m), l_acc + l), None

      zeros_g = jax.tree.map(jnp.zeros_like, params)
      first_mb = jax.tree.map(lambda x: x[0], micro)
      zeros_m = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: loss_fn(params, first_mb, rng)[1]))
      zeros_m = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), zeros_m)
      (grads, metrics, loss), _ = jax.lax.scan(body, (zeros_g, zeros_m, jnp.zeros((), jnp.float32)),
                                               (micro, jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, grads)
      loss = loss / accum
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
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


def make_eval_step(config, s):
  loss_fn = objectives.build(config, s["model"], eval_auc=True)

  def step(params, batch):
    # ELECTRA samples replacements at eval too: a fixed key keeps eval reproducible.
    return loss_fn(params, batch, jax.random.PRNGKey(config.seed + 1), deterministic=True)[1]

  return step


def compile_steps(config, s):
  """Jitted train / eval / init functions with explicit shardings; the state is donated."""
  keys = list(synthetic_batch_keys())
  batch_sh = _batch_shardings(s["mesh"], s["rules"], keys)
  repl = sharding.replicated(s["mesh"])
  train_step = jax.jit(make_train_step(config, s), in_shardings=(s["state_sh"], batch_sh),
                       out_shardings=(s["state_sh"], repl), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(config, s), in_shardings=(s["param_sh"], batch_sh), out_shardings=repl)
  init = jax.jit(s["init_fn"], out_shardings=s["state_sh"])
  return train_step, eval_step, init


def synthetic_batch_keys():
  return BATCH_KEYS_2D + ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


def _to_global(batch, s):
  batch = {k: batch[k] for k in synthetic_batch_keys()}
  return sharding.global_batch(batch, s["mesh"], s["rules"])


# ----------------------------------------------------------------------------------------------
# Warm start from an imported HuggingFace checkpoint.
# ----------------------------------------------------------------------------------------------
def warm_start_params(config, params):
  """Overwrites `params` leaves with those of config.init.hf_checkpoint (shapes must match)."""
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top

  hf_config, hf_params = hf.load_hf_checkpoint(config.init.hf_checkpoint)
  if hf_config["family"] != config.model.family:
    raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r} holds a "
                     f"{hf_config['family']} model but config.model.family={config.model.family!r}; "
                     f"use configs/{hf_config['family']}.py or another checkpoint.")
  flat_new = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(hf_params)[0]}
  n_loaded = 0

  def take(path, old):
    nonlocal n_loaded
    key = jax.tree_util.keystr(path)
    if key not in flat_new:
      return old
    new = np.asarray(flat_new[key])
    if new.shape != old.shape:
      raise ValueError(f"config.init.hf_checkpoint: {key} has shape {new.shape}, the model wants "
                       f"{old.shape}; make config.model match the checkpoint's config.json.")
    n_loaded += 1
    return jax.device_put(new.astype(old.dtype), old.sharding)

  out = jax.tree_util.tree_map_with_path(take, params)
  if n_loaded == 0:
    raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r}: none of its "
                     f"{len(flat_new)} tensors matches a parameter of config.model.")
  _print(f"Warm start: {n_loaded}/{len(flat_new)} tensors from {config.init.hf_checkpoint}")
  return out


# ----------------------------------------------------------------------------------------------
# Preemption: SIGTERM asks for a final checkpoint at the next step boundary.
# ----------------------------------------------------------------------------------------------
class _Preemption:
  """SIGTERM -> a final checkpoint at a step boundary.

  One process: our SIGTERM handler sets a flag that the loop reads before each step.
  Several processes: every host must stop at the same step (the save is collective), and a
  SIGTERM may reach one host only, or hosts at different steps. So we leave SIGTERM to JAX's
  preemption sync manager (set up by jax.distributed.initialize; our own handler would replace
  its) and ask CheckpointManager.reached_preemption(step), which answers True on every host at
  the same step.
  """

  def __init__(self, manager, multi_process: bool):
    self.requested = False
    self._manager, self._multi, self._old = manager, multi_process, None

  def __enter__(self):
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    return self._manager.reached_preemption(step) if self._multi else self.requested

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


# ----------------------------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------------------------
def evaluate(eval_step, params, eval_fn, s) -> tuple[dict[str, float], float]:
  """Eval metrics over the held-out batches and the most-frequent-target-token accuracy."""
  total, counts = None, {}
  for batch in eval_fn():
    m = eval_step(params, _to_global(batch, s))
    total = m if total is None else objectives.sum_metrics(total, m)
    ids, w = np.asarray(batch["masked_lm_ids"]).ravel(), np.asarray(batch["masked_lm_weights"]).ravel()
    for i, c in zip(*np.unique(ids[w > 0], return_counts=True)):
      counts[int(i)] = counts.get(int(i), 0) + int(c)
  if total is None:
    raise ValueError("The eval iterator yielded no batches: check config.eval.num_batches and the eval split.")
  n = sum(counts.values())
  return objectives.reduce_metrics(total), (max(counts.values()) / n if n else float("nan"))


_SETUP_CACHE: dict[str, Any] = {}


def _setup_cached(config, devices=None):
  """setup + jitted steps, reused when the same config runs again in this process (a resumed run
  in a notebook or a test), so the steps are not traced and compiled twice."""
  d = config.to_dict()
  # Cadences and the corpus do not change what is compiled.
  d["train"].pop("halt_after_steps", None)
  for section in ("checkpoint", "log", "eval", "init"):
    d.pop(section, None)
  d["data"] = {k: d["data"][k] for k in ("max_seq_length", "max_predictions_per_seq")}
  key = json.dumps(d, sort_keys=True, default=str) + str([x.id for x in (devices or jax.devices())])
  if key not in _SETUP_CACHE:
    s = setup(config, devices=devices)
    _SETUP_CACHE.clear()  # keep one entry: compiled executables hold memory
    _SETUP_CACHE[key] = (s, compile_steps(config, s))
  return _SETUP_CACHE[key]


def train_and_evaluate(config, workdir: str, devices=None) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds checkpoints); returns a summary dict.

  `devices` (default: all) are the devices the mesh is built from.
  """
  # --- setup -------------------------------------------------------------------------------
  s, (train_step, eval_step, init) = _setup_cached(config, devices)
  mesh, rules = s["mesh"], s["rules"]
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint)
  abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                          s["abstract"], s["state_sh"])

  # --- resume > warm start > scratch -------------------------------------------------------
  restored = ckpt.restore(abstract)
  if restored is not None:
    state, meta, at = restored
    start = int(meta["step"])
    data_pos = int(meta.get("data_batches", start))
    _print(f"Resumed from step {at} in {ckpt.directory} (data position {data_pos}).")
  else:
    state = init(jax.random.PRNGKey(config.seed))
    start = data_pos = 0
    if config.init.hf_checkpoint:
      params = warm_start_params(config, state["params"])
      opt_state = jax.jit(s["tx"].init, out_shardings=s["state_sh"]["opt_state"])(params)
      state = dict(state, params=params, opt_state=opt_state)
  train_it, eval_fn = make_inputs(config, workdir, data_pos)

  with mesh_context(mesh, rules):

    writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      writer = SummaryWriter(os.path.join(workdir, "tb"))
      n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(s["abstract"]["params"]))
      _print(f"{config.model.family}: {n_params / 1e6:.2f}M params | mesh {dict(mesh.shape)} "
             f"preset {config.mesh.preset} | {jax.device_count()} devices, {jax.process_count()} processes")

    num_steps = int(config.train.num_steps)
    halt = int(config.train.get("halt_after_steps", 0) or 0)
    tokens_per_step = config.train.batch_size * config.data.max_seq_length
    step, pending, prev, status = start, [], None, "done"
    last_eval: dict[str, float] = {}
    history: list[tuple[int, dict[str, float]]] = []  # (step, train log values), returned
    t_last, step_last = time.time(), start

    def save(metrics=None):
      meta = {"step": step, "data_batches": step, "family": config.model.family}
      ckpt.save(step, state, meta, metrics)

    def log_summaries(prefix, values):
      if writer is not None:
        for k, v in values.items():
          if np.isfinite(v):
            writer.add_scalar(f"{prefix}/{k}", v, step)
        writer.flush()

    with _Preemption(ckpt.manager, jax.process_count() > 1) as preempt:
      while step < num_steps:
        if preempt.reached(step):
          _print(f"Preemption signal at step {step}: saving a final checkpoint.")
          status = "preempted"
          break
        if halt and step - start >= halt:
          status = "halted"
          break
        state, metrics = train_step(state, _to_global(next(train_it), s))
        step += 1
        pending.append(metrics)
        # Look at the previous step's counter while this one runs (no stall of the device queue).
        if prev is not None and int(jax.device_get(prev["nonfinite_run"])[0]) >= config.train.max_consecutive_nonfinite:
          status = "nonfinite"
          break
        prev = metrics

        if step % config.log.every_steps == 0 or step == num_steps:
          values = objectives.reduce_metrics(jax.tree.map(lambda *x: sum(x), *pending))
          values["learning_rate"] = float(jax.device_get(pending[-1]["learning_rate"])[0])
          values["skipped_total"] = float(jax.device_get(pending[-1]["skipped_total"])[0])
          pending = []
          dt = time.time() - t_last
          rate = (step - step_last) / max(dt, 1e-9)
          values.update(steps_per_sec=rate, tokens_per_sec=rate * tokens_per_step, step_time=1 / max(rate, 1e-9))
          t_last, step_last = time.time(), step
          log_summaries("train", values)
          history.append((step, values))
          main = "gen_accuracy" if "gen_accuracy" in values else "mlm_accuracy"
          extra = f" disc_acc {values['disc_accuracy']:.3f}" if "disc_accuracy" in values else ""
          _print(f"step {step}/{num_steps} | loss {values['loss']:.4f} | {main} {values[main]:.3f}{extra} | "
                 f"lr {values['learning_rate']:.2e} | {rate:.2f} steps/s | ETA {_eta((num_steps - step) / max(rate, 1e-9))}")

        eval_now = step % config.eval.every_steps == 0 or step == num_steps
        if eval_now:
          last_eval, baseline = evaluate(eval_step, state["params"], eval_fn, s)
          last_eval["most_frequent_token_accuracy"] = baseline
          log_summaries("eval", last_eval)
          acc_key = "gen_accuracy" if "gen_accuracy" in last_eval else "mlm_accuracy"
          line = (f"eval @ {step}: {acc_key.replace('_', ' ')} {last_eval[acc_key]:.4f} vs most-frequent-token "
                  f"baseline {baseline:.4f}")
          if "disc_accuracy" in last_eval:
            line += (f" | disc acc {last_eval['disc_accuracy']:.4f} vs all-real baseline "
                     f"{1 - last_eval['disc_replaced_fraction']:.4f} | disc AUC {last_eval.get('disc_auc', float('nan')):.4f}")
          _print(line)
        if step % config.checkpoint.every_steps == 0 or step == num_steps:
          save({f"eval/{k}": v for k, v in last_eval.items()} if eval_now else None)

      if status == "nonfinite":
        _print(f"Stopping at step {step}: {config.train.max_consecutive_nonfinite} consecutive non-finite "
               f"steps. The last good checkpoint is kept (step {ckpt.latest_step()}).")
      elif step not in ckpt.all_steps():
        save()
    ckpt.close()
    if writer is not None:
      writer.close()
  return {"status": status, "step": step, "state": state, "eval": last_eval, "history": history,
          "checkpoint_steps": ckpt.all_steps()}
