r"""Ablation runner: a grid of pretraining runs from config overrides, each fine-tuned with seeds.

  python -m bert_jax.tools.ablate --config=configs/bert.py:mini --workdir=runs/mask_ablation \
      --grid data.mask_rate=0.15,0.3,0.4,0.6 --grid data.masking=token,span \
      --finetune=sst2=../shared/data/glue/SST-2,glue/rte --seeds=3 \
      --set train.num_steps=2000 --set data.max_predictions_per_seq=80

Cells are the cross product of the --grid axes (times the --zip axes, which pair up value by
value). Any config key is an axis, and so is the config file itself (`--grid
'config=configs/bert.py:small;configs/electra.py:small'`: values split on ';' when one holds a
comma). Keys under `finetune.` act on the fine-tuning config (configs/finetune.py: e.g.
`finetune.optimizer.learning_rate`, `finetune.epochs`); cells that differ only there share one
pretraining. --set key=value applies to every cell (the same `finetune.` rule). An unknown key
or a value of the wrong type fails before anything runs, naming the key.

Layout of --workdir (local or gs://):
  plan.json                 the sweep: axes, cells and their overrides (written first; a
                            different plan in the same directory is refused)
  pretrain/p<j>/            pretraining j: a bert_jax workdir (python -m bert_jax.main), and
                            ablate_eval.json: its final eval at its own masking and at the fixed
                            one (--fixed_eval, default 15% token masking)
  cells/c<i>/<task>/        fine-tuning of cell i on a task (bert_jax.finetune: seed_<k>/,
                            results.json), from its pretraining's latest checkpoint
  logs/                     the subprocesses' output (local workdirs)
  results.csv, results.md, plots/*.png

Every run is a subprocess (bert_jax.main; the eval of a finished pretraining is `python -m
bert_jax.tools.ablate --score=...`), so a killed sweep leaves workdirs that resume: run the same
command again and it skips what finished and resumes the rest from their checkpoints.
--print_jobs prints one command per pretraining (with its cells) for other hosts, writing into
the same (gs://) workdir; --collect then aggregates the results of cells run elsewhere.
"""

from __future__ import annotations

import copy
import csv
import ctypes
import dataclasses
import io
import itertools
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from typing import Any

from absl import app
from absl import flags
from etils import epath
import jax
import ml_collections

from bert_jax import checkpointing
from bert_jax import configs
from bert_jax import finetune
from bert_jax import models
from bert_jax import rundir
from bert_jax import state
from bert_jax import steps
from bert_jax import train
from bert_jax.tasks import registry

PLAN_FILE = "plan.json"
EVAL_FILE = "ablate_eval.json"
RESULTS_FILE = finetune.RESULTS_FILE
PLAN_VERSION = 1
# Pretraining eval metrics shown in results.md and plotted, when present (MLM, sentence, ELECTRA).
PRETRAIN_METRICS = ("mlm_accuracy", "mlm_loss", "nsp_accuracy", "sop_accuracy", "gen_accuracy",
                    "disc_auc")
# A model trained with one sentence loss is also scored on the other (eval variant "other").
SENTENCE_SWAP = {"nsp": "sop", "sop": "nsp"}


# ----------------------------------------------------------------------------------------------
# Files (local or gs://).
# ----------------------------------------------------------------------------------------------
def _path(p: str):
  return epath.Path(p)


def _join(*parts: str) -> str:
  return os.path.join(*parts)


def _exists(p: str) -> bool:
  return _path(p).exists()


def _read_json(p: str):
  """A state file of the sweep; an unreadable one (emptied by a kill) names itself and the fix."""
  return rundir.read_json(p, "delete it and run the same command to redo that step")


_write_text = rundir.write_text  # whole or not at all: a kill never leaves half a file


# ----------------------------------------------------------------------------------------------
# Config keys: typed values, the pretraining / fine-tuning split.
# ----------------------------------------------------------------------------------------------
FT_PREFIX = "finetune."


def load_config(spec: str):
  return configs.load(spec)


def _lookup(config, key: str, where: str):
  """(section ConfigDict, leaf name) of a dotted key; ValueError naming the key when absent."""
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    is_last = i == len(parts) - 1
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ValueError(f"Unknown config key {key!r} in {where} ({'.'.join(parts[:i + 1])!r} does not exist"
                       + (f"; keys there: {', '.join(known)}" if known else "") + ").")
    if is_last:
      return node, part
    node = node[part]
  raise AssertionError


