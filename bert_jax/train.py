"""The one training loop for BERT, ALBERT and ELECTRA: `train_and_evaluate(config, workdir)`.

The loop knows no objective or task by name: everything task-specific comes through the
`objectives.Task` contract (batch spec, loss, eval metrics, console lines, best metric, inputs,
warm start, trainable mask, frozen state).

Sections: validate -> mesh -> task -> abstract state -> shardings -> init / resume -> step ->
loop (log, eval, checkpoint, preemption). Where the starting point comes from, in order: a
checkpoint in <workdir>/checkpoints (auto-resume, with the data position) > the task's warm
start (config.init.*: an HF checkpoint, a pretraining workdir; fresh optimizer) > random init.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import threading
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax import batch as batch_lib
from bert_jax import checkpointing
from bert_jax import flops
from bert_jax import objectives
from bert_jax import optim
from bert_jax import sharding


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
  if config.init.hf_checkpoint and "://" not in config.init.hf_checkpoint and not os.path.isdir(
      config.init.hf_checkpoint):
    raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r} is not a directory.")
  optim.validate(config.optimizer, t.num_steps)
  # config.data too (bert_jax.data.checks, TF-free): before a tokenizer is trained or a step compiled.
  objectives.validate(config.objective, config.model, config.data)


def make_inputs(task, workdir: str, start_batch: int):
  """(train iterator at `start_batch`, eval-iterator factory) of per-host numpy batches."""
  return task.inputs(workdir, start_batch)


# ----------------------------------------------------------------------------------------------
# Model, abstract state and shardings.
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


def setup(config, mesh=None, devices=None, check: bool = True):
  """Builds everything jittable: task, model, optimizer, shardings, init and step functions.

  check=False skips the run checks (corpus present, batch divisible, ...): for readers of a
  finished run's checkpoints, which need its abstract state only."""
  from bert_jax import models  # pylint: disable=g-import-not-at-top

  models.validate(config.model)
  mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.mesh)
  if check:
    validate(config, mesh, rules)
  task = objectives.get_task(config)
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
  return dict(mesh=mesh, rules=rules, task=task, model=task.model, tx=tx, lr_fn=lr_fn, init_fn=init_fn,
              abstract=abstract, state_sh=state_sh, param_sh=param_sh, trainable=mask,
              batch_sh=batch_lib.shardings(task.features, mesh, rules), frozen_sh=frozen_sh)


@contextlib.contextmanager
def mesh_context(mesh, rules):
  """Mesh + logical rules active while tracing, so the model's activation constraints resolve."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def make_train_step(config, s):
  """step(state, batch, frozen) -> (state, metrics): one optimizer update over grad_accum_steps
  micro-batches; gradients and optimizer state cover the task's trainable parameters only."""
  task, tx, lr_fn, mask = s["task"], s["tx"], s["lr_fn"], s["trainable"]
  accum = int(config.train.grad_accum_steps)
  batch_axes = sharding.batch_axes(s["rules"])

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
        return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(s["mesh"], spec))

      micro = jax.tree.map(split, batch)

      def body(carry, xs):
        mb, i = xs
        (l, m), g = grad_fn(train_p, mb, jax.random.fold_in(rng, i))
        g_acc, m_acc, l_acc = carry
        return (jax.tree.map(jnp.add, g_acc, g), objectives.sum_metrics(m_acc, m), l_acc + l), None

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


def make_eval_step(config, s):
  task = s["task"]

  def step(params, batch, frozen=None):
    # ELECTRA samples replacements at eval too: a fixed key keeps eval reproducible.
    return task.eval_step(params, batch, jax.random.PRNGKey(config.seed + 1), frozen=frozen)

  return step


def compile_steps(config, s):
  """Jitted train / eval / init functions with explicit shardings; the state is donated."""
  batch_sh, repl = s["batch_sh"], sharding.replicated(s["mesh"])
  frozen_sh = () if s["frozen_sh"] is None else (s["frozen_sh"],)  # a third argument only when used
  train_step = jax.jit(make_train_step(config, s), in_shardings=(s["state_sh"], batch_sh) + frozen_sh,
                       out_shardings=(s["state_sh"], repl), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(config, s), in_shardings=(s["param_sh"], batch_sh) + frozen_sh,
                      out_shardings=repl)
  init = jax.jit(s["init_fn"], out_shardings=s["state_sh"])
  return train_step, eval_step, init


