"""Parameters of another run: a fine-tuning's starting point, a teacher, a model to serve or export.

Reads params only (no trainer, no task, no optimizer), by the shapes stored with them:
  a bert_jax run directory   <dir>/config.json (what the loop writes at start) and
                             <dir>/checkpoints (latest | best | a step): a pretraining workdir or a
                             fine-tuning seed directory (<workdir>/seed_<k>)
  an HF directory            transformers' config.json + weights, or one converted by
                             `bert-jax-convert import` (bert_jax.interop.hf)
`overwrite` then puts such params into a model's own (sharded) params, path by path, checking
shapes: that is every warm start (config.init.*, a distillation student, a teacher's layers).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

from etils import epath
import jax
import ml_collections
import numpy as np

from bert_jax import checkpointing
from bert_jax import models
from bert_jax.models import config as model_config_lib
from bert_jax.interop import hf

CONFIG_FILE = "config.json"  # <workdir>/config.json: the config a run was started with
# Config keys given on the command line ("model.hidden_size", ...): bert_jax.main fills it, so a
# starting point can refuse a --config.model.* flag that contradicts it (resolve_pretraining_start).
COMMAND_LINE_KEYS: set[str] = set()


def _print(*args) -> None:
  if jax.process_index() == 0:
    print(*args, flush=True)


def read_json(path: str) -> dict:
  """A JSON file, local or gs://."""
  return json.loads(epath.Path(path).read_text())


def run_config(workdir: str, key: str = "config.init.workdir") -> ml_collections.ConfigDict:
  """The config a bert_jax run was started with (<workdir>/config.json)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"{key}={workdir!r} has no {CONFIG_FILE}: not a bert_jax "
                            "pretraining workdir (the train loop writes it at start).")
  return ml_collections.ConfigDict(read_json(path))


def kind(path: str) -> str:
  """finetuning (a seed directory) | pretraining (a workdir) | hf (an HF or converted directory)."""
  cfg = os.path.join(path, CONFIG_FILE)
  if os.path.exists(cfg):
    c = read_json(cfg)
    if "objective" in c:
      return "finetuning" if "finetune" in c else "pretraining"
  return "hf"


def checkpoint_step(run_dir: str, config, which: str = "latest", key: str = "config.init.workdir") -> int:
  """The step of a run's checkpoint: latest | best (by the metric the run kept its best with) | a step."""
  ckpt = checkpointing.Checkpointer(os.path.join(run_dir, "checkpoints"), config.checkpoint, read_only=True)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise FileNotFoundError(f"{key}={run_dir!r} holds no checkpoint under checkpoints/.")
    if which == "latest":
      return steps[-1]
    if which == "best":
      step = ckpt.best_step()
      if step is None:
        raise ValueError(f"config.init.checkpoint='best': {run_dir} has no checkpoint with eval metrics.")
      return step
    step = int(which)
    if step not in steps:
      raise ValueError(f"config.init.checkpoint={which!r}: {run_dir} has steps {steps}.")
    return step
  finally:
    ckpt.close()


def run_params(run_dir: str, which: str = "latest", key: str = "config.init.workdir"):
  """(config, params as numpy, step) of a bert_jax run's checkpoint (`which`: latest | best | a
  step), in the layout it was saved in (stacked when the run had config.model.scan_layers)."""
  config = run_config(run_dir, key)
  step = checkpoint_step(run_dir, config, which, key)
  return config, checkpointing.read_params(os.path.join(run_dir, "checkpoints"), step), step


def pretrained_params(workdir: str, which: str = "latest", backbone: bool = True):
  """Params of a pretraining workdir's checkpoint, unrolled: the backbone ({"bert": ...}), or with
  backbone=False the whole pretraining model's (heads too)."""
  _, params, step = run_params(workdir, which)
  _print(f"Pretrained weights: step {step} of {workdir}")
  params = models.unstack_layers(params)
  return models.backbone_params(params) if backbone else params