def typed_value(config, key: str, text: str, where: str):
  """`text` converted to the type of config key `key` (which must exist)."""
  node, leaf = _lookup(config, key, where)
  current = node[leaf]
  try:
    if isinstance(current, ml_collections.ConfigDict):
      raise ValueError("it is a section, not a value")
    if isinstance(current, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError("expected true or false")
      return text.lower() in ("true", "1")
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    raise ValueError(f"keys holding a {type(current).__name__} cannot be set from the command line")
  except ValueError as e:
    raise ValueError(f"Config key {key!r} ({where}) holds a {type(current).__name__} "
                     f"({current!r}); the value {text!r} does not fit: {e}.") from None


def cli_value(value) -> str:
  return repr(value) if isinstance(value, float) else str(value)


def split_key(key: str, ft_config) -> tuple[str, str]:
  """("pretrain", key) or ("finetune", key in the fine-tuning config) for an override key.

  `finetune.<k>`: <k> when it is a key of the fine-tuning config (finetune.optimizer.learning_rate
  -> optimizer.learning_rate), else the key itself (finetune.epochs -> finetune.epochs)."""
  if not key.startswith(FT_PREFIX):
    return "pretrain", key
  rest = key[len(FT_PREFIX):]
  try:
    _lookup(ft_config, rest, "")
    return "finetune", rest
  except ValueError:
    return "finetune", key


# ----------------------------------------------------------------------------------------------
# Fine-tuning tasks.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FinetuneTask:
  name: str         # directory and column name
  task: str         # config.finetune.task
  overrides: tuple  # ((key, text), ...) of the fine-tuning config


def parse_task(spec: str) -> FinetuneTask:
  """`glue/<task>` (TFDS), `<task>=<dir>` (the GLUE tsv files in <dir>), or `<task>`."""
  spec = spec.strip()
  if spec.startswith("glue/"):
    task = spec[len("glue/"):]
    return FinetuneTask(task, task, (("finetune.source", "tfds"),))
  if "=" in spec:
    task, data_dir = spec.split("=", 1)
    name = os.path.basename(os.path.normpath(data_dir)) if task == "tsv" else task
    return FinetuneTask(name, task, (("finetune.source", "tsv"), ("finetune.data_dir", data_dir)))
  return FinetuneTask(spec, spec, ())


# ----------------------------------------------------------------------------------------------
# The plan.
# ----------------------------------------------------------------------------------------------
def _split_values(text: str) -> list[str]:
  sep = ";" if ";" in text else ","
  return [v.strip() for v in text.split(sep) if v.strip()]


def parse_axis(text: str, flag: str) -> tuple[str, list[str]]:
  if "=" not in text:
    raise ValueError(f"--{flag}={text!r}: expected key=value1,value2,... (e.g. data.mask_rate=0.15,0.3).")
  key, values = text.split("=", 1)
  values = _split_values(values)
  if not values:
    raise ValueError(f"--{flag}={text!r}: no values for {key!r}.")
  if len(set(values)) != len(values):
    raise ValueError(f"--{flag}={text!r}: repeated values for {key!r}.")
  return key.strip(), values


def _check_pretraining(config, where: str) -> None:
  """The cheap checks of a pretraining config (what bert_jax.main would refuse at its start; the
  data keys, the fixed eval masking included, through bert_jax.data.checks)."""
  try:
    models.validate(config.model)
    state.validate(config)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None
  d = config.data
  rows = d.max_seq_length - 3  # [CLS] A [SEP] B [SEP]
  need = round(max(d.mask_rate, d.get("eval_mask_rate", 0.0) or 0.0) * rows)
  if need > d.max_predictions_per_seq:
    raise ValueError(
        f"{where}: config.data.mask_rate={d.mask_rate} asks for about {need} predictions per row of "
        f"{d.max_seq_length} tokens but config.data.max_predictions_per_seq={d.max_predictions_per_seq} "
        f"caps them (the realized rate would be lower): set --set data.max_predictions_per_seq="
        f"{math.ceil(max(d.mask_rate, 0.15) * rows)} or more.")


def make_plan(*, config: str, grid: list[str], zipped: list[str], sets: list[str], finetune: list[str],
              finetune_config: str, seeds: int, fixed_eval: str) -> dict[str, Any]:
  """Validates everything and returns the plan (JSON-able). Raises ValueError naming the key."""
  axes = [parse_axis(a, "grid") for a in grid]
  zip_axes = [parse_axis(a, "zip") for a in zipped]
  if zip_axes and len({len(v) for _, v in zip_axes}) != 1:
    raise ValueError("--zip axes must have the same number of values: " +
                     ", ".join(f"{k} has {len(v)}" for k, v in zip_axes) + ".")
  keys = [k for k, _ in axes + zip_axes]
  dup = sorted({k for k in keys if keys.count(k) > 1})
  if dup:
    raise ValueError(f"Config key(s) {dup} appear in more than one --grid/--zip axis.")
  set_pairs = []
  for s in sets:
    if "=" not in s:
      raise ValueError(f"--set={s!r}: expected key=value.")
    k, v = s.split("=", 1)
    if k.strip() in keys:
      raise ValueError(f"--set {k.strip()!r} is also a grid axis.")
    set_pairs.append((k.strip(), v.strip()))
  if "config" not in keys and not config:
    raise ValueError("--config is required (or a `config` grid axis).")
  if seeds < 1:
    raise ValueError(f"--seeds={seeds} must be >= 1.")
  tasks = [parse_task(t) for t in finetune]
  names = [t.name for t in tasks]
  if len(set(names)) != len(names):
    raise ValueError(f"--finetune names a task twice: {names}.")
  strategy, _, rate = fixed_eval.partition(":")
  if fixed_eval and (not strategy or not rate):
    raise ValueError(f"--fixed_eval={fixed_eval!r}: expected <masking>:<rate>, e.g. token:0.15 (or empty).")

  # Cells: the product of the grid axes and the zipped group.
  groups = [[((k, v),) for v in vals] for k, vals in axes]
  if zip_axes:
    groups.append([tuple((k, vals[i]) for k, vals in zip_axes) for i in range(len(zip_axes[0][1]))])
  combos = [dict(itertools.chain.from_iterable(c)) for c in itertools.product(*groups)] if groups else [{}]

  ft_base = {}  # task name -> its fine-tuning config (for validating keys)
  ft_spec = lambda t: _with_arg(finetune_config, f"task={t.task}")  # noqa: E731
  for t in tasks:
    try:
      c = load_config(ft_spec(t))
      registry.task_class(c)  # an unknown task name fails here
    except ValueError as e:
      raise ValueError(f"--finetune {t.task!r}: {e}") from None
    ft_base[t.name] = c
  loaded: dict[str, Any] = {}
  pretrains: list[dict[str, Any]] = []
  cells = []
  for i, combo in enumerate(combos):
    spec = combo.get("config", config)
    if spec not in loaded:
      try:
        loaded[spec] = load_config(spec)
      except Exception as e:  # pylint: disable=broad-except  # a bad file or argument
        raise ValueError(f"Config {spec!r}: {e}") from None
    pre = copy.deepcopy(loaded[spec])
    pre_over, ft_over = {}, {}
    for key, text in set_pairs + [(k, v) for k, v in combo.items() if k != "config"]:
      where = "--set" if (key, text) in set_pairs else "--grid/--zip"
      if key.startswith(FT_PREFIX):
        if not tasks:
          raise ValueError(f"{where} {key!r} acts on fine-tuning, but no --finetune task is given.")
        for t in tasks:
          _, ft_key = split_key(key, ft_base[t.name])
          if ft_key in ("init.workdir", "finetune.seeds", "finetune.task"):
            raise ValueError(f"{where} {key!r}: the runner sets it (--seeds, --finetune).")
          typed_value(ft_base[t.name], ft_key, text, f"{where}, fine-tuning config of {t.name}")
        ft_over[key] = text
      else:
        value = typed_value(pre, key, text, f"{where}, {spec}")
        node, leaf = _lookup(pre, key, spec)
        node[leaf] = value
        pre_over[key] = cli_value(value)
    if fixed_eval:
      pre.data.eval_masking, pre.data.eval_mask_rate = strategy, float(rate)
    _check_pretraining(pre, f"cell {i + 1} ({_describe(combo) or 'base'})")
    ident = {"config": spec, "overrides": pre_over}
    if ident not in pretrains:
      pretrains.append(ident)
    cells.append({"axes": combo, "pretrain": pretrains.index(ident), "finetune_overrides": ft_over})
  return {
      "version": PLAN_VERSION, "config": config, "grid": [[k, v] for k, v in axes],
      "zip": [[k, v] for k, v in zip_axes], "set": [list(p) for p in set_pairs],
      "finetune": [dataclasses.asdict(t) for t in tasks], "finetune_config": finetune_config,
      "seeds": seeds, "fixed_eval": fixed_eval,
      "pretrains": pretrains, "cells": cells,
  }


def _with_arg(spec: str, arg: str) -> str:
  path, _, rest = spec.partition(":")
  return f"{path}:{arg}" + (f",{rest}" if rest else "")


def _describe(axes: dict[str, str]) -> str:
  return " ".join(f"{k}={v}" for k, v in axes.items())


def axis_keys(plan) -> list[str]:
  return [k for k, _ in plan["grid"]] + [k for k, _ in plan["zip"]]


def write_plan(plan, workdir: str) -> None:
  """Writes plan.json, or checks that the one there is the same; refuses a different one."""
  path = _join(workdir, PLAN_FILE)
  if _exists(path):
    old = _read_json(path)
    if old != json.loads(json.dumps(plan)):
      diff = [k for k in sorted(set(old) | set(plan)) if old.get(k) != json.loads(json.dumps(plan.get(k)))]
      raise ValueError(
          f"{workdir} holds a different sweep ({PLAN_FILE} differs in: {', '.join(diff)}). Its results "
          "would mix with this one's: use another --workdir, or delete that directory to start over.")
    return
  _write_text(path, json.dumps(plan, indent=2))


# ----------------------------------------------------------------------------------------------
# Commands.
# ----------------------------------------------------------------------------------------------
def pretrain_dir(workdir: str, j: int) -> str:
  return _join(workdir, "pretrain", f"p{j + 1}")


def finetune_dir(workdir: str, i: int, task_name: str) -> str:
  return _join(workdir, "cells", f"c{i + 1}", task_name)


def pretrain_command(plan, workdir: str, j: int) -> list[str]:
  p = plan["pretrains"][j]
  cmd = [sys.executable, "-m", "bert_jax.main", f"--config={p['config']}",
         f"--workdir={pretrain_dir(workdir, j)}"]
  return cmd + [f"--config.{k}={v}" for k, v in p["overrides"].items()]


def score_command(plan, workdir: str, j: int) -> list[str]:
  return [sys.executable, "-m", "bert_jax.tools.ablate", f"--score={pretrain_dir(workdir, j)}",
          f"--fixed_eval={plan['fixed_eval']}"]


def finetune_command(plan, workdir: str, i: int, task: dict) -> list[str]:
  cell = plan["cells"][i]
  ft_config = load_config(_with_arg(plan["finetune_config"], f"task={task['task']}"))
  cmd = [sys.executable, "-m", "bert_jax.main",
         f"--config={_with_arg(plan['finetune_config'], 'task=' + task['task'])}",
         f"--workdir={finetune_dir(workdir, i, task['name'])}",
         f"--config.init.workdir={pretrain_dir(workdir, cell['pretrain'])}",
         f"--config.finetune.seeds={plan['seeds']}"]
  for key, text in [tuple(p) for p in task["overrides"]] + list(cell["finetune_overrides"].items()):
    cmd.append(f"--config.{split_key(key, ft_config)[1]}={text}")
  return cmd


# ----------------------------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------------------------
def _prctl():
  try:
    return ctypes.CDLL("libc.so.6", use_errno=True).prctl
  except (OSError, AttributeError):
    return None


_PRCTL = _prctl()  # resolved here, not in the forked child (no dlopen between fork and exec)


def _die_with_parent() -> None:
  """Child side of Popen: SIGKILL when the runner dies (a killed sweep leaves no orphan writing
  into the workdir while the next one starts). Linux; elsewhere a no-op."""
  if _PRCTL is not None:
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _call(cmd, **kw) -> int:
  # JAX (imported by the planning checks) warns about any fork; the child only calls prctl and execs.
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
    return subprocess.call(cmd, preexec_fn=_die_with_parent, **kw)


def _run(cmd: list[str], log: str | None, env: dict[str, str] | None = None) -> None:
  """Runs a subprocess to its end; its output goes to `log` (or the console); raises on failure."""
  if log is None:
    rc = _call(cmd, env=env)
    tail = ""
  else:
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "a") as f:
      f.write(f"$ {shlex.join(cmd)}\n")
      f.flush()
      rc = _call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    with open(log) as f:
      tail = "".join(f.readlines()[-25:])
  if rc == 75:  # bert_jax.main: stopped before its end with a checkpoint (preemption, halt_after_steps)
    raise RuntimeError(f"Stopped before its end with a checkpoint: {shlex.join(cmd)}\nRun the same "
                       "ablation command again to resume it.")
  if rc:
    raise RuntimeError(f"Command failed (exit {rc}): {shlex.join(cmd)}\n"
                       + (f"Last lines of {log}:\n{tail}" if log else "") +
                       "\nFix the cause and run the same ablation command again: finished work is kept.")


