"""A run's eval history (<workdir>/eval_history.json, written by the loop; a resume drops the evals
after its checkpoint) and bert_jax.tools.curves: the table and plot of several runs, bad input in
one line."""

import json
import shutil

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import pytest

from bert_jax import train
from bert_jax.tools import curves
from train_testlib import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 4-step run evaluated at steps 2 and 4, stopped after step 2 and resumed, with a stale eval
  (step 3, as if made after the step-2 checkpoint before a crash) in its history when it resumed."""
  workdir = tmp_path_factory.mktemp("curves") / "run"
  c = tiny_config("bert", steps=4)
  c.eval.every_steps = c.checkpoint.every_steps = 2
  c.train.halt_after_steps = 2
  first = train.train_and_evaluate(c, str(workdir))
  history_path = workdir / train.EVAL_HISTORY_FILE
  history = json.loads(history_path.read_text())
  assert first["status"] == "halted" and [e["step"] for e in history] == [2]
  history_path.write_text(json.dumps(history + [dict(history[0], step=3)]))
  c.train.halt_after_steps = 0
  second = train.train_and_evaluate(c, str(workdir))
  return workdir, first, second


def test_the_history_holds_every_eval_once_and_resume_drops_the_stale_ones(run):
  workdir, first, second = run
  history = json.loads((workdir / train.EVAL_HISTORY_FILE).read_text())
  assert [e["step"] for e in history] == [2, 4]
  assert history[0]["mlm_accuracy"] == pytest.approx(first["eval"]["mlm_accuracy"])
  assert history[1] == {"step": 4, **{k: pytest.approx(v) for k, v in second["eval"].items()}}


def test_curves_prints_a_table_per_step_and_writes_the_plot(run, tmp_path, capsys):
  workdir = run[0]
  other = tmp_path / "other"
  shutil.copytree(workdir, other)
  history = json.loads((other / train.EVAL_HISTORY_FILE).read_text())
  (other / train.EVAL_HISTORY_FILE).write_text(json.dumps([dict(e, mlm_accuracy=0.5) for e in history[1:]]))
  out = tmp_path / "curves.png"
  assert curves.main([str(workdir), str(other), "--labels=a,b", "--baseline=most_frequent_token_accuracy",
                      f"--out={out}"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == "| step | a | b | baseline: most_frequent_token_accuracy |"
  a = [f"{e['mlm_accuracy']:.4f}" for e in history]
  base = [f"{e['most_frequent_token_accuracy']:.4f}" for e in history]
  assert lines[2:4] == [f"| 2 | {a[0]} |  | {base[0]} |", f"| 4 | {a[1]} | 0.5000 | {base[1]} |"]
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and lines[-1] == f"plot: {out}"


@pytest.mark.parametrize("args, phrase", [
    (["{missing}"], "eval_history.json not found"),
    (["{run}", "--metric=f1"], "has no eval metric 'f1'"),
    (["{run}", "--labels=a,b"], "--labels has 2 names for 1 workdirs"),
])
def test_bad_input_is_one_line(run, tmp_path, capsys, args, phrase):
  args = [a.format(run=run[0], missing=tmp_path) for a in args]
  assert curves.main(args) == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and phrase in err, err