def finetuned_params(seed_dir: str):
  """(config, params as numpy) of a fine-tuning seed directory's best checkpoint (else its latest)."""
  path = os.path.join(seed_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: pass a fine-tuning seed directory (<workdir>/seed_<k>).")
  config = run_config(seed_dir)
  if "finetune" not in config:
    raise ValueError(f"{seed_dir} is a {config.objective.name!r} run, not a fine-tuning run.")
  ckpt = checkpointing.Checkpointer(os.path.join(seed_dir, "checkpoints"), config.checkpoint, read_only=True)
  step = ckpt.best_step() or ckpt.latest_step()
  ckpt.close()
  if step is None:
    raise FileNotFoundError(f"{seed_dir}/checkpoints holds no checkpoint.")
  return config, checkpointing.read_params(os.path.join(seed_dir, "checkpoints"), step)


def num_outputs(params) -> int:
  """Outputs of a classification / tagging head's params (its bias length)."""
  return int(np.shape(params["classifier"]["dense"]["bias"])[0])


@functools.lru_cache(maxsize=4)
def hf_classifier(path: str, key: str = "config.init.hf_checkpoint"):
  """(model config, params, head info or None) of an HF directory read for sequence classification."""
  if not os.path.isdir(path):
    raise ValueError(f"{key}={path!r} is not a directory.")
  return hf.load_classifier(path)


@functools.lru_cache(maxsize=4)
def hf_head(path: str, head_kind: str):
  """(model config, params, head info or None) of an HF directory read for a span / token head."""
  if not os.path.isdir(path):
    raise ValueError(f"config.init.hf_checkpoint={path!r} is not a directory.")
  return hf.load_head(path, head_kind)


def hf_tokenizer(path: str) -> str:
  """The tokenizer file an HF directory ships (vocab.txt or spiece.model), or ""."""
  for name in ("vocab.txt", "spiece.model"):
    if os.path.exists(os.path.join(path, name)):
      return os.path.join(path, name)
  return ""


def overwrite(params, source_params, source: str, fix: str):
  """`params` (sharded arrays) with every leaf that `source_params` holds at the same path
  replaced (shapes must match); the others keep their values. Returns (params, n_loaded).

  The source's encoder layers are first brought to the layout of `params` (stacked for a model
  with config.model.scan_layers, unrolled otherwise), so either kind of source fits either."""
  source_params = models.match_layers(source_params, params)
  flat_new = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(source_params)[0]}
  n_loaded = 0

  def take(path, old):
    nonlocal n_loaded
    key = jax.tree_util.keystr(path)
    if key not in flat_new:
      return old
    new = np.asarray(flat_new[key])
    if new.shape != old.shape:
      raise ValueError(f"{source}: {key} has shape {new.shape}, the model wants {old.shape}; {fix}")
    n_loaded += 1
    return jax.device_put(new.astype(old.dtype), old.sharding)

  out = jax.tree_util.tree_map_with_path(take, params)
  if n_loaded == 0:
    raise ValueError(f"{source}: none of its {len(flat_new)} tensors matches a parameter of the model; {fix}")
  _print(f"Warm start: {n_loaded}/{len(flat_new)} tensors from {source}")
  return out, n_loaded


def from_hf(config, params):
  """Overwrites `params` leaves with those of config.init.hf_checkpoint (shapes must match)."""
  hf_config, hf_params = hf.load_hf_checkpoint(config.init.hf_checkpoint)
  if hf_config["family"] != config.model.family:
    raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r} holds a "
                     f"{hf_config['family']} model but config.model.family={config.model.family!r}; "
                     f"use configs/{hf_config['family']}.py or another checkpoint.")
  return overwrite(params, hf_params, f"config.init.hf_checkpoint={config.init.hf_checkpoint!r}",
                   "make config.model match the checkpoint's config.json.")[0]


# ----------------------------------------------------------------------------------------------
# Continued pretraining: the model and tokenizer of config.init.hf_checkpoint.
# ----------------------------------------------------------------------------------------------
# config.model keys that are this run's, not the checkpoint's: the run keys of every start, and the
# fresh heads' init and pooler. Every other key is the checkpoint's architecture.
RUN_MODEL_KEYS = model_config_lib.RUN_KEYS + ("initializer_range", "use_pooler")
GENERATOR_KEYS = ("generator_hidden_size", "generator_layers", "generator_num_attention_heads",
                  "generator_intermediate_size")
_TOKENIZER_NAMES = {"wordpiece": "WordPiece", "sentencepiece": "sentencepiece", "tokenizer_json": "tokenizer.json"}


def _differs(a, b) -> bool:
  if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
    return abs(float(a) - float(b)) > 1e-12 * max(1.0, abs(float(b)))
  return a != b


