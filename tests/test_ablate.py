"""The ablation runner (bert_jax.tools.ablate): planning, validation, plan mismatch, aggregation; and
(slow) a 2x2 sweep at tiny size that is killed with SIGKILL mid-sweep, restarted, and ends with
the results of an uninterrupted sweep.

The fast tests run no training: they plan from the real config files and aggregate hand-written
results in the layout the runs write (pretrain/p<j>/ablate_eval.json, cells/c<i>/<task>/
results.json as bert_jax.finetune writes it).
"""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import conftest  # noqa: F401  # 8 fake CPU devices (inherited by the sweep's subprocesses)
import numpy as np
import pytest

from bert_jax.tools import ablate

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/bert.py:tiny,runlocal"


def plan_of(grid=(), zipped=(), sets=(), finetune=("sst2=data/SST-2",), config=TINY, seeds=3,
            fixed_eval="token:0.15"):
  return ablate.make_plan(config=config, grid=list(grid), zipped=list(zipped), sets=list(sets),
                          finetune=list(finetune), finetune_config="configs/finetune.py", seeds=seeds,
                          fixed_eval=fixed_eval)


# ---------------------------------------------------------------------------------------------
# Planning and validation.
# ---------------------------------------------------------------------------------------------
def test_cross_product_and_shared_pretraining():
  plan = plan_of(grid=["data.mask_rate=0.15,0.3", "data.masking=token,span",
                       "finetune.optimizer.learning_rate=1e-4,3e-4"],
                 sets=["data.max_predictions_per_seq=20", "finetune.epochs=2"])
  cells = plan["cells"]
  assert len(cells) == 8 and len(plan["pretrains"]) == 4  # the fine-tuning axis shares pretrainings
  assert [c["axes"] for c in cells[:2]] == [
      {"data.mask_rate": "0.15", "data.masking": "token", "finetune.optimizer.learning_rate": "1e-4"},
      {"data.mask_rate": "0.15", "data.masking": "token", "finetune.optimizer.learning_rate": "3e-4"}]
  assert cells[0]["pretrain"] == cells[1]["pretrain"] != cells[2]["pretrain"]
  assert plan["pretrains"][cells[7]["pretrain"]]["overrides"] == {
      "data.max_predictions_per_seq": "20", "data.mask_rate": "0.3", "data.masking": "span"}
  pre = ablate.pretrain_command(plan, "sweep", cells[7]["pretrain"])
  assert pre[1:4] == ["-m", "bert_jax.main", f"--config={TINY}"]
  assert "--config.data.mask_rate=0.3" in pre and "--config.data.masking=span" in pre
  assert f"--workdir={os.path.join('sweep', 'pretrain', 'p4')}" in pre
  ft = ablate.finetune_command(plan, "sweep", 7, plan["finetune"][0])
  assert "--config=configs/finetune.py:task=sst2" in ft
  assert f"--config.init.workdir={os.path.join('sweep', 'pretrain', 'p4')}" in ft
  for arg in ("--config.finetune.seeds=3", "--config.optimizer.learning_rate=3e-4", "--config.finetune.epochs=2",
              "--config.finetune.source=tsv", "--config.finetune.data_dir=data/SST-2"):
    assert arg in ft, arg
  assert not any("mask_rate" in a for a in ft)


def test_zip_pairs_values_and_config_axis():
  plan = plan_of(zipped=["data.mask_rate=0.15,0.3", "data.max_predictions_per_seq=10,20"],
                 grid=["config=configs/bert.py:tiny,runlocal;configs/electra.py:small,runlocal"])
  axes = [c["axes"] for c in plan["cells"]]
  assert len(axes) == 4 and len(plan["pretrains"]) == 4
  assert {(a["data.mask_rate"], a["data.max_predictions_per_seq"]) for a in axes} == {("0.15", "10"), ("0.3", "20")}
  assert {p["config"] for p in plan["pretrains"]} == {"configs/bert.py:tiny,runlocal",
                                                      "configs/electra.py:small,runlocal"}
  assert ablate.pretrain_command(plan, "w", 3)[3].startswith("--config=configs/electra.py:small")


