r"""Golden figures of every family and task, for refactors that must keep behaviour.

  python tests/golden.py OUT_DIR [JOB ...] > golden.txt   # before a change; again after, then diff

Each job runs the real command line (python -m bert_jax.main) on tiny settings: 3 train steps
logged one by one and an eval, in a fresh process. The console lines are printed with their
timings removed (rate, tokens/s, ETA, start-up seconds), so two runs of the same code print
the same text; fine-tuning jobs also print their results.json minus paths. Jobs: pretraining
BERT / ALBERT / ELECTRA (synthetic batches), BERT on the built-in corpus (the real input
pipeline), classification, regression, LoRA, SQuAD, token classification, task distillation
and MLM distillation. The data and starting points are written by the tests' own helpers.
"""

import glob
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's bert_jax, also for a second worktree

import conftest  # noqa: E402,F401  # the tests' XLA flags, inherited by the subprocesses

TINY = ["--config.model.hidden_size=32", "--config.model.num_hidden_layers=1",
        "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64"]
STEPS = ["--config.train.num_steps=3", "--config.log.every_steps=1", "--config.eval.every_steps=3",
         "--config.checkpoint.every_steps=3", "--config.eval.num_batches=2", "--config.optimizer.warmup_steps=1",
         "--config.train.batch_size=8", "--config.train.halt_after_steps=0"]
PRE = TINY + STEPS + ["--config.model.vocab_size=128", "--config.model.max_position_embeddings=16",
                      "--config.data.max_seq_length=16", "--config.data.max_predictions_per_seq=4",
                      "--config.data.source=synthetic"]
FT = ["--config.data.max_seq_length=16", "--config.train.batch_size=16", "--config.eval.batch_size=16",
      "--config.optimizer.learning_rate=5e-3", "--config.checkpoint.async_save=False",
      "--config.log.every_steps=1", "--config.finetune.epochs=0.5"]
_TIMING = [re.compile(p) for p in (r" \| [\d.]+ steps/s", r" \| [\d,]+ tok/s", r" \| MFU [\d.]+%", r" \| ETA \S+",
                                   r"First step done .*", r"Warm start: .*? from ")]


def _clean(text: str, root: str) -> list[str]:
  out = []
  for line in text.splitlines():
    for pat in _TIMING:
      line = pat.sub("", line)
    line = line.replace(root, "<root>")
    if line.strip() and not line.startswith(("WARNING", "I0", "W0", "E0")) and "Warning" not in line:
      out.append(line)
  return out


def _params_digest(ckpt_dir: str) -> str:
  """sha1 of the newest checkpoint's params (every leaf's path, dtype and bytes): bit-identity."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  steps = [int(p) for p in os.listdir(ckpt_dir) if p.isdigit()]
  if not steps:
    return "no checkpoint"
  state = ocp.PyTreeCheckpointer().restore(os.path.join(ckpt_dir, str(max(steps)), "state"))
  h = hashlib.sha1()
  for path, leaf in jax.tree_util.tree_flatten_with_path(state["params"])[0]:
    a = np.asarray(leaf)
    h.update(jax.tree_util.keystr(path).encode() + str(a.dtype).encode() + a.tobytes())
  return f"step {max(steps)} sha1 {h.hexdigest()[:16]}"


def _run(name: str, root: str, args: list[str]) -> None:
  if _ONLY and name not in _ONLY:
    return
  workdir = os.path.join(root, "runs", name)
  cmd = [sys.executable, "-m", "bert_jax.main", f"--workdir={workdir}"] + args
  p = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE))
  print(f"=== {name} (exit {p.returncode})")
  for line in _clean(p.stdout, root):
    print("  " + line)
  if p.returncode:
    print("  stderr tail: " + " | ".join(p.stderr.strip().splitlines()[-3:]))
  for ckpt in sorted(glob.glob(os.path.join(workdir, "**", "checkpoints"), recursive=True)):
    print(f"  params {os.path.relpath(ckpt, workdir)}: {_params_digest(ckpt)}")
  results = os.path.join(workdir, "results.json")
  if os.path.exists(results):
    r = json.load(open(results))
    r.pop("start", None)
    for s in r.get("seeds", []):
      s.pop("predictions", None)
      s.pop("test_predictions", None)
    print("  results " + json.dumps(r, sort_keys=True))
  sys.stdout.flush()


def main(root: str) -> None:
  import transformers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from test_finetune import make_hf_dir, write_sst2, write_stsb  # pylint: disable=g-import-not-at-top
  from test_finetune_qa_tagging import write_conll, write_squad  # pylint: disable=g-import-not-at-top
  root = os.path.abspath(root)
  d = lambda *p: os.path.join(root, *p)  # noqa: E731
  hf = make_hf_dir(d("hf"))
  teacher = make_hf_dir(d("teacher"), num_labels=2, num_hidden_layers=2)
  write_sst2(d("sst2"))
  write_stsb(d("stsb"))
  write_conll(d("conll"))
  write_squad(d("squad"))
  torch.manual_seed(0)
  cfg = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=16, initializer_range=0.5)
  transformers.BertForPreTraining(cfg).save_pretrained(d("mlm_teacher"))

  _run("bert", root, ["--config=configs/bert.py:tiny,runlocal"] + PRE)
  _run("albert", root, ["--config=configs/albert.py:base,runlocal", "--config.model.embedding_size=16"] + PRE)
  _run("electra", root, ["--config=configs/electra.py:small,runlocal", "--config.model.embedding_size=16",
                         "--config.model.generator_hidden_size=0.5"] + PRE)
  _run("bert_corpus", root, ["--config=configs/bert.py:tiny,runlocal"] + TINY + STEPS)
  _run("mlm_distill", root, ["--config=configs/bert.py:tiny,runlocal", f"--config.distill.teacher={d('mlm_teacher')}",
                             "--config.distill.alpha=1.0", "--config.distill.temperature=2.0",
                             "--config.distill.student_layers=1", "--config.distill.hidden_weight=1.0"] + PRE)
  ft = lambda task, data, *extra: [f"--config=configs/finetune.py:{task}", f"--config.init.hf_checkpoint={hf}",  # noqa: E731
                                   f"--config.finetune.data_dir={data}"] + FT + list(extra)
  _run("sst2", root, ft("sst2", d("sst2")))
  _run("stsb", root, ft("stsb", d("stsb")))
  _run("sst2_lora", root, ft("sst2,lora", d("sst2")))
  _run("squad", root, ft("squad", d("squad"), "--config.finetune.epochs=1.0", "--config.data.max_seq_length=24",
                        "--config.finetune.squad.doc_stride=6", "--config.finetune.squad.max_query_length=6",
                        "--config.finetune.squad.max_answer_length=4", "--config.finetune.squad.n_best_size=5"))
  _run("conll", root, ft("conll", d("conll"), "--config.finetune.epochs=0.2"))
  _run("distill", root, [f"--config=configs/finetune.py:sst2,distill", f"--config.init.hf_checkpoint={teacher}",
                         f"--config.distill.teacher={teacher}", "--config.distill.student_layers=1",
                         f"--config.finetune.data_dir={d('sst2')}", "--config.distill.hidden_weight=1.0"] + FT)


_ONLY: tuple[str, ...] = ()

if __name__ == "__main__":
  _ONLY = tuple(sys.argv[2:])  # job names to run (default: all)
  main(sys.argv[1])
