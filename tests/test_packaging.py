"""Packaging: configs as package code (loadable by name without a configs/ folder), the console
entry points of pyproject.toml, dependencies equal to requirements.txt, the metadata (Apache-2.0
LICENSE, classifiers, one version, the tensorboard extra), constraints.txt pinning every
transitive dependency as installed and used by `make`, and (slow) a wheel built and installed
apart from the checkout whose `bert-jax-train` runs the README's job for 3 steps."""

import ast
import hashlib
import importlib.metadata
import os
import re
import pathlib
import subprocess
import sys
import tomllib
import zipfile

import pytest

from conftest import ROOT

import bert_jax
import constraints_lock
from bert_jax import configs

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_lines():
  lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
  return [line for line in lines if line]


def test_configs_load_by_name_path_or_module_alike_without_sys_path_edits(tmp_path):
  path_before = list(sys.path)
  by_name = configs.load("bert.py:tiny,runlocal").to_dict()
  assert configs.load("bert:tiny,runlocal").to_dict() == by_name
  assert configs.load("configs/bert.py:tiny,runlocal").to_dict() == by_name
  from bert_jax.configs import bert  # pylint: disable=g-import-not-at-top
  assert bert.get_config("tiny,runlocal").to_dict() == by_name
  for name in configs.NAMES:
    configs.load(f"{name}.py")
  assert sys.path == path_before
  # The top-level configs/ of a checkout is the package folder itself.
  assert (ROOT / "configs").resolve() == pathlib.Path(configs.DIR)
  # A user's own file (here an edited copy outside the repository) is loaded from its path.
  mine = tmp_path / "mine.py"
  mine.write_text((pathlib.Path(configs.DIR) / "bert.py").read_text().replace('"tiny": (2, 128)', '"tiny": (3, 128)'))
  assert configs.load(f"{mine}:tiny").model.num_hidden_layers == 3
  with pytest.raises(ValueError, match="packaged config by name: albert.py, bert.py"):
    configs.load("elsewhere/bert.py:tiny")
  with pytest.raises(ValueError, match="does not exist"):
    configs.load("roberta.py")


