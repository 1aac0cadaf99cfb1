"""No conversion overwrites another model (issue 25, point 2), and `export` takes a pretraining
workdir (issue 24, point 6).

`bert-jax-convert import / export / export-classifier` refuse an output directory that holds
files unless --overwrite is given, and with it replace the directory as a whole (no file of the
old model stays beside the new one); an output that is the input, or holds it, is refused. Each
refusal is one line naming the directory and the fix, exit status 2, with every file that
existed before byte-identical after and nothing new written next to it. The models are tiny and
written without training (tests/tiny_models.py).
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

import tiny_models as tm
from conftest import ROOT

from bert_jax.interop import hf
from bert_jax.tools import convert


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
  """Model A (vocab 128, hidden 32), model B (vocab 160, hidden 48, a README), a pretraining
  workdir and a fine-tuning seed directory on A's vocabulary."""
  d = tmp_path_factory.mktemp("models")
  tm.write_hf(d / "a", tokenizer="both")
  tm.write_hf(d / "b", vocab_size=160, hidden=48, seed=5, extra={"README.md": "model B\n"})
  tm.write_pretraining_workdir(d / "pre", d / "a" / "vocab.txt")
  tm.write_finetuning_seed(d / "ft" / "seed_0", d / "a" / "vocab.txt")
  return d


def run(args, capsys):
  """convert.main in this process: (exit status, stdout, stderr)."""
  code = convert.main([str(a) for a in args])
  out = capsys.readouterr()
  return code, out.out, out.err


def assert_refused(code, err, *names):
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
  assert lines[0].startswith("bert-jax-convert ") and ": error: " in lines[0], err
  for name in names:
    assert str(name) in lines[0], (name, err)


def siblings(path: pathlib.Path) -> set[str]:
  return {p.name for p in path.parent.iterdir()}


COMMANDS = {
    "import": lambda d: ["import", d / "a"],
    "export": lambda d: ["export", d / "conv_a"],
    "export-workdir": lambda d: ["export", d / "pre"],
    "export-classifier": lambda d: ["export-classifier", d / "ft" / "seed_0"],
}


@pytest.fixture(scope="module")
def converted(models_dir):
  """A's import (the input of `export`)."""
  assert convert.main(["import", str(models_dir / "a"), str(models_dir / "conv_a")]) == 0
  return models_dir / "conv_a"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_output_holding_another_model_is_refused_and_left_byte_identical(command, models_dir, converted,
                                                                            tmp_path, capsys):
  out = tmp_path / "out"
  shutil.copytree(models_dir / "b", out)
  before, around = tm.snapshot(out), siblings(out)
  code, _, err = run([*COMMANDS[command](models_dir), out], capsys)
  assert_refused(code, err, out, "--overwrite")
  assert tm.snapshot(out) == before and siblings(out) == around


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_overwrite_replaces_the_directory_as_a_whole(command, models_dir, converted, tmp_path, capsys):
  """With --overwrite no file of model B stays (its README, its 160-piece vocab.txt); the result is
  exactly what a new directory gets, and no temporary sibling is left."""
  fresh, out = tmp_path / "fresh", tmp_path / "out"
  assert run([*COMMANDS[command](models_dir), fresh], capsys)[0] == 0
  shutil.copytree(models_dir / "b", out)
  code, stdout, err = run([*COMMANDS[command](models_dir), out, "--overwrite"], capsys)
  assert code == 0, err
  assert str(out) in stdout
  assert tm.snapshot(out) == tm.snapshot(fresh)
  assert "README.md" not in os.listdir(out)
  if (out / "vocab.txt").exists():
    assert (out / "vocab.txt").read_bytes() == (models_dir / "a" / "vocab.txt").read_bytes()
  assert siblings(out) == {"fresh", "out"}


def test_an_empty_output_directory_is_used_without_overwrite(models_dir, tmp_path, capsys):
  (tmp_path / "out").mkdir()
  code, _, err = run(["import", models_dir / "a", tmp_path / "out"], capsys)
  assert code == 0, err
  assert (tmp_path / "out" / hf.CONVERTED_PARAMS).exists()