def _eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def pretraining_done(workdir: str, j: int) -> bool:
  return _exists(_join(pretrain_dir(workdir, j), EVAL_FILE))


def finetune_done(plan, workdir: str, i: int, task_name: str) -> bool:
  path = _join(finetune_dir(workdir, i, task_name), RESULTS_FILE)
  return _exists(path) and len(_read_json(path).get("seeds", [])) == plan["seeds"]


def check_data(plan) -> None:
  """Every fine-tuning task's local data, read and checked (bert_jax.tasks: check_data) before
  the first pretraining starts, not hours later when the first fine-tuning reads them."""
  for t in plan["finetune"]:
    c = load_config(_with_arg(plan["finetune_config"], f"task={t['task']}"))
    for key, text in t["overrides"]:
      node, leaf = _lookup(c, key, f"--finetune {t['name']!r}")
      node[leaf] = typed_value(c, key, text, f"--finetune {t['name']!r}")
    try:
      registry.task_class(c).check_data(c)
    except (ValueError, FileNotFoundError) as e:
      raise ValueError(f"--finetune {t['name']!r}: {e}") from None


def run_sweep(plan, workdir: str, cells: list[int] | None = None, log_dir: str | None = None) -> None:
  """Runs the cells (0-based indices; all by default) one after the other, skipping finished
  pretrainings and fine-tunes; prints a progress line per cell and phase."""
  todo = cells if cells is not None else list(range(len(plan["cells"])))
  n = len(plan["cells"])
  tasks = plan["finetune"]
  spent = {"pretrain": [], "finetune": []}
  remaining_pre = len({plan["cells"][i]["pretrain"] for i in todo
                       if not pretraining_done(workdir, plan["cells"][i]["pretrain"])})
  remaining_ft = sum(not finetune_done(plan, workdir, i, t["name"]) for i in todo for t in tasks)

  def eta() -> str:
    known = [(remaining_pre, spent["pretrain"]), (remaining_ft, spent["finetune"])]
    if any(left and not times for left, times in known):
      return "ETA ?"
    return "ETA " + _eta(sum(left * sum(times) / len(times) for left, times in known if left))

  def log(name):
    return None if log_dir is None else os.path.join(log_dir, name)

  # One persistent XLA compilation cache for the whole sweep: cells of the same shapes (every
  # mask rate, every fine-tune) load the compiled steps instead of compiling them again.
  env = dict(os.environ)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", _join(workdir, "compilation_cache"))
  run = lambda cmd, name: _run(cmd, log(name), env)  # noqa: E731

  for i in todo:
    cell = plan["cells"][i]
    j = cell["pretrain"]
    head = f"[ablate] cell {i + 1}/{n} {_describe(cell['axes']) or '(base)'}"
    if not pretraining_done(workdir, j):
      print(f"{head} | pretraining p{j + 1} | {eta()}", flush=True)
      t0 = time.time()
      run(pretrain_command(plan, workdir, j), f"p{j + 1}_pretrain.log")
      run(score_command(plan, workdir, j), f"p{j + 1}_eval.log")
      spent["pretrain"].append(time.time() - t0)
      remaining_pre -= 1
    for t in tasks:
      if finetune_done(plan, workdir, i, t["name"]):
        continue
      print(f"{head} | fine-tuning {t['name']} ({plan['seeds']} seeds) | {eta()}", flush=True)
      t0 = time.time()
      run(finetune_command(plan, workdir, i, t), f"c{i + 1}_{t['name']}.log")
      spent["finetune"].append(time.time() - t0)
      remaining_ft -= 1
    print(f"{head} | done | {eta()}", flush=True)