@pytest.mark.parametrize("kwargs,match", [
    (dict(grid=["data.mask_rat=0.15,0.3"]), "'data.mask_rat'"),
    (dict(grid=["data.mask_rate=0.15,abc"]), "'data.mask_rate'.*'abc'"),
    (dict(sets=["train.num_steps=1.5"]), "'train.num_steps'.*'1.5'"),
    (dict(sets=["data.pack_examples=maybe"]), "'data.pack_examples'"),
    (dict(grid=["finetune.optimizer.lr=1e-4,2e-4"]), "'finetune.optimizer.lr'"),
    (dict(grid=["data.mask_rate=0.15,1.5"]), "config.data.mask_rate"),
    (dict(grid=["data.masking=token,spam"]), "config.data.masking"),
    (dict(fixed_eval="tokn:0.15"), "config.data.eval_masking='tokn'"),
    (dict(grid=["data.mask_rate=0.15,0.6"]), "data.max_predictions_per_seq"),
    (dict(zipped=["data.mask_rate=0.1,0.15", "data.masking=token"]), "--zip"),
    (dict(grid=["data.masking=token,span"], sets=["data.masking=span"]), "also a grid axis"),
    (dict(finetune=["nosuchtask=x"]), "nosuchtask"),
    (dict(sets=["finetune.init.workdir=x"]), "runner sets it"),
    (dict(grid=["config=configs/bert.py:tiny;configs/nosuch.py:x"]), "nosuch.py"),
])
def test_bad_input_fails_before_anything_runs_naming_the_key(kwargs, match):
  with pytest.raises(ValueError, match=match):
    plan_of(**kwargs)


def test_a_different_plan_in_the_same_workdir_is_refused(tmp_path):
  plan = plan_of(grid=["data.mask_rate=0.1,0.15"])
  ablate.write_plan(plan, str(tmp_path))
  written = (tmp_path / ablate.PLAN_FILE).read_text()
  ablate.write_plan(plan_of(grid=["data.mask_rate=0.1,0.15"]), str(tmp_path))  # the same plan: fine
  with pytest.raises(ValueError, match=r"different sweep \(plan.json differs in: cells, grid"):
    ablate.write_plan(plan_of(grid=["data.mask_rate=0.1,0.12"]), str(tmp_path))
  with pytest.raises(ValueError, match="differs in: seeds"):
    ablate.write_plan(plan_of(grid=["data.mask_rate=0.1,0.15"], seeds=5), str(tmp_path))
  assert (tmp_path / ablate.PLAN_FILE).read_text() == written


def test_print_jobs_one_command_per_pretraining():
  plan = plan_of(grid=["data.mask_rate=0.1,0.15", "finetune.optimizer.learning_rate=1e-4,3e-4"])
  argv = [f"--config={TINY}", "--workdir=gs://bucket/sweep", "--grid=data.mask_rate=0.1,0.15",
          "--grid=finetune.optimizer.learning_rate=1e-4,3e-4", "--print_jobs"]
  jobs = ablate.print_jobs(plan, argv)
  assert len(jobs) == 2
  assert jobs[0].endswith("--cells=1,2") and jobs[1].endswith("--cells=3,4")
  assert all("--workdir=gs://bucket/sweep" in j and "--print_jobs" not in j for j in jobs)


# ---------------------------------------------------------------------------------------------
# Aggregation: results.csv, results.md, plots.
# ---------------------------------------------------------------------------------------------
def fake_results(plan, workdir, rng):
  """Writes every pretraining's eval and every fine-tune's results.json; returns the accuracies
  by (cell, seed) and the fixed-masking MLM accuracy by pretraining."""
  acc, mlm = {}, {}
  for j, _ in enumerate(plan["pretrains"]):
    mlm[j] = float(rng.uniform(0.1, 0.5))
    out = {"step": 100, "own": {"mlm_accuracy": mlm[j] + 0.1, "mlm_loss": 3.0},
           "fixed": {"mlm_accuracy": mlm[j], "mlm_loss": 4.0 - mlm[j], "nsp_accuracy": 0.9},
           "other": {"mlm_accuracy": mlm[j], "sop_accuracy": 0.5 + j / 100}}
    d = pathlib.Path(ablate.pretrain_dir(workdir, j))
    d.mkdir(parents=True)
    (d / ablate.EVAL_FILE).write_text(json.dumps(out))
  for i, _ in enumerate(plan["cells"]):
    seeds = []
    for k in range(plan["seeds"]):
      acc[i, k] = float(rng.uniform(0.5, 0.9))
      seeds.append({"best_step": 10 + k, "eval": {"validation": {"accuracy": acc[i, k], "loss": 0.5}}})
    d = pathlib.Path(ablate.finetune_dir(workdir, i, "sst2"))
    d.mkdir(parents=True)
    (d / ablate.RESULTS_FILE).write_text(json.dumps({"seeds": seeds, "median": {}}))
  return acc, mlm