def _to_global(batch, s):
  return batch_lib.to_global(s["task"].features, batch, s["mesh"], s["rules"])


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
def frozen_args(s, task) -> tuple:
  """() or (the task's frozen state on the devices,): the steps' optional last argument."""
  if s["frozen_sh"] is None:
    return ()
  return (jax.device_put(task.frozen_params(), s["frozen_sh"]),)


def evaluate(eval_step, params, eval_fn, s, task=None, frozen=()) -> dict[str, float]:
  """The task's eval metrics over the held-out batches: device metrics summed, per-example
  outputs gathered for the task's host-side metrics."""
  total, outputs = None, []
  for batch in eval_fn():
    m, out = eval_step(params, _to_global(batch, s), *frozen)
    total = m if total is None else objectives.sum_metrics(total, m)
    outputs.append(jax.device_get(out))
  if total is None:
    raise ValueError("The eval iterator yielded no batches: check config.eval.num_batches and the eval split.")
  values = objectives.reduce_metrics(total)
  values.update((task or s["task"]).host_metrics({k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}))
  return values


CONFIG_FILE = "config.json"


def write_config(config, workdir: str) -> None:
  """<workdir>/config.json: what a later fine-tune or export needs to rebuild this run's model."""
  if jax.process_index() == 0:
    from etils import epath  # pylint: disable=g-import-not-at-top  # local and gs:// alike
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(config.to_json(indent=2))


def write_config_summary(writer, config, step: int) -> None:
  """The resolved config (defaults + overrides) as JSON in TensorBoard's Text tab (a markdown
  code block): at step 0, and a resumed run adds the config it resumed with at its first step."""
  writer.add_text("config", "\n".join("    " + line for line in config.to_json(indent=2).splitlines()), step)


_SETUP_CACHE: dict[str, Any] = {}


def _setup_cached(config, devices=None):
  """setup + jitted steps, reused when the same config runs again in this process (a resumed run
  in a notebook or a test), so the steps are not traced and compiled twice."""
  d = config.to_dict()
  # Cadences and the corpus do not change what is compiled.
  d["train"].pop("halt_after_steps", None)
  d["train"].pop("compilation_cache", None)
  for section in ("checkpoint", "log", "eval", "init"):
    d.pop(section, None)
  d["data"] = {k: d["data"][k] for k in ("max_seq_length", "max_predictions_per_seq")}
  key = json.dumps(d, sort_keys=True, default=str) + str([x.id for x in (devices or jax.devices())])
  if key not in _SETUP_CACHE:
    s = setup(config, devices=devices)
    _SETUP_CACHE.clear()  # keep one entry: compiled executables hold memory
    _SETUP_CACHE[key] = (s, compile_steps(config, s))
  return _SETUP_CACHE[key]


# ----------------------------------------------------------------------------------------------
# Start-up: compilation cache, TensorBoard writer, time to first step, a clean failed start.
# ----------------------------------------------------------------------------------------------
_ENV_CACHE_DIR = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")


def use_compilation_cache(config, workdir: str) -> str:
  """Points JAX's persistent compilation cache at config.train.compilation_cache (empty:
  $JAX_COMPILATION_CACHE_DIR, else <workdir>/compilation_cache; "none": off), so a restarted
  or preempted run loads its compiled steps instead of compiling them again. Returns the dir."""
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  path = config.train.get("compilation_cache", "") or _ENV_CACHE_DIR or os.path.join(workdir, "compilation_cache")
  path = "" if path == "none" else path if "://" in path else os.path.abspath(path)
  if (jax.config.jax_compilation_cache_dir or "") != path:
    compilation_cache.reset_cache()  # the cache binds its directory on first use
    jax.config.update("jax_compilation_cache_dir", path or None)
  return path