def test_main_takes_a_packaged_config_by_name_outside_the_checkout(tmp_path):
  """From a folder without configs/: the config loads (the bad override is what fails)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  run = lambda *a: subprocess.run([sys.executable, "-m", "bert_jax.main", f"--workdir={tmp_path}/w", *a],
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  r = run("--config=bert.py:tiny,runlocal", "--config.train.bogus_key=1")
  assert r.returncode != 0 and "bogus_key" in r.stderr, r.stderr[-2000:]
  r = run("--config=configs/nope.py:tiny")
  assert r.returncode != 0 and "packaged config by name" in r.stderr, r.stderr[-2000:]
  # bert-jax-finetune: finetune.py unless --config is given, and only fine-tuning configs.
  finetune = lambda *a: subprocess.run(
      [sys.executable, "-c", "import sys; from bert_jax import main; sys.argv[0] = 'bert-jax-finetune'; "
       "main.run_finetune()", f"--workdir={tmp_path}/w", *a],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  r = finetune("--config.finetune.bogus_key=1")  # only finetune.py has config.finetune
  assert r.returncode != 0 and "bogus_key" in r.stderr and "finetune" in r.stderr, r.stderr[-2000:]
  r = finetune("--config=bert.py:tiny")
  assert r.returncode != 0 and "takes a fine-tuning config" in r.stderr, r.stderr[-2000:]


def test_entry_points_resolve_and_dependencies_come_from_requirements():
  scripts = PYPROJECT["project"]["scripts"]
  assert set(scripts) == {"bert-jax-train", "bert-jax-finetune", "bert-jax-convert",
                          "bert-jax-preprocess", "bert-jax-rows", "bert-jax-infer",
                          "bert-jax-ablate"}
  assert PYPROJECT["project"]["dynamic"] == ["version", "dependencies"]
  assert PYPROJECT["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
  assert all("==" in line for line in requirement_lines())
  absent = []
  for name, target in scripts.items():
    module, func = target.split(":")
    if not (ROOT / (module.replace(".", "/") + ".py")).exists():
      absent.append(f"{name} ({module})")
      continue
    # Parsed, not imported: the entry modules each define absl flags at import (one per process).
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    assert func in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}, name
  if absent:
    pytest.skip(f"not in this checkout yet: {absent}")


# The Apache License 2.0 as the Apache Software Foundation publishes it (LICENSE-2.0.txt).
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"


def test_license_and_metadata():
  project = PYPROJECT["project"]
  assert hashlib.md5((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_MD5
  assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
  assert project["authors"] and project["requires-python"] == ">=3.11"
  classifiers = project["classifiers"]
  assert "Programming Language :: Python :: 3.11" in classifiers
  assert not any(c.startswith("License ::") for c in classifiers)  # the SPDX expression says it (PEP 639)
  # One version: pyproject reads bert_jax.__version__; the installed (editable) metadata agrees.
  assert "version" not in project
  assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bert_jax.__version__"}
  assert re.fullmatch(r"\d+\.\d+\.\d+", bert_jax.__version__)
  assert importlib.metadata.version("bert_jax") == bert_jax.__version__


def test_tensorboard_extra_is_pinned():
  extra = PYPROJECT["project"]["optional-dependencies"]["tensorboard"]
  assert len(extra) == 1 and re.fullmatch(r"tensorboard==\d+\.\d+\.\d+", extra[0])
  try:  # when installed (pip install -e '.[tensorboard]'), it is the pinned one
    assert importlib.metadata.version("tensorboard") == extra[0].split("==")[1]
  except importlib.metadata.PackageNotFoundError:
    pass


def test_constraints_pin_every_transitive_dependency_as_installed():
  """constraints.txt is what tests/constraints_lock.py writes from this environment: every
  distribution the requirements files pull in, at its installed version, the top-level pins left
  to those files; `make` installs with it."""
  text = (ROOT / "constraints.txt").read_text()
  assert text == constraints_lock.constraints_text(), (
      "constraints.txt differs from this environment: .venv/bin/python tests/constraints_lock.py")
  pins = constraints_lock.read_constraints()
  top = {r.name.lower().replace("_", "-") for r in constraints_lock.top_level_requirements()}
  assert pins and not top & set(pins)
  assert {"numpy", "protobuf", "ml-dtypes", "opt-einsum", "tensorstore"} <= set(pins)  # via jax, tf, orbax
  for r in constraints_lock.top_level_requirements(("requirements.txt",)):  # the top-level pins are untouched
    assert importlib.metadata.version(r.name) == str(r.specifier).removeprefix("=="), r
  makefile = (ROOT / "Makefile").read_text()
  installs = [line.strip() for line in makefile.splitlines() if "pip install" in line and " -r " in line]
  assert installs and all("-c constraints.txt" in line for line in installs), installs


@pytest.mark.slow
def test_wheel_installs_apart_from_the_checkout_and_trains(tmp_path):
  """`pip wheel` (no network: this environment's setuptools), the wheel's contents and metadata,
  then installed into a separate folder and run from a directory holding nothing but a workdir."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  env.pop("PYTHONPATH", None)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "-w", str(tmp_path / "dist"), str(ROOT)], check=True, env=env, timeout=600)
  wheel, = (tmp_path / "dist").glob("bert_jax-*.whl")
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
  assert {f"bert_jax/configs/{n}.py" for n in configs.NAMES + ("common", "__init__")} <= names
  assert not any(n.startswith(("configs/", "tests/", "colab/")) for n in names)
  requires = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
  assert requires[:len(requirement_lines())] == requirement_lines()
  assert requires[len(requirement_lines()):] == ['tensorboard==2.21.0; extra == "tensorboard"']
  assert f"Version: {bert_jax.__version__}" in meta and "License-Expression: Apache-2.0" in meta
  assert "Provides-Extra: tensorboard" in meta and "License-File: LICENSE" in meta
  license_file = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
  with zipfile.ZipFile(wheel) as z:
    assert hashlib.md5(z.read(license_file)).hexdigest() == APACHE_2_MD5
  assert "bert-jax-train = bert_jax.main:run" in entry
  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                 check=True, env=env, timeout=600)
  env["PYTHONPATH"] = str(site)
  run_dir = tmp_path / "elsewhere"
  run_dir.mkdir()
  where = subprocess.run([sys.executable, "-c", "import bert_jax; print(bert_jax.__file__)"], cwd=run_dir,
                         env=env, capture_output=True, text=True, check=True).stdout
  assert where.startswith(str(site)), where
  r = subprocess.run([str(site / "bin" / "bert-jax-train"), "--config=bert.py:tiny,runlocal", "--workdir=demo",
                      "--config.train.num_steps=3", "--config.optimizer.warmup_steps=1",
                      "--config.eval.every_steps=3", "--config.checkpoint.every_steps=3",
                      "--config.eval.num_batches=1"],
                     cwd=run_dir, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
  assert "eval @ 3: mlm accuracy" in r.stdout
  assert (run_dir / "demo" / "checkpoints").is_dir()