def test_aggregate_csv_md_and_plots(tmp_path):
  plan = plan_of(grid=["data.mask_rate=0.1,0.15", "data.masking=token,span"], seeds=3)
  wd = str(tmp_path)
  acc, mlm = fake_results(plan, wd, np.random.default_rng(0))
  out = ablate.aggregate(plan, wd)
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 * 3  # cell x task x seed
  assert list(rows[0])[:8] == ["cell", "pretraining", "data.mask_rate", "data.masking", "task", "seed",
                               "best_step", "validation/accuracy"]
  for r in rows:
    i, k = int(r["cell"]) - 1, int(r["seed"])
    assert float(r["validation/accuracy"]) == pytest.approx(acc[i, k], rel=1e-5)
    assert float(r["pretrain_fixed/mlm_accuracy"]) == pytest.approx(mlm[plan["cells"][i]["pretrain"]], rel=1e-5)
    assert float(r["pretrain_own/mlm_accuracy"]) == pytest.approx(mlm[plan["cells"][i]["pretrain"]] + 0.1, rel=1e-5)
  # results.md: the median over seeds per cell, the best cell of each column in bold.
  med = {i: np.median([acc[i, k] for k in range(3)]) for i in range(4)}
  table = [line for line in out["markdown"].splitlines() if line.startswith("| ") and line[2].isdigit()]
  assert len(table) == 4
  best_ft, best_mlm = max(med, key=med.get), max(mlm, key=mlm.get)
  for i, line in enumerate(table):
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3].strip("*") == f"{med[i]:.4f}"
    assert cells[3].startswith("**") == (i == best_ft)
    assert cells[4].startswith("**") == (plan["cells"][i]["pretrain"] == best_mlm)
  assert "sst2 accuracy" in out["markdown"] and "pretrain mlm_accuracy @ token 0.15" in out["markdown"]
  # The sentence task a cell was not trained on (here SOP for an NSP model): its own column.
  header = [c.strip() for c in out["markdown"].split("\n| cell")[1].split("\n")[0].strip("|").split("|")]
  assert header[-2:] == ["pretrain nsp_accuracy @ token 0.15", "sop_accuracy untrained task"]
  assert [float(line.strip("|").split("|")[-1].strip(" *")) for line in table] == [
      0.5 + plan["cells"][i]["pretrain"] / 100 for i in range(4)]
  assert all(float(r["pretrain_other/sop_accuracy"]) == 0.5 + (int(r["pretraining"]) - 1) / 100 for r in rows)
  # Plots: each summary column against the numeric axis (data.masking is not numeric).
  names = sorted(os.path.basename(p) for p in out["plots"])
  assert names == ["pretrain_fixed_mlm_accuracy_vs_data.mask_rate.png", "pretrain_fixed_mlm_loss_vs_data.mask_rate.png",
                   "pretrain_fixed_nsp_accuracy_vs_data.mask_rate.png",
                   "pretrain_other_sop_accuracy_vs_data.mask_rate.png",
                   "sst2_validation_accuracy_vs_data.mask_rate.png"]  # data.masking is not numeric
  assert all((tmp_path / "plots" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
  # A cell whose fine-tune is missing (run elsewhere, not collected yet) is reported, not guessed.
  os.remove(ablate.finetune_dir(wd, 2, "sst2") + "/" + ablate.RESULTS_FILE)
  out = ablate.aggregate(plan, wd)
  assert len(out["rows"]) == 9 and "cell 3 sst2" in out["markdown"]


# ---------------------------------------------------------------------------------------------
# Slow: a 2x2 sweep at tiny size, killed mid-sweep and restarted, equals an uninterrupted one.
# ---------------------------------------------------------------------------------------------
def write_data(directory: pathlib.Path):
  """A corpus of keyword sentences and an SST-2-like task decided by the keyword."""
  from test_finetune import keyword_sentence, write_sst2  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  with open(directory / "corpus.txt", "w") as f:
    for _ in range(200):
      f.write("".join(keyword_sentence(rng, int(rng.integers(0, 2))) + " .\n" for _ in range(5)) + "\n")
  return write_sst2(directory / "sst2", n_train=64, n_dev=32)[0]


def sweep_args(data: pathlib.Path, sst2: str):
  tiny = dict(model=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=160, max_position_embeddings=32),
              data={"max_seq_length": 32, "max_predictions_per_seq": 10, "source": "text",
                    "text_glob": str(data / "corpus.txt"), "tokenizer.vocab_size": 128,
                    "cache_dir": str(data / "cache")},
              train=dict(batch_size=8, num_steps=20), checkpoint=dict(every_steps=10),
              eval=dict(every_steps=20, num_batches=2), log=dict(every_steps=10), optimizer=dict(warmup_steps=2))
  sets = [f"--set={s}.{k}={v}" for s, kv in tiny.items() for k, v in kv.items()]
  sets += [f"--set=finetune.{k}={v}" for k, v in {"train.batch_size": 16, "epochs": 1, "data.max_seq_length": 32,
                                                  "eval.batch_size": 16}.items()]
  return [f"--config={TINY}", "--grid=data.mask_rate=0.15,0.3", "--grid=finetune.optimizer.learning_rate=1e-3,3e-3",
          f"--finetune=sst2={sst2}", "--seeds=2", *sets]


def sweep(workdir, args, env):
  return subprocess.Popen([sys.executable, "-m", "bert_jax.tools.ablate", f"--workdir={workdir}", *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def procs():
  """Sweeps started by a test; killed at its end if still running (a failed assert)."""
  started = []
  yield started
  for p in started:
    if p.poll() is None:
      p.kill()
      p.communicate()


@pytest.mark.proof  # about 6 minutes: too long for CI's budget (README has its last result)
def test_sweep_killed_and_restarted_equals_uninterrupted(tmp_path, procs):
  sst2 = write_data(tmp_path)
  args = sweep_args(tmp_path, sst2)
  # One compilation cache for both sweeps: the second compiles nothing (results are unchanged).
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache")}
  ref = sweep(tmp_path / "ref", args, env)
  procs.append(ref)
  out = ref.communicate()[0]
  assert ref.returncode == 0, out
  assert "[ablate] cell 4/4 data.mask_rate=0.3 finetune.optimizer.learning_rate=3e-3 | done" in out

  # Killed (SIGKILL, no chance to save) while the second pretraining runs, after its step-10
  # checkpoint: cells 1 and 2 (first pretraining) are finished by then.
  wd = tmp_path / "killed"
  p2 = wd / "pretrain" / "p2"
  proc = sweep(wd, args, env)
  procs.append(proc)
  deadline = time.time() + 900
  while not (p2 / "checkpoints" / "10").exists():
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert not (p2 / ablate.EVAL_FILE).exists() and not (wd / "results.csv").exists()
  time.sleep(1.0)  # the runner's child dies with it (PR_SET_PDEATHSIG): nothing writes any more
  steps = sorted(os.listdir(p2 / "checkpoints"))
  time.sleep(2.0)
  assert sorted(os.listdir(p2 / "checkpoints")) == steps

  again = sweep(wd, args, env)
  procs.append(again)
  out = again.communicate()[0]
  assert again.returncode == 0, out
  assert "cell 1/4" in out and "cell 1/4 data.mask_rate=0.15 finetune.optimizer.learning_rate=1e-3 | fine-tuning" \
      not in out  # finished cells are skipped
  logs = wd / "logs"
  assert (logs / "c1_sst2.log").read_text().count("$ ") == 1  # cell 1 fine-tuned once
  assert "Resumed from step 10" in (logs / "p2_pretrain.log").read_text()  # the killed one resumed

  # Same results as the uninterrupted sweep (results.md differs only in the command line).
  assert (wd / "results.csv").read_text() == (tmp_path / "ref" / "results.csv").read_text()
  table = lambda p: [l for l in p.read_text().splitlines() if l.startswith("|")]  # noqa: E731,E741
  assert table(wd / "results.md") == table(tmp_path / "ref" / "results.md")
  with open(wd / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 * 2 and {r["pretraining"] for r in rows} == {"1", "2"}
  # The fixed eval masks 15% of tokens in both pretrainings; the own eval follows each cell's rate.
  assert all(r["pretrain_fixed/mlm_loss"] and r["pretrain_own/mlm_loss"] for r in rows)
  # An NSP model is also scored on SOP pairs (the sentence task it was not trained on).
  assert all(0.0 <= float(r["pretrain_other/sop_accuracy"]) <= 1.0 and r["pretrain_fixed/nsp_accuracy"] for r in rows)
  assert sorted(os.listdir(wd / "plots"))
  same = {r["pretrain_own/mlm_loss"] == r["pretrain_fixed/mlm_loss"] for r in rows if r["data.mask_rate"] == "0.15"}
  assert same == {True}
  assert {r["pretrain_own/mlm_loss"] == r["pretrain_fixed/mlm_loss"] for r in rows
          if r["data.mask_rate"] == "0.3"} == {False}
