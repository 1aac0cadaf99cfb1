"""A command line that helps (issue 24, point 6).

bert-jax-train / bert-jax-finetune: `--help` exits 0 and lists every packaged config with its
variants; every config or input error is one line on stderr naming the flag, key or file and the
fix, exit status 2, no traceback, nothing compiled and nothing written (`--debug` keeps the
traceback); a warmup longer than the run is clamped with a one-line notice. The error cases run in
one fresh process (bert_jax.main defines its absl flags at import) that counts XLA compilations.

bert-jax-infer: `embed` without --out prints the vectors; --top_k and --max_length are checked
(one line, exit 2); an HF directory with only transformers' tokenizer.json loads through the
`tokenizers` library, tokenizing as its vocab.txt does; loading an MLM checkpoint warns about no
tensor it uses.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tiny_models as tm
from conftest import ROOT

from bert_jax import configs
from bert_jax import rundir
from bert_jax.data import tokenizers
from bert_jax.tools import infer

# Runs bert_jax.main's entry points once per case in this one process; prints their exit status,
# output and the number of XLA compilations each caused. With "fake_train", the training loop is
# replaced by one that records the config it was given.
_DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys, traceback
    import jax
    from absl import flags
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *a, **k: compiles.append(name) if name.endswith("backend_compile_duration") else None)
    from bert_jax import main
    from bert_jax import train
    real_train, given = train.train_and_evaluate, []

    def fake_train(config, workdir, devices=None):
      given.append(config.to_dict())
      return {"status": "done", "step": config.train.num_steps}

    results = []
    for case in json.loads(sys.argv[1]):
      sys.argv = list(case["argv"])
      flags.FLAGS.unparse_flags()
      for name in [n for n in flags.FLAGS if n.startswith("config.")]:  # the last case's overrides
        delattr(flags.FLAGS, name)
      train.train_and_evaluate = fake_train if case.get("fake_train") else real_train
      given.clear()
      n, out, err = len(compiles), io.StringIO(), io.StringIO()
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
          getattr(main, case.get("entry", "run"))()
          code = 0
        except SystemExit as e:
          code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:  # what app.run would show as a traceback
          traceback.print_exc()
          code = "raised " + type(e).__name__
      results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                      "compiles": len(compiles) - n, "config": given[0] if given else None})
    print("RESULTS " + json.dumps(results))
""")

TRAIN, FINETUNE = "bert-jax-train", "bert-jax-finetune"