def print_jobs(plan, argv: list[str]) -> list[str]:
  """One command per pretraining (with the cells that share it), for other hosts; each writes
  only its own sub-workdirs of the same --workdir. Then --collect aggregates."""
  base = [a for a in argv if not a.startswith(("--print_jobs", "--noprint_jobs", "--cells", "--collect"))]
  lines = []
  for j in range(len(plan["pretrains"])):
    cells = [str(i + 1) for i, c in enumerate(plan["cells"]) if c["pretrain"] == j]
    lines.append(shlex.join(["python", "-m", "bert_jax.tools.ablate", *base, f"--cells={','.join(cells)}"]))
  return lines


# ----------------------------------------------------------------------------------------------
# Scoring a finished pretraining (run as a subprocess: `python -m bert_jax.tools.ablate --score=DIR`).
# ----------------------------------------------------------------------------------------------
def score_pretraining(pre_dir: str, fixed_eval: str) -> dict[str, Any]:
  """Eval metrics of the latest checkpoint at the run's own masking and at the fixed one;
  written to <pre_dir>/ablate_eval.json. Refuses a run that has not reached its last step."""
  config = ml_collections.ConfigDict(_read_json(_join(pre_dir, train.CONFIG_FILE)))
  s, (_, eval_step, _) = train.setup_cached(config)
  task = s.task
  ckpt = checkpointing.Checkpointer(_join(pre_dir, "checkpoints"), config.checkpoint, read_only=True,
                                    best_metric=task.best_metric, best_mode=task.best_mode)
  restored = ckpt.restore(s.abstract_state())
  ckpt.close()
  if restored is None or restored[2] != config.train.num_steps:
    at = None if restored is None else restored[2]
    raise RuntimeError(f"{pre_dir}: the pretraining has not finished (checkpoint at step {at} of "
                       f"{config.train.num_steps}); run the ablation command again to resume it.")
  state, _, step = restored
  out: dict[str, Any] = {"step": int(step)}
  variants = [("own", config)]
  if fixed_eval:
    strategy, _, rate = fixed_eval.partition(":")
    fixed = copy.deepcopy(config)
    fixed.data.eval_masking, fixed.data.eval_mask_rate = strategy, float(rate)
    variants.append(("fixed", fixed))
  def score(c, s, eval_step):
    t = train.task_for(s, c)
    train_it, eval_fn = t.inputs(pre_dir, 0)
    if hasattr(train_it, "close"):
      train_it.close()
    return steps.evaluate(eval_step, state["params"], eval_fn, s, t, steps.frozen_args(s, t))

  with steps.mesh_context(s.mesh, s.rules):
    for name, c in variants:
      out[name] = score(c, s, eval_step)
  sentence = config.objective.get("sentence_loss", "none")
  if sentence in SENTENCE_SWAP:
    # The sentence task it was not trained on (ALBERT's table: an SOP model solves NSP, not the
    # reverse): the same weights and sentence head on the other task's pairs, at the last variant's masking.
    other = copy.deepcopy(variants[-1][1])
    other.objective.sentence_loss = other.data.instances = SENTENCE_SWAP[sentence]
    s2, (_, eval_step2, _) = train.setup_cached(other)
    with steps.mesh_context(s2.mesh, s2.rules):
      out["other"] = score(other, s2, eval_step2)
  if jax.process_index() == 0:
    _write_text(_join(pre_dir, EVAL_FILE), json.dumps(out, indent=2))
  return out