def _summary_writer(logdir: str):
  """tensorboardX's writer without PyTorch: tensorboardX imports torch when it is installed
  (only to accept torch tensors, ~8 s), so its import sees torch as absent."""
  import sys  # pylint: disable=g-import-not-at-top
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # `import torch` raises ImportError; tensorboardX falls back to numpy
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter(logdir)


def _seconds_since_launch() -> float | None:
  """Age of this process (Linux /proc), None elsewhere."""
  try:
    with open("/proc/self/stat") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def _config_differences(workdir: str, config, sections=("model", "objective", "optimizer"), limit=8) -> str:
  """' <workdir>/config.json (the run that wrote the checkpoints) differs in: ...', or ''."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = epath.Path(workdir) / CONFIG_FILE
  try:
    old = json.loads(path.read_text())
  except (OSError, ValueError):
    return ""

  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out

  new = json.loads(config.to_json())
  a, b = flat({k: old.get(k, {}) for k in sections}), flat({k: new.get(k, {}) for k in sections})
  diffs = [f"config.{k}: {a.get(k, '(absent)')!r} there, {b.get(k, '(absent)')!r} here"
           for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
  if not diffs:
    return ""
  more = f"\n  ... and {len(diffs) - limit} more" if len(diffs) > limit else ""
  return f"\n{path} (the config that wrote them) differs in:\n  " + "\n  ".join(diffs[:limit]) + more


def _remove_if_empty(path: str) -> None:
  from etils import epath  # pylint: disable=g-import-not-at-top
  p = epath.Path(path)
  if jax.process_index() == 0 and p.is_dir() and not any(p.iterdir()):
    p.rmdir()


def train_and_evaluate(config, workdir: str, devices=None) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds checkpoints); returns a summary dict.

  `devices` (default: all) are the devices the mesh is built from.
  """
  # --- setup (validation always runs, also when the compiled steps come from the cache) -----
  t_begin = time.time()
  validate(config, sharding.make_mesh(config.mesh, devices), sharding.rules_from_config(config.mesh))
  cache_dir = use_compilation_cache(config, workdir)
  s, (train_step, eval_step, init) = _setup_cached(config, devices)
  mesh, rules = s["mesh"], s["rules"]
  # The cached task was built from a config that may differ in what does not change the compiled
  # steps (corpus, init, cadences): this run's inputs and warm start follow this run's config.
  task = copy.copy(s["task"])
  task.config = config
  best_metric = config.checkpoint.best_metric or task.best_metric
  best_mode = config.checkpoint.best_mode or task.best_mode
  abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                          s["abstract"], s["state_sh"])
  ckpt_dir = os.path.join(workdir, "checkpoints")
  from etils import epath  # pylint: disable=g-import-not-at-top
  fresh = not epath.Path(ckpt_dir).exists()
  ckpt = checkpointing.Checkpointer(ckpt_dir, config.checkpoint, best_metric=best_metric, best_mode=best_mode)

  # --- resume > warm start > scratch; the inputs (tokenizer, corpus) before any compilation ---
  try:
    try:
      restored = ckpt.restore(abstract, family=config.model.family)
    except checkpointing.CheckpointMismatchError as e:
      raise checkpointing.CheckpointMismatchError(str(e) + _config_differences(workdir, config)) from None
    if restored is not None:
      state, meta, at = restored
      start = int(meta["step"])
      data_pos = int(meta.get("data_batches", start))
      _print(f"Resumed from step {at} in {ckpt.directory} (data position {data_pos}).")
    else:
      start = data_pos = 0
    train_it, eval_fn = make_inputs(task, workdir, data_pos)
    if restored is None:
      state = init(jax.random.PRNGKey(config.seed))
      params = task.warm_start(state["params"])
      if params is not state["params"]:
        opt_init = lambda p: s["tx"].init(split_trainable(p, s["trainable"])[0])  # noqa: E731
        opt_state = jax.jit(opt_init, out_shardings=s["state_sh"]["opt_state"])(params)
        state = dict(state, params=params, opt_state=opt_state)
  except BaseException:
    ckpt.close()
    if fresh:  # a failed first start leaves no empty checkpoints/ behind
      _remove_if_empty(ckpt_dir)
    raise
  frozen = frozen_args(s, task)
  write_config(config, workdir)

  with mesh_context(mesh, rules):

    writer = None
    if jax.process_index() == 0:
      writer = _summary_writer(os.path.join(workdir, "tb"))
      write_config_summary(writer, config, start)
      _print(f"{config.model.family}: {task.num_params(s['abstract']['params'])} | mesh {dict(mesh.shape)} "
             f"preset {config.mesh.preset} | {jax.device_count()} devices, {jax.process_count()} processes")

    num_steps = int(config.train.num_steps)
    halt = int(config.train.get("halt_after_steps", 0) or 0)
    tokens_per_step = config.train.batch_size * config.data.max_seq_length
    # Model FLOPs (bert_jax.flops: matmuls, 3x forward) and MFU against a known chip's peak.
    step_flops = flops.train_step_flops(config, task)
    peak, _ = flops.chip_peak_flops(mesh.devices.flat[0])
    step, pending, prev, status = start, [], None, "done"
    last_eval: dict[str, float] = {}
    best, evals_since_best = None, 0  # early stop (config.eval.early_stop_patience)
    patience = int(config.eval.get("early_stop_patience", 0) or 0)
    history: list[tuple[int, dict[str, float]]] = []  # (step, train log values), returned
    t_last, step_last = time.time(), start
    first_step_s = None

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
        state, metrics = train_step(state, _to_global(next(train_it), s), *frozen)
        step += 1
        pending.append(metrics)
        if first_step_s is None:  # what a preempted job pays on every restart
          jax.block_until_ready(metrics)
          first_step_s = time.time() - t_begin
          launch = _seconds_since_launch()
          _print(f"First step done {first_step_s:.1f} s after the start of training"
                 + (f" ({launch:.1f} s after launch)" if launch is not None else "")
                 + f"; compilation cache: {cache_dir or 'off'}")
          log_summaries("startup", {"time_to_first_step": first_step_s})
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
          values["model_tflops_per_sec"] = rate * step_flops / 1e12
          if peak:
            values["mfu"] = flops.mfu(step_flops, 1 / max(rate, 1e-9), mesh.devices.size, peak)
          t_last, step_last = time.time(), step
          log_summaries("train", values)
          history.append((step, values))
          _print(f"step {step}/{num_steps} | {task.train_line(values)} | "
                 f"lr {values['learning_rate']:.2e} | {rate:.2f} steps/s | "
                 f"{values['tokens_per_sec']:,.0f} tok/s" + (f" | MFU {values['mfu']:.1%}" if 'mfu' in values else "") +
                 f" | ETA {_eta((num_steps - step) / max(rate, 1e-9))}")

        eval_now = step % config.eval.every_steps == 0 or step == num_steps
        if eval_now:
          last_eval = evaluate(eval_step, state["params"], eval_fn, s, task, frozen)
          log_summaries("eval", last_eval)
          _print(f"eval @ {step}: {task.eval_line(last_eval)}")
          value = last_eval.get(best_metric.split("/", 1)[-1], float("nan"))
          if best is None or (value > best if best_mode == "max" else value < best):
            best, evals_since_best = value, 0
          else:
            evals_since_best += 1
        if step % config.checkpoint.every_steps == 0 or step == num_steps:
          save({f"eval/{k}": v for k, v in last_eval.items()} if eval_now else None)
        if patience and eval_now and evals_since_best >= patience and step < num_steps:
          _print(f"Early stop at step {step}: {best_metric} has not improved for {patience} evaluations "
                 f"(best {best:.4f}).")
          status = "early_stopped"
          break

      if status == "nonfinite":
        _print(f"Stopping at step {step}: {config.train.max_consecutive_nonfinite} consecutive non-finite "
               f"steps. The last good checkpoint is kept (step {ckpt.latest_step()}).")
      elif step not in ckpt.all_steps():
        save()
    ckpt.close()
    if writer is not None:
      writer.close()
  return {"status": status, "step": step, "state": state, "eval": last_eval, "history": history,
          "checkpoint_steps": ckpt.all_steps(), "best": {best_metric: best}, "time_to_first_step": first_step_s}