def _cases(w):
  """name -> (argv, entry, fake_train, the phrases its one line must hold)."""
  tiny = "--config=bert.py:tiny,runlocal"
  return {
      "missing config file": ([TRAIN, "--config=nope.py", f"--workdir={w}"], ["--config=nope.py", "bert.py"]),
      "unknown variant": ([TRAIN, "--config=bert.py:huge", f"--workdir={w}"],
                          ["--config=bert.py:huge", "'huge'", "tiny"]),
      "unknown config argument": ([TRAIN, "--config=bert.py:tiny,fast", f"--workdir={w}"],
                                  ["'fast'", "runlocal"]),
      "misspelt key": ([TRAIN, tiny, "--config.train.num_stepz=3", f"--workdir={w}"],
                       ["--config.train.num_stepz", "config.train has no key 'num_stepz'",
                        "--config.train.num_steps"]),
      "misspelt group": ([TRAIN, tiny, "--config.trian.num_steps=3", f"--workdir={w}"],
                         ["--config.trian.num_steps", "'trian'", "--config.train"]),
      "wrong type": ([TRAIN, tiny, "--config.train.num_steps=ten", f"--workdir={w}"],
                     ["--config.train.num_steps=ten", "takes an int"]),
      "no workdir": ([TRAIN, tiny], ["--workdir is required"]),
      "unknown flag": ([TRAIN, tiny, f"--workdir={w}", "--num_steps=3"], ["'num_steps'", "--config."]),
      "stray argument": ([TRAIN, tiny, f"--workdir={w}", "steps=3"], ["steps=3", "--config.<key>=<value>"]),
      # Refused by the run's own checks (state.validate, the tokenizer), before anything compiles.
      "bad value": ([TRAIN, tiny, "--config.optimizer.name=adamx", f"--workdir={w}"],
                    ["config.optimizer.name", "adamx", "adamw"]),
      "missing tokenizer file": ([TRAIN, tiny, "--config.data.tokenizer.path=/no/such/vocab.txt",
                                  f"--workdir={w}"], ["config.data.tokenizer.path", "/no/such/vocab.txt"]),
      "pretraining config to finetune": ([FINETUNE, "--config=bert.py:tiny", f"--workdir={w}"],
                                         ["finetune.py", "bert-jax-train"]),
      "fine-tuning without a start": ([FINETUNE, "--config=finetune.py:rte", f"--workdir={w}"],
                                      ["config.init.workdir", "config.init.hf_checkpoint"]),
  }


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
  """(results by case name, the workdir every failing case was given)."""
  tmp = tmp_path_factory.mktemp("cli")
  w = tmp / "never_written"
  cases = {name: {"argv": argv, "entry": "run_finetune" if argv[0] == FINETUNE else "run"}
           for name, (argv, _) in _cases(w).items()}
  cases["help"] = {"argv": [TRAIN, "--help"]}
  cases["finetune help"] = {"argv": [FINETUNE, "-h"], "entry": "run_finetune"}
  cases["debug"] = {"argv": [TRAIN, "--config=bert.py:tiny,runlocal", "--config.optimizer.name=adamx",
                             f"--workdir={w}", "--debug"]}
  cases["debug of a flag"] = {"argv": [TRAIN, "--config=bert.py:huge", f"--workdir={w}", "--debug"]}
  cases["warmup"] = {"argv": [TRAIN, "--config=bert.py:tiny,runlocal", "--config.train.num_steps=5",
                              f"--workdir={tmp / 'run'}"], "fake_train": True}
  cases["warmup kept"] = {"argv": [TRAIN, "--config=bert.py:tiny,runlocal", "--config.train.num_steps=100",
                                   f"--workdir={tmp / 'run'}"], "fake_train": True}
  names = list(cases)
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps([cases[n] for n in names])], cwd=tmp, env=env,
                     capture_output=True, text=True, timeout=600)
  line = next((l for l in r.stdout.splitlines() if l.startswith("RESULTS ")), None)
  assert line, r.stdout[-3000:] + r.stderr[-3000:]
  return dict(zip(names, json.loads(line[len("RESULTS "):]))), w


def test_help_exits_0_and_lists_every_packaged_config_with_its_variants(cli):
  results, _ = cli
  for name in ("help", "finetune help"):
    r = results[name]
    assert r["code"] == 0 and r["compiles"] == 0, r
    text = r["stdout"]
    assert text.startswith("usage: ") and "--config.<key>=<value>" in text and "--debug" in text
    for config in configs.NAMES:
      assert re.search(rf"^  {config}\.py ", text, flags=re.M), (config, text)
  text = results["help"]["stdout"]
  from bert_jax.configs import albert, bert, electra  # pylint: disable=g-import-not-at-top
  for module in (bert, albert, electra):
    lines = text.splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith(f"  {module.__name__.rsplit('.', 1)[1]}.py "))
    assert module.__doc__.strip().splitlines()[0] in lines[at]
    variants = lines[at + 1]
    assert all(size in variants for size in module.SIZES), (module.__name__, variants)
  assert re.search(r"task=sst2 \(one of: cola sst2 .*squad", text.replace("\n", " ").replace("  ", " "))
  assert "recipe=bert (one of: bert electra)" in text and ",lora" in text and ",runlocal" in text
  assert "finetune.py:rte" in results["finetune help"]["stdout"]


@pytest.mark.parametrize("case", sorted(_cases("w")))
def test_a_config_or_input_error_is_one_line_with_exit_status_2(case, cli):
  """One line naming the flag / key / file and the fix; no traceback; nothing compiled or written."""
  results, workdir = cli
  r = results[case]
  lines = r["stderr"].strip().splitlines()
  assert r["code"] == 2 and len(lines) == 1 and "Traceback" not in r["stderr"], r
  prog = _cases("w")[case][0][0]
  assert lines[0].startswith(f"{prog}: error: "), lines[0]
  for phrase in _cases("w")[case][1]:
    assert phrase in lines[0], (phrase, lines[0])
  assert r["compiles"] == 0, r
  assert not workdir.exists()


def test_debug_keeps_the_traceback(cli):
  results, workdir = cli
  for name, error in (("debug", "ValueError: Unknown config.optimizer.name='adamx'"),
                      ("debug of a flag", "Unknown BERT variant 'huge'")):
    r = results[name]
    assert str(r["code"]).startswith("raised") and "Traceback" in r["stderr"] and error in r["stderr"], r
  assert not workdir.exists()