# ----------------------------------------------------------------------------------------------
# Results: csv, md, plots.
# ----------------------------------------------------------------------------------------------
def _fmt(v) -> str:
  return "" if v is None else repr(v) if isinstance(v, float) else str(v)  # floats in full


def collect(plan, workdir: str) -> tuple[list[dict[str, Any]], list[str]]:
  """(rows: one per cell x task x seed with the pretraining eval metrics, missing pieces)."""
  rows, missing = [], []
  for i, cell in enumerate(plan["cells"]):
    j = cell["pretrain"]
    pre_file = _join(pretrain_dir(workdir, j), EVAL_FILE)
    pre = _read_json(pre_file) if _exists(pre_file) else None
    if pre is None:
      missing.append(f"pretraining p{j + 1} (cell {i + 1})")
    base = {"cell": i + 1, "pretraining": j + 1, **cell["axes"]}
    pre_cols = {}
    if pre is not None:
      pre_cols["pretrain_step"] = pre["step"]
      for kind in ("own", "fixed", "other"):
        for k, v in sorted(pre.get(kind, {}).items()):
          pre_cols[f"pretrain_{kind}/{k}"] = v
    for t in plan["finetune"]:
      res_file = _join(finetune_dir(workdir, i, t["name"]), RESULTS_FILE)
      if not _exists(res_file) or len(_read_json(res_file)["seeds"]) != plan["seeds"]:
        missing.append(f"cell {i + 1} {t['name']}")
        continue
      res = _read_json(res_file)
      for k, seed in enumerate(res["seeds"]):
        row = {**base, "task": t["name"], "seed": k, "best_step": seed["best_step"]}
        for split, metrics in seed["eval"].items():
          for m, v in metrics.items():
            row[f"{split}/{m}"] = v
        rows.append({**row, **pre_cols})
    if not plan["finetune"] and pre is not None:
      rows.append({**base, **pre_cols})
  return rows, missing


