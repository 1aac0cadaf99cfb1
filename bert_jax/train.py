"""The one training loop for every task: `train_and_evaluate(config, workdir)`.

The loop knows no objective or task by name: everything task-specific comes through the task
contract (bert_jax.tasks.base.Task: batch spec, loss, eval metrics, console lines, best metric,
inputs, warm start, trainable mask, frozen state), built by bert_jax.tasks.registry.

Where the starting point comes from, in order: a checkpoint in <workdir>/checkpoints
(auto-resume, with the data position) > the task's warm start (config.init.*: an HF checkpoint,
a pretraining workdir; fresh optimizer) > random init.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from etils import epath
import jax
import numpy as np

from bert_jax import checkpointing
from bert_jax import flops
from bert_jax import rundir
from bert_jax import sharding
from bert_jax import starts
from bert_jax import state as state_lib
from bert_jax import steps as steps_lib
from bert_jax.tasks import base
from bert_jax.tasks import registry

CONFIG_FILE = starts.CONFIG_FILE


def _print(*args) -> None:
  """Console output from process 0 only."""
  if jax.process_index() == 0:
    print(*args, flush=True)


# ----------------------------------------------------------------------------------------------
# The run's config on disk, and the setup cache.
# ----------------------------------------------------------------------------------------------
def write_config(config, workdir: str) -> None:
  """<workdir>/config.json: what a later fine-tune, export or reader needs to rebuild this run's
  model and find its best checkpoint (config.checkpoint.best_* as resolved with the task's)."""
  if jax.process_index() == 0:
    rundir.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2))


def write_config_summary(writer, config, step: int) -> None:
  """The resolved config (defaults + overrides) as JSON in TensorBoard's Text tab (a markdown
  code block): at step 0, and a resumed run adds the config it resumed with at its first step."""
  writer.add_text("config", "\n".join("    " + line for line in config.to_json(indent=2).splitlines()), step)


_SETUP_CACHE: dict[str, Any] = {}


def setup_cached(config, devices=None) -> tuple[state_lib.Setup, steps_lib.Steps]:
  """setup + jitted steps, reused when the same config runs again in this process (a resumed run
  in a notebook or a test), so the steps are not traced and compiled twice. The cached task was
  built from a config that may differ in what does not change the compiled steps (corpus, init,
  cadences): callers set the task's config to theirs (`task_for`)."""
  d = config.to_dict()
  # Cadences and the corpus do not change what is compiled.
  d["train"].pop("halt_after_steps", None)
  d["train"].pop("compilation_cache", None)
  for section in ("checkpoint", "log", "eval", "init"):
    d.pop(section, None)
  d["data"] = {k: d["data"][k] for k in ("max_seq_length", "max_predictions_per_seq")}
  key = json.dumps(d, sort_keys=True, default=str) + str([x.id for x in (devices or jax.devices())])
  if key not in _SETUP_CACHE:
    s = state_lib.setup(config, registry.get_task(config), devices=devices)
    _SETUP_CACHE.clear()  # keep one entry: compiled executables hold memory
    _SETUP_CACHE[key] = (s, steps_lib.compile_steps(config, s))
  return _SETUP_CACHE[key]


def task_for(s: state_lib.Setup, config) -> base.Task:
  """The setup's task reading this config's inputs and starting point."""
  task = copy.copy(s.task)
  task.config = config
  return task


# ----------------------------------------------------------------------------------------------
# Start-up: compilation cache, TensorBoard writer, time to first step.
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


def _eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


# ----------------------------------------------------------------------------------------------
# Resume or start.
# ----------------------------------------------------------------------------------------------
def _config_differences(workdir: str, config, sections=("model", "objective", "optimizer"), limit=8) -> str:
  """' <workdir>/config.json (the run that wrote the checkpoints) differs in: ...', or ''."""
  path = epath.Path(workdir) / CONFIG_FILE
  try:
    old = json.loads(path.read_text())
  except (OSError, ValueError):
    return ""
  new = json.loads(config.to_json())
  diffs = rundir.differences(rundir.flatten({k: old.get(k, {}) for k in sections}),
                             rundir.flatten({k: new.get(k, {}) for k in sections}))
  if not diffs:
    return ""
  more = f"\n  ... and {len(diffs) - limit} more" if len(diffs) > limit else ""
  return f"\n{path} (the config that wrote them) differs in:\n  " + "\n  ".join(diffs[:limit]) + more