def test_input_and_output_the_same_directory_is_refused(models_dir, converted, tmp_path, capsys):
  """`import X X` used to write 3 files into X and then die with a raw SameFileError."""
  for command, src in (("import", models_dir / "a"), ("export", converted), ("export", models_dir / "pre"),
                       ("export-classifier", models_dir / "ft" / "seed_0")):
    copy = tmp_path / command / src.name
    shutil.copytree(src, copy)
    before = tm.snapshot(copy.parent)
    for flags in ([], ["--overwrite"]):
      code, _, err = run([command, copy, copy, *flags], capsys)
      assert_refused(code, err, copy, "another output directory")
      assert tm.snapshot(copy.parent) == before


def test_an_output_holding_the_input_is_refused_even_with_overwrite(models_dir, tmp_path, capsys):
  """Replacing <out> would delete <out>/model, the model being read."""
  shutil.copytree(models_dir / "a", tmp_path / "out" / "model")
  before = tm.snapshot(tmp_path)
  code, _, err = run(["import", tmp_path / "out" / "model", tmp_path / "out", "--overwrite"], capsys)
  assert_refused(code, err, tmp_path / "out", "holds")
  assert tm.snapshot(tmp_path) == before


def test_an_output_that_is_a_file_is_refused(models_dir, tmp_path, capsys):
  (tmp_path / "out").write_text("notes\n")
  code, _, err = run(["import", models_dir / "a", tmp_path / "out", "--overwrite"], capsys)
  assert_refused(code, err, tmp_path / "out", "is a file")
  assert (tmp_path / "out").read_text() == "notes\n" and siblings(tmp_path / "out") == {"out"}


def test_a_failed_conversion_leaves_the_output_as_it_was(models_dir, converted, tmp_path, capsys, monkeypatch):
  out = tmp_path / "out"
  shutil.copytree(models_dir / "b", out)
  before = tm.snapshot(out)

  def export_then_fail(cfg, params, hf_dir):
    (pathlib.Path(hf_dir) / "config.json").write_text("{}")  # half written
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(hf, "export_hf", export_then_fail)
  with pytest.raises(OSError, match="No space left"):
    convert.main(["export", str(converted), str(out), "--overwrite"])
  assert tm.snapshot(out) == before and siblings(out) == {"out"}


def test_export_takes_a_pretraining_workdir(models_dir, tmp_path, capsys):
  """The workdir's checkpoint, model config and tokenizer: importing the export gives the
  checkpoint's params back bit for bit."""
  code, _, err = run(["export", models_dir / "pre", tmp_path / "hf"], capsys)
  assert code == 0, err
  assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors", "tokenizer_config.json",
                                                 "vocab.txt"]
  cfg, params, info = hf.import_hf(str(tmp_path / "hf"))
  assert info["initialized"] == [] and info["unused"] == []
  assert (cfg.hidden_size, cfg.vocab_size) == (32, 128)
  from bert_jax import starts  # pylint: disable=g-import-not-at-top
  saved = traverse_util.flatten_dict(starts.pretrained_params(str(models_dir / "pre"), backbone=False), sep="/")
  got = traverse_util.flatten_dict(params, sep="/")
  assert set(got) == set(saved)
  for k, v in saved.items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  code, _, err = run(["export", models_dir / "pre", tmp_path / "hf2", "--checkpoint=9"], capsys)
  assert_refused(code, err, "--checkpoint=9", "[1]")
  assert not (tmp_path / "hf2").exists()


def test_export_of_a_fine_tuning_run_points_at_export_classifier(models_dir, tmp_path, capsys):
  code, _, err = run(["export", models_dir / "ft" / "seed_0", tmp_path / "hf"], capsys)
  assert_refused(code, err, "export-classifier")
  assert not (tmp_path / "hf").exists()


def test_the_command_line_refuses_in_one_line_with_exit_status_2(models_dir, tmp_path):
  """The real command: exit status 2, one line on stderr, no traceback; with --debug the exception
  propagates (its traceback)."""
  out = tmp_path / "out"
  shutil.copytree(models_dir / "b", out)
  before = tm.snapshot(out)
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "bert_jax.tools.convert", "import", str(models_dir / "a"), str(out)]
  r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert_refused(r.returncode, r.stderr, out, "--overwrite")
  with pytest.raises(convert.Refused, match="--overwrite"):
    convert.main(cmd[3:] + ["--debug"])
  assert tm.snapshot(out) == before