def write_csv(rows, path: str, axes: list[str]) -> None:
  first = ["cell", "pretraining", *axes, "task", "seed", "best_step"]
  rest = sorted({k for r in rows for k in r} - set(first), key=lambda k: (k.startswith("pretrain"), k))
  out = io.StringIO()
  w = csv.writer(out, lineterminator="\n")
  w.writerow(first + rest)
  for r in rows:
    w.writerow([_fmt(r.get(k)) for k in first + rest])
  _write_text(path, out.getvalue())


def _median(values):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return float(np.median(values)) if values else None


def summary_columns(plan, rows) -> list[tuple[str, str, str]]:
  """(column title, row key, direction) of results.md: each task's metrics on each eval split,
  then the pretraining metrics at the fixed masking (or the own one without --fixed_eval)."""
  cols = []
  for t in plan["finetune"]:
    keys = sorted({k for r in rows if r.get("task") == t["name"] for k in r if "/" in k
                   and not k.startswith("pretrain") and not k.endswith("/loss")})
    splits = list(dict.fromkeys(k.split("/")[0] for k in keys))
    for key in keys:
      split, m = key.split("/", 1)
      title = f"{t['name']} {m}" if len(splits) == 1 else f"{t['name']} {split} {m}"
      cols.append((title, f"{t['name']}:{key}", "max"))
  kind = "fixed" if plan["fixed_eval"] else "own"
  where = f" @ {plan['fixed_eval'].replace(':', ' ')}" if plan["fixed_eval"] else ""
  for m in PRETRAIN_METRICS:
    key = f"pretrain_{kind}/{m}"
    if any(key in r for r in rows):
      cols.append((f"pretrain {m}{where}", key, "min" if m.endswith("loss") else "max"))
  for m in ("nsp_accuracy", "sop_accuracy"):  # the sentence task a cell was not trained on
    key = f"pretrain_other/{m}"
    if any(key in r for r in rows):
      cols.append((f"{m} untrained task", key, "max"))
  return cols


def cell_values(plan, rows, key: str) -> dict[int, list[float]]:
  """Cell index -> the values of a summary column (seeds for a task metric, one for pretraining)."""
  out: dict[int, list[float]] = {}
  if ":" in key:
    task, metric = key.split(":", 1)
    for r in rows:
      if r.get("task") == task and r.get(metric) is not None:
        out.setdefault(r["cell"], []).append(float(r[metric]))
  else:
    for r in rows:
      if r.get(key) is not None:
        out.setdefault(r["cell"], [float(r[key])])
  return out