def _remove_if_empty(path: str) -> None:
  p = epath.Path(path)
  if jax.process_index() == 0 and p.is_dir() and not any(p.iterdir()):
    p.rmdir()


def resume_or_start(config, workdir: str, s: state_lib.Setup, task: base.Task, init, ckpt, created: list[str]):
  """(state, first step, identity, train iterator, eval-iterator factory): the newest usable
  checkpoint of `ckpt`, else the task's warm start of a fresh state. Before anything is read into
  memory, the newest checkpoint must fit the model and the workdir must hold this run (its
  identity, bert_jax.rundir); the inputs (tokenizer, corpus) are opened before anything is
  initialised, so bad data fail before any compilation. A failed start leaves none of the
  directories `created` behind that it left empty (the checkpoints, the compilation cache and the
  workdir when the run made them, children first)."""
  try:
    try:
      latest = ckpt.latest_step()
      if latest is not None:
        ckpt.check_fits(latest, s.abstract_state(), config.model.family)
    except checkpointing.CheckpointMismatchError as e:
      raise checkpointing.CheckpointMismatchError(str(e) + _config_differences(workdir, config)) from None
    except Exception:  # pylint: disable=broad-except  # unreadable: restore falls back to an older one
      pass
    ident = rundir.check(workdir, config)
    restored = ckpt.restore(s.abstract_state(), family=config.model.family)
    if restored is not None:
      state, meta, at = restored
      start = int(meta["step"])
      data_pos = int(meta.get("data_batches", start))
      _print(f"Resumed from step {at} in {ckpt.directory} (data position {data_pos}).")
    else:
      start = data_pos = 0
    train_it, eval_fn = task.inputs(workdir, data_pos)
    if restored is None:
      state = init(jax.random.PRNGKey(config.seed))
      params = task.warm_start(state["params"])
      if params is not state["params"]:
        state = dict(state, params=params, opt_state=s.opt_init(params))
  except BaseException:
    ckpt.close()
    for path in created:
      _remove_if_empty(path)
    raise
  return state, start, ident, train_it, eval_fn


# ----------------------------------------------------------------------------------------------
# Preemption, early stop, log values.
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


class EarlyStop:
  """Tracks the best value of the best metric; `stale` evaluations since (config.eval.early_stop_patience)."""

  def __init__(self, metric: str, mode: str, patience: int):
    self.metric, self.mode, self.patience = metric, mode, patience
    self.best, self.stale = None, 0

  def update(self, values: dict[str, float]) -> None:
    value = values.get(self.metric.split("/", 1)[-1], float("nan"))
    if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
      self.best, self.stale = value, 0
    else:
      self.stale += 1

  def should_stop(self) -> bool:
    return bool(self.patience) and self.stale >= self.patience


class Throughput:
  """Rate, tokens/s, model TFLOP/s and MFU between two log steps (bert_jax.flops: matmuls, 3x
  forward, against a known chip's peak). The clock starts after the first step, so rates and
  ETAs exclude compilation."""

  def __init__(self, config, task, mesh, step: int):
    self.tokens_per_step = config.train.batch_size * config.data.max_seq_length
    self.step_flops = flops.train_step_flops(config, task)
    self.peak, _ = flops.chip_peak_flops(mesh.devices.flat[0])
    self.num_devices = mesh.devices.size
    self.restart(step)

  def restart(self, step: int) -> None:
    self.t_last, self.step_last = time.time(), step

  def values(self, step: int) -> dict[str, float]:
    dt = time.time() - self.t_last
    rate = (step - self.step_last) / max(dt, 1e-9)
    out = dict(steps_per_sec=rate, tokens_per_sec=rate * self.tokens_per_step, step_time=1 / max(rate, 1e-9),
               model_tflops_per_sec=rate * self.step_flops / 1e12)
    if self.peak:
      out["mfu"] = flops.mfu(self.step_flops, 1 / max(rate, 1e-9), self.num_devices, self.peak)
    self.restart(step)
    return out


