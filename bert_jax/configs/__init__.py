r"""The config files, as package code: `from bert_jax.configs import bert` (no sys.path edits).

Each file's `get_config(arg)` returns one ConfigDict (schema in `common.py`). The repository's
top-level `configs/` is a link to this folder, so from a checkout the path form works:

  python -m bert_jax.main --config=configs/bert.py:tiny,runlocal --workdir=runs/demo

An installed package (`pip install bert_jax`) has no configs/ folder next to the user's work;
every command that takes `--config` also takes a packaged config by its file name:

  bert-jax-train --config=bert.py:tiny,runlocal --workdir=runs/demo

A path to an existing file always wins (a copied and edited config works as before); a missing
`configs/<name>.py` or `<name>.py` / `<name>` falls back to the packaged `<name>.py`.
In Python: `bert_jax.configs.load("bert.py:tiny,runlocal")`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import textwrap
from typing import Any

DIR = os.path.dirname(os.path.realpath(__file__))
# The packaged configs: every file here with a get_config (common.py is the schema, qa_tagging.py
# a part of finetune.py), so a new config file is found by name with no other change.
NAMES = tuple(sorted(f[:-3] for f in os.listdir(DIR) if f.endswith(".py") and not f.startswith("_")
                     and f[:-3] not in ("common", "qa_tagging")))


def _packaged_name(path: str) -> str | None:
  """`bert` for 'bert', 'bert.py', 'configs/bert.py', 'bert_jax/configs/bert.py'; else None."""
  head, name = os.path.split(os.path.normpath(path))
  stem = name[:-3] if name.endswith(".py") else name
  parts = [p for p in head.replace("\\", "/").split("/") if p not in ("", ".")]
  if stem in NAMES and parts in ([], ["configs"], ["bert_jax", "configs"]):
    return stem
  return None


def resolve(path: str) -> str:
  """The file of a config spec's path part: an existing file as is, else the packaged one."""
  if os.path.isfile(path):
    return path
  name = _packaged_name(path)
  if name is None:
    raise ValueError(f"Config file {path!r} does not exist. Give a path to a config file or a "
                     f"packaged config by name: {', '.join(n + '.py' for n in NAMES)} "
                     "(e.g. --config=bert.py:tiny,runlocal).")
  return os.path.join(DIR, name + ".py")


def load(spec: str) -> Any:
  """The ConfigDict of `<file>[:<arg>]`, e.g. 'bert.py:tiny,runlocal' or 'configs/finetune.py:sst2'."""
  path, _, arg = spec.partition(":")
  file = resolve(path)
  if os.path.dirname(os.path.realpath(file)) == DIR:
    module = importlib.import_module(f"bert_jax.configs.{os.path.basename(file)[:-3]}")
  else:
    loader_spec = importlib.util.spec_from_file_location("bert_jax_user_config", file)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def define_flag(name: str = "config", help_string: str = "Config file, e.g. bert.py:tiny,runlocal.",
                lock_config: bool = True):
  """`config_flags.DEFINE_config_file` whose value may also name a packaged config (see above).

  Returns the flag holder (`.value` is the ConfigDict, `--<name>.a.b=v` overrides work as usual).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=lock_config)
  flag = flags.FLAGS[name]
  load_file = flag.parser  # ml_collections' parser: path[:arg] -> get_config(arg)

  class _Resolving(flags.ArgumentParser):
    """Resolves the file part, then loads it with ml_collections' parser."""

    def parse(self, argument):
      file, sep, arg = argument.partition(":")
      return load_file.parse(resolve(file) + sep + arg)

    def flag_type(self):
      return load_file.flag_type()

  flag.parser = _Resolving()
  return holder


def _arguments(module) -> dict[str, Any]:
  """The `common.parse_arg(arg, key=default, ...)` defaults of a config's get_config, read from its
  source (nothing is built); {} when get_config does not parse its argument itself."""
  import ast  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top

  tree = ast.parse(inspect.getsource(module.get_config))
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == "parse_arg"):
      out = {}
      for kw in node.keywords:
        try:
          out[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
          out[kw.arg] = None
      return out
  return {}


def describe(choices: dict[str, Any] | None = None, width: int = 100) -> list[str]:
  """Lines listing the packaged configs: each file's first docstring line and the arguments it
  takes after `:` (the variants in its SIZES, its other arguments with their defaults and
  choices, its on/off flags). `choices` adds the allowed values of an argument by name (e.g. the
  fine-tuning tasks, which live outside this package)."""
  choices = dict(choices or {})
  lines = []
  for name in NAMES:
    module = importlib.import_module(f"bert_jax.configs.{name}")
    doc = (module.__doc__ or "").strip().splitlines()
    lines.append(f"  {name + '.py':<13} {doc[0] if doc else ''}")
    args = _arguments(module)
    # A config built on another (spanbert.py on bert.py) takes that one's arguments.
    base = next((m for m in vars(module).values() if getattr(m, "__name__", "").startswith("bert_jax.configs.")
                 and getattr(m, "get_config", None) and getattr(m, "SIZES", None)), None)
    sizes = getattr(module, "SIZES", None) or (getattr(base, "SIZES", None) if not args else None)
    if not args and base is not None:
      args = _arguments(base)
    parts = []
    if sizes:
      default = args.get("variant")
      parts.append("variants: " + " ".join(f"{s}{' (default)' if s == default else ''}" for s in sizes))
    for key, default in args.items():
      if key == "variant" or isinstance(default, bool):
        continue
      allowed = choices.get(key) or getattr(module, key.upper() + "S", None)
      parts.append(f"{key}={default}" + (f" (one of: {' '.join(allowed)})" if allowed else ""))
    switches = [k for k, v in args.items() if isinstance(v, bool)]
    if switches:
      parts.append("add: " + " ".join(f",{k}" for k in switches))
    if parts:
      lines += textwrap.wrap("; ".join(parts), width, initial_indent=" " * 16, subsequent_indent=" " * 18,
                             break_on_hyphens=False)
  return lines