def write_markdown(plan, rows, missing, path: str, command: str = "") -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  axes = axis_keys(plan)
  cols = summary_columns(plan, rows)
  values = {key: cell_values(plan, rows, key) for _, key, _ in cols}
  med = {key: {c: _median(v) for c, v in vals.items()} for key, vals in values.items()}
  best = {}
  for _, key, direction in cols:
    finite = [v for v in med[key].values() if v is not None and np.isfinite(v)]
    if finite:
      best[key] = max(finite) if direction == "max" else min(finite)
  lines = ["# Ablation results", ""]
  if command:
    lines += ["```", command, "```", ""]
  lines += [f"Median over {plan['seeds']} fine-tuning seed(s) per cell and task; **bold**: the best cell "
            "of each column (lowest for losses). Pretraining metrics are the final eval"
            + (f" at a fixed masking ({plan['fixed_eval']}), whatever the cell's training masking."
               if plan["fixed_eval"] else "."), ""]
  header = ["cell", *(axes or ["config"]), *(title for title, _, _ in cols)]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "|".join("---" if i <= len(axes or [0]) else "---:" for i in range(len(header))) + "|")
  for i, cell in enumerate(plan["cells"]):
    row = [str(i + 1)] + [cell["axes"].get(a, "") for a in axes] if axes else [str(i + 1), plan["config"]]
    for _, key, _ in cols:
      v = med[key].get(i + 1)
      text = "-" if v is None else f"{v:.4f}"
      if v is not None and key in best and v == best[key]:
        text = f"**{text}**"
      row.append(text)
    lines.append("| " + " | ".join(row) + " |")
  if missing:
    lines += ["", "Missing (not run yet, or run elsewhere and not collected): " + "; ".join(missing) + "."]
  text = "\n".join(lines) + "\n"
  _write_text(path, text)
  return text


def _numeric(values: list[str]) -> list[float] | None:
  try:
    return [float(v) for v in values]
  except ValueError:
    return None