def log_values(pending: list, clock: Throughput, step: int) -> dict[str, float]:
  """The train values of the steps since the last log: metric means, lr, skipped, throughput."""
  values = base.reduce_metrics(jax.tree.map(lambda *x: sum(x), *pending))
  values["learning_rate"] = float(jax.device_get(pending[-1]["learning_rate"])[0])
  values["skipped_total"] = float(jax.device_get(pending[-1]["skipped_total"])[0])
  values.update(clock.values(step))
  return values


def _train_line(task, values, step: int, num_steps: int) -> str:
  rate = values["steps_per_sec"]
  return (f"step {step}/{num_steps} | {task.train_line(values)} | lr {values['learning_rate']:.2e} | "
          f"{rate:.2f} steps/s | {values['tokens_per_sec']:,.0f} tok/s"
          + (f" | MFU {values['mfu']:.1%}" if "mfu" in values else "")
          + f" | ETA {_eta((num_steps - step) / max(rate, 1e-9))}")


EVAL_HISTORY_FILE = "eval_history.json"  # [{"step": s, <metric>: value, ...}] of every eval, oldest first


class _Writer:
  """TensorBoard scalars and text on process 0 (no-op elsewhere), and every eval's metrics in
  <workdir>/eval_history.json (rewritten whole at each eval; a resumed run drops the evals after
  its checkpoint, which it makes again): curves without a TensorBoard reader (bert_jax.tools.curves)."""

  def __init__(self, workdir: str, config, step: int):
    self.w = _summary_writer(os.path.join(workdir, "tb")) if jax.process_index() == 0 else None
    self.history_path, self.history = os.path.join(workdir, EVAL_HISTORY_FILE), []
    if self.w is not None:
      write_config_summary(self.w, config, step)
      if epath.Path(self.history_path).exists():
        self.history = [e for e in rundir.read_json(self.history_path) if e["step"] <= step]

  def eval(self, values: dict[str, float], step: int) -> None:
    self.scalars("eval", values, step)
    if self.w is not None:
      self.history.append({"step": step, **{k: float(v) if np.isfinite(v) else None for k, v in values.items()}})
      rundir.write_json(self.history_path, self.history)

  def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
    if self.w is not None:
      for k, v in values.items():
        if np.isfinite(v):
          self.w.add_scalar(f"{prefix}/{k}", v, step)
      self.w.flush()

  def close(self) -> None:
    if self.w is not None:
      self.w.close()


