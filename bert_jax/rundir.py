"""A run directory's own files, and the run's identity.

State files (config.json, identity.json, a seed's finished.json, results.json, an ablation's
plan.json) are written whole or not at all: to a temporary sibling, then renamed (gs:// objects
are replaced whole by the store itself). A file that is still unreadable is named in one line
with the fix.

A run's identity is what defines its result: every config key but those that only schedule,
place or report the work (`FREE`), and fingerprints of the files it reads (the tokenizer, the
task's data, the starting point, the teacher). It is written to <workdir>/identity.json when the
run starts; a rerun on the same directory compares first, before anything is built, compiled or
written: the same run resumes (or reports that it is done), another is refused in one line that
names what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from etils import epath
import jax

IDENTITY_FILE = "identity.json"
# Keys that change how the work is scheduled, placed, logged or evaluated, not what is trained:
# free to change on a rerun (a key, or a section ending in ".").
FREE = ("checkpoint.", "log.", "eval.", "mesh.", "train.num_steps", "train.halt_after_steps",
        "train.compilation_cache", "train.max_consecutive_nonfinite", "data.service_address",
        "data.mask_parallelism", "data.cache_dir", "finetune.seeds", "distill.eval_teacher",
        "model.remat", "model.remat_policy", "model.attention_impl")
# Paths in the config whose files define the run, fingerprinted by content.
FILE_KEYS = ("data.tokenizer.path", "finetune.data_dir", "finetune.squad.train_file", "finetune.squad.eval_file",
             "init.hf_checkpoint", "init.workdir", "distill.teacher")
_WHOLE = 64 << 20  # files up to this size are hashed whole; larger ones by size, head and tail


class RunMismatchError(ValueError):
  """A rerun on a directory that holds another run."""


# ----------------------------------------------------------------------------------------------
# State files.
# ----------------------------------------------------------------------------------------------
def write_text(path: str, text: str) -> None:
  """Writes `path` whole or not at all (a temporary sibling renamed over it)."""
  p = epath.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  if "://" in str(path):
    p.write_text(text)  # an object store replaces an object whole
    return
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, value: Any) -> None:
  """An indented JSON file, atomically, from process 0."""
  if jax.process_index() == 0:
    write_text(path, json.dumps(value, indent=2))


def read_json(path: str, fix: str = "delete it to have the run write it again") -> Any:
  """A JSON state file; an unreadable one (empty after a kill, edited by hand) is a ValueError
  naming it and the fix."""
  try:
    return json.loads(epath.Path(path).read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:80]}); {fix}.") from None


# ----------------------------------------------------------------------------------------------
# Identity.
# ----------------------------------------------------------------------------------------------
def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
  return out


def _free(key: str) -> bool:
  return any(key == f or (f.endswith(".") and key.startswith(f)) for f in FREE)


def _file_digest(path: str) -> str:
  size = os.path.getsize(path)
  h = hashlib.sha1(str(size).encode())
  with open(path, "rb") as f:
    if size <= _WHOLE:
      h.update(f.read())
    else:
      h.update(f.read(1 << 20))
      f.seek(size - (1 << 20))
      h.update(f.read())
  return h.hexdigest()[:16]


def fingerprint(path: str) -> dict[str, str] | str:
  """Content digests of a local file, or of a directory's files (not its subfolders' or its
  checkpoints'; a bert_jax run directory by its own identity.json); remote or absent paths are
  compared by name only ("")."""
  if not path or "://" in path or not os.path.exists(path):
    return ""
  if os.path.isfile(path):
    return _file_digest(path)
  own = os.path.join(path, IDENTITY_FILE)
  if os.path.isfile(own):
    return {IDENTITY_FILE: _file_digest(own)}
  return {name: _file_digest(os.path.join(path, name)) for name in sorted(os.listdir(path))
          if os.path.isfile(os.path.join(path, name)) and not name.endswith(".lock")}


def identity(config) -> dict[str, Any]:
  """The keys and file fingerprints that define the run of `config`."""
  flat = flatten(json.loads(config.to_json()))
  files = {k: fingerprint(str(flat[k])) for k in FILE_KEYS if flat.get(k)}
  return {"config": {k: v for k, v in sorted(flat.items()) if not _free(k)}, "files": files}


_UNSET = ("", None)  # a key a newer version added, left unset: what the run did before it existed


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """'config.<key>: <there> there, <here> here' for each key that differs (flat dicts). A key only
  one side has is no difference while it is unset ("" or None): a run written before the key
  existed resumes under a version that has it."""
  return [f"config.{k}: {old.get(k, '(absent)')!r} there, {new.get(k, '(absent)')!r} here"
          for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)
          and not ((k not in old and new[k] in _UNSET) or (k not in new and old[k] in _UNSET))]


def _file_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  out = []
  for key in sorted(old.keys() | new.keys()):
    a, b = old.get(key), new.get(key)
    if a == b or a is None or b is None or a == "" or b == "":
      continue  # a path change is a config difference already; remote paths compare by name
    if isinstance(a, dict) and isinstance(b, dict):
      changed = sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))
      out.append(f"the files of config.{key} differ ({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''})")
    else:
      out.append(f"the content of config.{key} differs")
  return out


def check(workdir: str, config, limit: int = 6) -> dict[str, Any]:
  """The identity of `config`'s run; raises RunMismatchError if `workdir` holds another run.
  Reads only (identity.json, the files fingerprinted): call it before anything is written."""
  ident = identity(config)
  path = os.path.join(workdir, IDENTITY_FILE)
  if not epath.Path(path).exists():
    return ident
  old = read_json(path, "delete it if this directory holds the run of this config")
  diffs = (differences(old.get("config", {}), ident["config"])
           + _file_differences(old.get("files", {}), ident["files"]))
  if diffs:
    more = f"; ... and {len(diffs) - limit} more" if len(diffs) > limit else ""
    raise RunMismatchError(
        f"{workdir} holds another run ({path}): " + "; ".join(diffs[:limit]) + more
        + ". Nothing was changed. Rerun with the config that wrote it, or use another --workdir.")
  return ident


def record(workdir: str, ident: dict[str, Any]) -> None:
  """<workdir>/identity.json (once the run starts)."""
  write_json(os.path.join(workdir, IDENTITY_FILE), ident)