def test_a_warmup_longer_than_the_run_is_clamped_with_a_one_line_notice(cli):
  """bert.py:tiny,runlocal warms up over 60 steps: a 5-step run warms up over its 5 (a traceback
  about warmup_steps=60 before); a 100-step run keeps its 60, without a notice."""
  results, _ = cli
  r = results["warmup"]
  assert r["code"] == 0 and r["compiles"] == 0, r
  assert r["config"]["optimizer"]["warmup_steps"] == 5 and r["config"]["train"]["num_steps"] == 5
  notice = [l for l in r["stderr"].splitlines() if "warmup" in l]
  assert len(notice) == 1 and "config.optimizer.warmup_steps=60" in notice[0], r["stderr"]
  assert "config.train.num_steps=5" in notice[0] and "--config.optimizer.warmup_steps" in notice[0]
  r = results["warmup kept"]
  assert r["code"] == 0 and r["config"]["optimizer"]["warmup_steps"] == 60, r
  assert "warmup" not in r["stderr"]


@pytest.mark.slow
def test_a_five_step_run_of_the_readme_config_trains(tmp_path):
  """The issue's command itself, on synthetic data and a smaller model: it trains to the end."""
  cmd = [sys.executable, "-m", "bert_jax.main", "--config=bert.py:tiny,runlocal", f"--workdir={tmp_path / 'run'}",
         "--config.train.num_steps=5", "--config.data.source=synthetic", "--config.model.hidden_size=32",
         "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64",
         "--config.model.num_hidden_layers=1", "--config.eval.num_batches=1", "--config.train.batch_size=8",
         "--config.data.max_seq_length=16", "--config.model.max_position_embeddings=16",
         "--config.data.max_predictions_per_seq=4", "--config.model.vocab_size=128"]
  r = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
  assert "warming up over all 5 steps" in r.stderr and "step 5/5" in r.stdout + r.stderr
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["optimizer"]["warmup_steps"] == 5


# ----------------------------------------------------------------------------------------------
# bert-jax-infer
# ----------------------------------------------------------------------------------------------
TEXTS = ["Hello world!", "The quick brown fox jumps over the lazy dog, twice.", "an apple pie"]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  """The same tiny BERT with vocab.txt (+ tokenizer.json) and with tokenizer.json only."""
  d = tmp_path_factory.mktemp("infer")
  both = tm.write_hf(d / "both", tokenizer="both")
  only = d / "json_only"
  shutil.copytree(both, only)
  for name in ("vocab.txt", "tokenizer_config.json"):
    (only / name).unlink()
  return both, only


def run_infer(args, capsys):
  code = infer.main([str(a) for a in args])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_embed_without_out_prints_the_vectors(hf_dirs, capsys):
  both, _ = hf_dirs
  code, out, err = run_infer(["embed", f"--model={both}", *[f"--text={t}" for t in TEXTS]], capsys)
  assert code == 0, err
  want = infer.embed(infer.load(str(both)), TEXTS)["sentence"]
  capsys.readouterr()
  lines = out.splitlines()
  for i, text in enumerate(TEXTS):
    at = lines.index(text) + 1
    block = []
    while lines[at].startswith("  "):
      block.append(lines[at])
      at += 1
    printed = np.array([float(x) for x in " ".join(block).replace("[", " ").replace("]", " ").split()])
    assert printed.shape == (32,)
    np.testing.assert_allclose(printed, want[i], atol=6e-5)
  assert "3 inputs: sentence embeddings (3, 32)" in out and "--out=FILE.npy" in out


def test_embed_of_many_inputs_without_out_says_where_to_write_them(hf_dirs, tmp_path, capsys):
  both, _ = hf_dirs
  (tmp_path / "in.txt").write_text("\n".join(f"the apple {i}" for i in range(infer.PRINT_MAX_INPUTS + 1)))
  code, out, err = run_infer(["embed", f"--model={both}", f"--file={tmp_path / 'in.txt'}"], capsys)
  assert code == 0, err
  assert out.strip().splitlines() == [
      f"{infer.PRINT_MAX_INPUTS + 1} inputs: sentence embeddings ({infer.PRINT_MAX_INPUTS + 1}, 32) (mean pooling): "
      f"more than {infer.PRINT_MAX_INPUTS} inputs, not printed; --out=FILE.npy writes them, --tokens_out=FILE.npz "
      "the token embeddings"]