# ----------------------------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------------------------
def train_and_evaluate(config, workdir: str, devices=None) -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds checkpoints); returns a summary dict.

  `devices` (default: all) are the devices the mesh is built from.
  """
  t_begin = time.time()
  # The pretraining task's config step (a checkpoint's architecture and tokenizer: config.init.*),
  # then validation; both always run, also when the compiled steps come from the cache.
  task_class = registry.task_class(config)
  if not task_class.finetuning:  # the fine-tuning driver configured the seed's config already
    task_class.configure(config)
  state_lib.validate(config, sharding.make_mesh(config.mesh, devices), sharding.rules_from_config(config.mesh))
  ckpt_dir = os.path.join(workdir, "checkpoints")
  cache_dir = use_compilation_cache(config, workdir)
  created = [d for d in (ckpt_dir, cache_dir, workdir) if d and not epath.Path(d).exists()]
  s, (train_step, eval_step, init) = setup_cached(config, devices)
  task = task_for(s, config)
  stop = EarlyStop(config.checkpoint.best_metric or task.best_metric, config.checkpoint.best_mode or task.best_mode,
                   int(config.eval.get("early_stop_patience", 0) or 0))
  ckpt = checkpointing.Checkpointer(ckpt_dir, config.checkpoint, best_metric=stop.metric, best_mode=stop.mode)
  state, step, ident, train_it, eval_fn = resume_or_start(config, workdir, s, task, init, ckpt, created)
  start = step
  frozen = steps_lib.frozen_args(s, task)
  written = copy.deepcopy(config)
  written.checkpoint.update(best_metric=stop.metric, best_mode=stop.mode)
  write_config(written, workdir)
  rundir.record(workdir, ident)
  num_steps, halt = int(config.train.num_steps), int(config.train.get("halt_after_steps", 0) or 0)
  writer = _Writer(workdir, config, start)
  _print(f"{config.model.family}: {task.num_params(s.abstract['params'])} | mesh {dict(s.mesh.shape)} "
         f"preset {config.mesh.preset} | {jax.device_count()} devices, {jax.process_count()} processes")
  pending, prev, status, last_eval, history, first_step_s = [], None, "done", {}, [], None
  clock = Throughput(config, task, s.mesh, start)

  with steps_lib.mesh_context(s.mesh, s.rules), _Preemption(ckpt.manager, jax.process_count() > 1) as preempt:
    while step < num_steps:
      if preempt.reached(step):
        _print(f"Preemption signal at step {step}: saving a final checkpoint.")
        status = "preempted"
        break
      if halt and step - start >= halt:
        status = "halted"
        break
      state, metrics = train_step(state, steps_lib.to_global(next(train_it), s), *frozen)
      step += 1
      if first_step_s is None:  # what a preempted job pays on every restart
        jax.block_until_ready(metrics)
        first_step_s = time.time() - t_begin
        launch = _seconds_since_launch()
        _print(f"First step done {first_step_s:.1f} s after the start of training"
               + (f" ({launch:.1f} s after launch)" if launch is not None else "")
               + f"; compilation cache: {cache_dir or 'off'}")
        writer.scalars("startup", {"time_to_first_step": first_step_s}, step)
        if step % config.log.every_steps and step != num_steps:
          clock.restart(step)  # rates and ETAs exclude the first step's compilation
      pending.append(metrics)
      # Look at the previous step's counter while this one runs (no stall of the device queue).
      if prev is not None and int(jax.device_get(prev["nonfinite_run"])[0]) >= config.train.max_consecutive_nonfinite:
        status = "nonfinite"
        break
      prev = metrics
      if step % config.log.every_steps == 0 or step == num_steps:
        values = log_values(pending, clock, step)
        pending = []
        writer.scalars("train", values, step)
        history.append((step, values))
        _print(_train_line(task, values, step, num_steps))
      eval_now = step % config.eval.every_steps == 0 or step == num_steps
      if eval_now:
        first_eval = not last_eval
        last_eval = steps_lib.evaluate(eval_step, state["params"], eval_fn, s, task, frozen)
        writer.eval(last_eval, step)
        _print(f"eval @ {step}: {task.eval_line(last_eval)}")
        if first_eval:
          clock.restart(step)  # nor the first eval's compilation
        stop.update(last_eval)
      if step % config.checkpoint.every_steps == 0 or step == num_steps:
        ckpt.save(step, state, {"step": step, "data_batches": step, "family": config.model.family},
                  {f"eval/{k}": v for k, v in last_eval.items()} if eval_now else None)
      if eval_now and stop.should_stop() and step < num_steps:
        _print(f"Early stop at step {step}: {stop.metric} has not improved for {stop.patience} evaluations "
               f"(best {stop.best:.4f}).")
        status = "early_stopped"
        break
    if status == "nonfinite":
      _print(f"Stopping at step {step}: {config.train.max_consecutive_nonfinite} consecutive non-finite "
             f"steps. The last good checkpoint is kept (step {ckpt.latest_step()}).")
    elif step not in ckpt.all_steps():
      ckpt.save(step, state, {"step": step, "data_batches": step, "family": config.model.family})
  ckpt.close()
  writer.close()
  return {"status": status, "step": step, "state": state, "eval": last_eval, "history": history,
          "checkpoint_steps": ckpt.all_steps(), "best": {stop.metric: stop.best}, "time_to_first_step": first_step_s}
