"""A run's identity (bert_jax.rundir): a rerun on a directory that holds another run is refused in
one line before anything is compiled, touching nothing; the same run resumes; state files are
written whole and an unreadable one names itself (issue 25's destructive cases)."""

import hashlib
import json
import os
import pathlib

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import pytest

from bert_jax import finetune
from bert_jax import rundir
from bert_jax import train
from test_finetune import ft_config, make_hf_dir, write_sst2
from test_reliability import _COMPILE, _JaxEvents
from train_testlib import tiny_config


def snapshot(directory: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(directory)): hashlib.sha1(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sst2_workdir(tmp_path_factory):
  """A finished 1-seed SST-2-like fine-tuning run (2 steps)."""
  root = tmp_path_factory.mktemp("identity")
  hf = make_hf_dir(root / "hf")
  data = write_sst2(root / "sst2", n_train=32, n_dev=16, n_test=4)[0]
  c = ft_config(hf, data, epochs=1.0)
  workdir = root / "run"
  finetune.run(c, str(workdir))
  return c, workdir, root


def refused(fn, workdir: pathlib.Path, *match: str) -> str:
  jax.random.PRNGKey(0)  # the two tiny eager ops setup makes, compiled once outside the count
  jax.numpy.zeros((), jax.numpy.int32)
  before = snapshot(workdir)
  events = _JaxEvents()
  with events, pytest.raises(ValueError) as info:
    fn()
  message = str(info.value)
  for m in match:
    assert m in message, message
  assert "\n" not in message
  assert events.count(_COMPILE) == 0, events.events  # no model was built
  assert snapshot(workdir) == before  # every file byte-identical
  return message


def test_another_task_on_a_finished_workdir_is_refused(sst2_workdir):
  c, workdir, root = sst2_workdir
  del root
  other = ft_config(c.init.hf_checkpoint, c.finetune.data_dir, task="rte", epochs=1.0)
  refused(lambda: finetune.run(other, str(workdir)), workdir, "config.finetune.task: 'sst2' there, 'rte' here",
          "Nothing was changed", "another --workdir")


@pytest.mark.slow  # scores the finished seed again (a compile)
def test_changed_data_or_hyperparameters_are_refused_and_seeds_are_free(sst2_workdir, tmp_path):
  c, workdir, root = sst2_workdir
  lr = ft_config(c.init.hf_checkpoint, c.finetune.data_dir, epochs=1.0)
  lr.optimizer.learning_rate = 1e-3
  refused(lambda: finetune.run(lr, str(workdir)), workdir, "config.optimizer.learning_rate: 0.005 there, 0.001 here")
  # The same file names with other content: a copy of the workdir sees the data it was trained on change.
  data2 = write_sst2(tmp_path / "sst2", n_train=32, n_dev=16, n_test=4, seed=1)[0]
  moved = ft_config(c.init.hf_checkpoint, data2, epochs=1.0)
  msg = refused(lambda: finetune.run(moved, str(workdir)), workdir, "config.finetune.data_dir")
  assert "there" in msg
  # Cadences and the seed count are free: the finished seed is scored again, not retrained.
  same = ft_config(c.init.hf_checkpoint, c.finetune.data_dir, epochs=1.0)
  same.log.every_steps = 7
  out = finetune.run(same, str(workdir))
  assert out["seeds"][0]["best_step"] >= 1


@pytest.mark.slow  # two compiled runs
def test_pretraining_rerun_with_other_masking_is_refused(tmp_path):
  c = tiny_config("bert", steps=2)
  workdir = tmp_path / "pre"
  assert train.train_and_evaluate(c, str(workdir))["status"] == "done"
  ident = json.loads((workdir / rundir.IDENTITY_FILE).read_text())
  assert ident["config"]["data.mask_rate"] == 0.15 and "train.num_steps" not in ident["config"]
  c.data.mask_rate = 0.4
  refused(lambda: train.train_and_evaluate(c, str(workdir)), workdir, "config.data.mask_rate: 0.15 there, 0.4 here")
  c.data.mask_rate = 0.15
  c.train.num_steps = 3  # more steps of the same run: it resumes
  assert train.train_and_evaluate(c, str(workdir))["step"] == 3


@pytest.mark.parametrize("name", [finetune.DONE_FILE, rundir.IDENTITY_FILE])
def test_an_emptied_state_file_is_named_with_the_fix(sst2_workdir, tmp_path, name):
  c, workdir, _ = sst2_workdir
  copy = tmp_path / "copy"
  os.system(f"cp -r {workdir} {copy}")
  target = copy / "seed_0" / name if name == finetune.DONE_FILE else copy / name
  target.write_text("")  # what a kill during a truncate-and-write left
  msg = refused(lambda: finetune.run(ft_config(c.init.hf_checkpoint, c.finetune.data_dir, epochs=1.0), str(copy)),
                copy, str(target), "unreadable", "delete it")
  assert "JSONDecodeError" in msg


def test_state_files_are_written_whole(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  rundir.write_json(str(path), {"a": 1})
  calls = []
  real = os.replace
  monkeypatch.setattr(os, "replace", lambda a, b: calls.append((a, b)) or real(a, b))
  rundir.write_json(str(path), {"a": 2})
  assert calls and calls[0][1] == str(path) and calls[0][0] != str(path)  # a sibling renamed over it
  assert json.loads(path.read_text()) == {"a": 2} and sorted(os.listdir(tmp_path)) == ["results.json"]


def test_a_key_added_by_a_newer_version_is_no_difference_while_unset():
  old = {"data.mask_rate": 0.15}  # an identity written before data.text_eval_glob existed
  assert rundir.differences(old, {"data.mask_rate": 0.15, "data.text_eval_glob": ""}) == []
  assert rundir.differences(old, {"data.mask_rate": 0.15, "data.text_eval_glob": "eval/*.txt"}) == [
      "config.data.text_eval_glob: '(absent)' there, 'eval/*.txt' here"]
  assert rundir.differences({"data.mask_rate": 0.15, "data.x": None}, old) == []
  assert rundir.differences(old, {"data.mask_rate": 0.3}) == ["config.data.mask_rate: 0.15 there, 0.3 here"]