@pytest.mark.parametrize("flags, phrases", [
    (["--top_k=0"], ["--top_k", "0 is less than 1"]),
    (["--top_k=-3"], ["--top_k", "-3 is less than 1"]),
    (["--top_k=x"], ["--top_k", "'x' is not a whole number"]),
    (["--top_k=100000"], ["--top_k=100000", "vocabulary size (128)"]),
    (["--max_length=512"], ["--max_length=512", "max_position_embeddings=32", "--max_length=32"]),
    (["--file=/no/such/inputs.txt"], ["--file=/no/such/inputs.txt"]),
])
def test_infer_flags_are_checked_in_one_line(flags, phrases, hf_dirs, tmp_path, capsys):
  both, _ = hf_dirs
  args = ["fill-mask", f"--model={both}", "--text=the [MASK] pie", *flags, f"--json={tmp_path / 'p.jsonl'}"]
  try:
    code, out, err = run_infer(args, capsys)
  except SystemExit as e:  # argparse's own refusals
    code, captured = e.code, capsys.readouterr()
    out, err = captured.out, captured.err
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
  assert lines[0].startswith("bert-jax-infer"), lines
  for phrase in phrases:
    assert phrase in lines[0], (phrase, lines[0])
  assert not (tmp_path / "p.jsonl").exists() and "[MASK] 1:" not in out


def test_a_run_directory_without_checkpoints_is_named_in_one_line(tmp_path, capsys):
  run = tmp_path / "run"  # what a run that was stopped before its first save leaves
  run.mkdir()
  (run / "config.json").write_text(json.dumps({"model": {"family": "bert"}, "train": {"num_steps": 10}}))
  (run / rundir.IDENTITY_FILE).write_text("{}")
  code, out, err = run_infer(["fill-mask", f"--model={run}", "--text=the [MASK] pie"], capsys)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
  assert f"--model={str(run)!r}" in lines[0] and "without checkpoints/" in lines[0], lines[0]


def test_a_binary_input_file_is_named_in_one_line(hf_dirs, tmp_path, capsys):
  both, _ = hf_dirs
  (tmp_path / "in.txt").write_bytes(b"\xff\xfe\x00binary")
  code, _, err = run_infer(["embed", f"--model={both}", f"--file={tmp_path / 'in.txt'}"], capsys)
  assert code == 2 and len(err.strip().splitlines()) == 1 and f"--file={tmp_path / 'in.txt'}" in err, err


def test_a_tokenizer_json_only_directory_loads_and_tokenizes_as_its_vocab_txt(hf_dirs):
  both, only = hf_dirs
  a, b = infer.load(str(both)), infer.load(str(only))
  assert isinstance(b.tokenizer, tokenizers.JsonTokenizer) and not isinstance(a.tokenizer, tokenizers.JsonTokenizer)
  texts = TEXTS + ["UNAFFABLE apples, the Bank's rates!", "w12 w3 ##a"]
  assert [b.tokenizer.encode(t) for t in texts] == [a.tokenizer.encode(t) for t in texts]
  for attr in ("cls_id", "sep_id", "mask_id", "pad_id", "unk_id", "vocab_size"):
    assert getattr(b.tokenizer, attr) == getattr(a.tokenizer, attr), attr
  np.testing.assert_array_equal(b.tokenizer.is_word_start, a.tokenizer.is_word_start)
  np.testing.assert_allclose(infer.embed(b, texts)["sentence"], infer.embed(a, texts)["sentence"], atol=1e-6)
  preds_a, preds_b = (infer.fill_mask(m, ["the [MASK] pie"], top_k=3) for m in (a, b))
  assert preds_a == preds_b


def test_a_directory_without_any_tokenizer_is_named(hf_dirs, tmp_path, capsys):
  _, only = hf_dirs
  shutil.copytree(only, tmp_path / "none")
  (tmp_path / "none" / "tokenizer.json").unlink()
  code, _, err = run_infer(["embed", f"--model={tmp_path / 'none'}", "--text=hello"], capsys)
  assert code == 2 and str(tmp_path / "none") in err and "tokenizer.json" in err, err


def test_loading_an_mlm_checkpoint_warns_about_no_tensor_it_uses(hf_dirs, caplog):
  """fill-mask on a *ForPreTraining / *ForMaskedLM directory uses its MLM head: no "not used"."""
  both, _ = hf_dirs
  with caplog.at_level(logging.INFO):
    model = infer.load(str(both))
  assert model.has_mlm_head and not model.missing
  assert not [r for r in caplog.records if "not used" in r.getMessage()], caplog.text
