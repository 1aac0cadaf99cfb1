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