def resolve_pretraining_start(config, command_line_keys=(), fresh_heads=()) -> dict | None:
  """With config.init.hf_checkpoint (an HF directory or one `bert-jax-convert import` wrote): sets
  every architecture key of config.model (all but RUN_MODEL_KEYS; ELECTRA's generator keys when a
  generator comes with it) and config.data.tokenizer (kind, path, lower case; a
  --config.data.tokenizer.path given on the command line is kept) from the checkpoint, and prints
  one line of what is loaded and what starts fresh. Refuses, in one line and before anything is
  built: a --config.model.* flag (in `command_line_keys`, e.g. "model.hidden_size") that
  contradicts the checkpoint, another model family, a directory without config.json or tokenizer,
  a tokenizer whose size differs from the embedding rows, missing encoder tensors. Returns
  hf.inspect's report, or None without a checkpoint (the config is left as it is). `fresh_heads`:
  the task's own heads, which no checkpoint holds (named as fresh)."""
  path = config.init.hf_checkpoint
  if not path:
    return None
  key = f"config.init.hf_checkpoint={path!r}"
  if "://" in path:
    raise ValueError(f"{key}: continued pretraining reads a local directory; copy the checkpoint here first.")
  if not os.path.isdir(path):
    raise ValueError(f"{key} is not a directory.")
  if kind(path) != "hf":
    raise ValueError(f"{key} is a bert_jax run directory, not a checkpoint directory: resume it with "
                     f"--workdir={path}, or export it (python -m bert_jax.tools.convert export {path} <hf_dir>) "
                     "and continue from the export.")
  if not os.path.exists(os.path.join(path, "config.json")) and not os.path.exists(
      os.path.join(path, hf.CONVERTED_CONFIG)):
    raise FileNotFoundError(f"{key} has no config.json: not a HuggingFace checkpoint directory (save the "
                            "model with save_pretrained, or convert it with bert-jax-convert import).")
  info = hf.inspect(path)
  cfg = info["config"]
  if cfg.family != config.model.family:
    raise ValueError(f"{key} holds a {cfg.family} model but config.model.family={config.model.family!r}; "
                     f"use configs/{cfg.family}.py (or another checkpoint).")
  start = dataclasses.asdict(cfg)
  taken = [k for k in config.model if k in start and k not in RUN_MODEL_KEYS
           and (k not in GENERATOR_KEYS or info["generator"])]
  keys = set(command_line_keys)
  for k in taken:
    if f"model.{k}" in keys and _differs(config.model[k], start[k]):
      raise ValueError(f"--config.model.{k}={config.model[k]!r} contradicts {key}, whose {k} is {start[k]!r}: "
                       "the architecture comes from the checkpoint; drop the flag (dropout, dtype, remat and "
                       "the other training-only keys stay free).")
  for k in taken:
    config.model[k] = start[k]
  tc = config.data.tokenizer
  if config.data.source == "synthetic":  # random ids: no tokenizer is read
    _print(start_line(config, info, fresh_heads))
    return info
  if "data.tokenizer.path" not in keys:
    try:
      file, tok_kind, lower = hf.tokenizer_file(path)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"{key} has no tokenizer file (vocab.txt, spiece.model or tokenizer.json): copy "
                              "the model's tokenizer files into it (tokenizer.save_pretrained).") from e
    tc.kind, tc.path = tok_kind, file
    if "data.tokenizer.lower_case" not in keys:
      tc.lower_case = lower
  n_ids = hf.tokenizer_size(tc.path, tc.kind)
  rows = info["vocab_rows"]
  if n_ids != rows:
    raise ValueError(f"The tokenizer {tc.path} has {n_ids} ids but {key} has {rows} word-embedding rows: the "
                     "tokenizer is not the checkpoint's; use the vocabulary the checkpoint was trained with.")
  if info["missing"]:
    m = info["missing"]
    raise ValueError(f"{key} lacks {len(m)} encoder tensors ({', '.join(m[:3])}{', ...' if len(m) > 3 else ''}): "
                     "an incomplete or foreign checkpoint; re-save it with save_pretrained.")
  _print(start_line(config, info, fresh_heads))
  return info


def start_line(config, info: dict, fresh_heads=()) -> str:
  """One line: the checkpoint's model and tokenizer, what is loaded and what starts fresh."""
  m, tc, parts = config.model, config.data.tokenizer, info["parts"]
  wanted = ["encoder"]
  if config.model.family == "electra":
    wanted += ["discriminator head", "generator"]
  else:
    wanted += ["MLM head"]
    if config.objective.get("sentence_loss", "none") != "none":
      wanted += ["pooler", f"{config.objective.sentence_loss.upper()} head"]
  loaded, fresh = [], []
  for part in wanted:
    have = parts.get("sentence head" if part.endswith(" head") and part[:3] in ("NSP", "SOP") else part, False)
    (loaded if have else fresh).append(part)
  fresh += list(fresh_heads)
  case = "" if tc.kind != "wordpiece" else ", lower case" if tc.lower_case else ", cased"
  tok = ("synthetic batches" if config.data.source == "synthetic" else
         f"tokenizer {_TOKENIZER_NAMES.get(tc.kind, tc.kind)} {os.path.basename(tc.path)}{case}")
  return (f"Continued pretraining from {config.init.hf_checkpoint}: {m.family} {m.num_hidden_layers} x {m.hidden_size} "
          f"({m.num_attention_heads} heads, vocab {m.vocab_size}), {tok}; loaded: {', '.join(loaded)}"
          + (f"; fresh: {', '.join(fresh)} (the checkpoint has none)" if fresh else "") + ".")