def write_plots(plan, rows, out_dir: str) -> list[str]:
  """One PNG per (summary column, numeric axis): the median over seeds against the axis, one
  line per combination of the other axes, with a min-max band."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  axes = axis_keys(plan)
  all_values = {k: v for k, v in plan["grid"] + plan["zip"]}
  written = []
  for title, key, _ in summary_columns(plan, rows):
    per_cell = cell_values(plan, rows, key)
    for axis in axes:
      xs_all = _numeric(all_values[axis])
      if xs_all is None or len(xs_all) < 2:
        continue
      pretraining_metric = ":" not in key  # one value per pretraining: fine-tuning axes do not apply
      if pretraining_metric and axis.startswith(FT_PREFIX):
        continue
      others = [a for a in axes if a != axis and not (pretraining_metric and a.startswith(FT_PREFIX))]
      lines: dict[tuple, list[tuple[float, list[float]]]] = {}
      seen = set()
      for i, cell in enumerate(plan["cells"]):
        if i + 1 in per_cell and (cell["pretrain"] not in seen or not pretraining_metric):
          seen.add(cell["pretrain"])
          label = tuple(cell["axes"][a] for a in others)
          lines.setdefault(label, []).append((float(cell["axes"][axis]), per_cell[i + 1]))
      if not lines:
        continue
      fig, ax = plt.subplots(figsize=(5.5, 3.8))
      for label, pts in sorted(lines.items()):
        pts.sort()
        x = np.array([p[0] for p in pts])
        vals = [np.asarray(p[1]) for p in pts]
        med = np.array([np.median(v) for v in vals])
        name = ", ".join(f"{a}={v}" for a, v in zip(others, label)) or None
        (line,) = ax.plot(x, med, marker="o", label=name)
        ax.fill_between(x, [v.min() for v in vals], [v.max() for v in vals], color=line.get_color(), alpha=0.2)
      ax.set_xlabel(axis)
      ax.set_ylabel(title)
      ax.set_title(f"{title} vs {axis}" + (f" (median of {plan['seeds']} seeds, min-max band)"
                                           if ":" in key else ""), fontsize=9)
      ax.grid(alpha=0.3)
      if any(label for label in lines):
        ax.legend(fontsize=7)
      fig.tight_layout()
      safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in f"{key}_vs_{axis}".replace(":", "_"))
      path = _join(out_dir, f"{safe}.png")
      buf = io.BytesIO()
      fig.savefig(buf, format="png", dpi=110)
      plt.close(fig)
      _path(out_dir).mkdir(parents=True, exist_ok=True)
      _path(path).write_bytes(buf.getvalue())
      written.append(path)
  return written


def aggregate(plan, workdir: str, command: str = "") -> dict[str, Any]:
  """results.csv, results.md and plots/ from whatever has finished in `workdir`."""
  rows, missing = collect(plan, workdir)
  write_csv(rows, _join(workdir, "results.csv"), axis_keys(plan))
  md = write_markdown(plan, rows, missing, _join(workdir, "results.md"), command)
  plots = write_plots(plan, rows, _join(workdir, "plots"))
  return {"rows": rows, "missing": missing, "markdown": md, "plots": plots}


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------
_CONFIG = flags.DEFINE_string("config", "", "Base config, e.g. configs/bert.py:mini (or a `config` grid axis).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory (local or gs://).")
_GRID = flags.DEFINE_multi_string("grid", [], "key=v1,v2,...: an axis (repeat for a cross product).")
_ZIP = flags.DEFINE_multi_string("zip", [], "key=v1,v2,...: axes paired value by value (same lengths).")
_SET = flags.DEFINE_multi_string("set", [], "key=value for every cell (finetune.* keys: fine-tuning).")
_FINETUNE = flags.DEFINE_list("finetune", [], "Tasks: glue/<task> (TFDS), <task>=<tsv dir>, or <task>.")
_FT_CONFIG = flags.DEFINE_string("finetune_config", "finetune.py", "Fine-tuning config (task=<t> is added).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Fine-tuning seeds per cell and task.")
_FIXED_EVAL = flags.DEFINE_string("fixed_eval", "token:0.15",
                                  "Pretraining eval also at this <masking>:<rate> (empty: own masking only).")
_CELLS = flags.DEFINE_list("cells", [], "Run only these cells (1-based), e.g. on another host.")
_PRINT_JOBS = flags.DEFINE_bool("print_jobs", False, "Print one command per pretraining and exit.")
_COLLECT = flags.DEFINE_bool("collect", False, "Only aggregate the results in --workdir.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Validate, write the plan and print the cells; run nothing.")
_LOGS = flags.DEFINE_bool("logs", True, "Subprocess output to <workdir>/logs/ (local workdirs); else the console.")
_SCORE = flags.DEFINE_string("score", "", "(internal) evaluate the finished pretraining workdir and exit.")


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _SCORE.value:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    score_pretraining(_SCORE.value, _FIXED_EVAL.value)
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required.")
  workdir = _WORKDIR.value
  if _COLLECT.value and _exists(_join(workdir, PLAN_FILE)) and not (_GRID.value or _ZIP.value or _CONFIG.value):
    plan = _read_json(_join(workdir, PLAN_FILE))  # collect with the plan that is there
  else:
    try:
      plan = make_plan(config=_CONFIG.value, grid=_GRID.value, zipped=_ZIP.value, sets=_SET.value,
                       finetune=_FINETUNE.value, finetune_config=_FT_CONFIG.value, seeds=_SEEDS.value,
                       fixed_eval=_FIXED_EVAL.value)
      if not (_PRINT_JOBS.value or _COLLECT.value or _DRY_RUN.value):
        check_data(plan)  # before plan.json and before the first pretraining
      if not _PRINT_JOBS.value:
        write_plan(plan, workdir)
    except ValueError as e:
      sys.exit(f"bert_jax.tools.ablate: {e}")
  n = len(plan["cells"])
  command = shlex.join(["python", "-m", "bert_jax.tools.ablate", *sys.argv[1:]])
  if _PRINT_JOBS.value:
    print("\n".join(print_jobs(plan, sys.argv[1:])))
    return
  if _COLLECT.value:
    out = aggregate(plan, workdir)
    print(out["markdown"])
    return
  print(f"[ablate] {n} cells, {len(plan['pretrains'])} pretrainings, {len(plan['finetune'])} task(s) x "
        f"{plan['seeds']} seed(s); plan in {_join(workdir, PLAN_FILE)}", flush=True)
  for i, cell in enumerate(plan["cells"]):
    print(f"  cell {i + 1}/{n}: {_describe(cell['axes']) or '(base)'} -> pretraining p{cell['pretrain'] + 1}")
  if _DRY_RUN.value:
    return
  try:
    cells = sorted({int(c) - 1 for c in _CELLS.value}) if _CELLS.value else None
  except ValueError:
    sys.exit(f"bert_jax.tools.ablate: --cells={_CELLS.value} must be cell numbers (1..{n}).")
  if cells is not None and any(not 0 <= c < n for c in cells):
    sys.exit(f"bert_jax.tools.ablate: --cells={_CELLS.value}: cells are numbered 1..{n}.")
  log_dir = _join(workdir, "logs") if _LOGS.value and "://" not in workdir else None
  run_sweep(plan, workdir, cells, log_dir)
  if cells is None:  # jobs of a scaled-out sweep leave aggregation to --collect
    out = aggregate(plan, workdir, command)
    print(out["markdown"])
    print(f"[ablate] wrote {_join(workdir, 'results.csv')}, results.md and {len(out['plots'])} plot(s).")


def main() -> None:
  """Console entry point `bert-jax-ablate` (also `python -m bert_jax.tools.ablate`)."""
  app.run(_main)


if __name__ == "__main__":
  main()
