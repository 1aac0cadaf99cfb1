r"""Task distillation on SST-2: a 2-layer student of a fine-tuned MiniLM, with and without the teacher.

  python -m bert_jax.benchmarks.distill_sst2 --teacher=runs/finetune_vs_hf/full/seed_0 \
      --train_examples=1000 --epochs=2 --max_seq_length=32 --lr=1e-3 --seeds=3 --temperatures=4,1

The teacher is a fine-tuned all-MiniLM-L6-v2 (6 x 384): a bert_jax fine-tuning seed directory
(--teacher), or, when --teacher is empty, one fine-tuned here first (bert_jax.finetune.run, the
same subset, lr 1e-4, into <workdir>/teacher). Every student has 2 layers initialised from
every 3rd layer of the pretrained MiniLM (layers 0 and 3, as DistilBERT takes every other
layer), sees the same fixed subset of train.tsv in the same batch order per seed, and is
evaluated on the full dev set after every epoch (best epoch per seed, median of the seeds):
  labels     the student fine-tuned on the labels alone (config.distill.alpha=0; no teacher)
  T=<t>      alpha * t^2 * KL(teacher || student at t) + (1 - alpha) * label loss
All runs go through `bert_jax.finetune.run` (configs/finetune.py:sst2,distill). Prints the
table; writes <workdir>/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import numpy as np

from bert_jax import finetune
from bert_jax.configs import finetune as finetune_configs

ROOT = pathlib.Path(__file__).resolve().parents[2]


def make_config(args, *, alpha: float, temperature: float, teacher: str, student: bool = True):
  c = finetune_configs.get_config("sst2,distill" if student else "sst2")
  c.init.hf_checkpoint = args.hf_dir
  c.finetune.update(data_dir=args.data_dir, train_examples=args.train_examples, epochs=float(args.epochs),
                    seeds=args.seeds if student else 1)
  c.data.max_seq_length = args.max_seq_length
  c.train.batch_size = args.batch_size
  c.optimizer.learning_rate = args.lr
  if student:
    c.distill.update(teacher=teacher, alpha=alpha, temperature=temperature, student_layers=args.student_layers)
  return c


def teacher_dir(args) -> str:
  """--teacher, or a MiniLM fine-tuned here on the same subset (<workdir>/teacher/seed_0)."""
  if args.teacher:
    return args.teacher
  config = make_config(args, alpha=0.0, temperature=1.0, teacher="", student=False)
  config.finetune.epochs = 2.0
  finetune.run(config, os.path.join(args.workdir, "teacher"))
  return os.path.join(args.workdir, "teacher", "seed_0")


def run(args, name: str, **kw) -> dict:
  results = finetune.run(make_config(args, **kw), os.path.join(args.workdir, name))
  accs = [r["eval"]["validation"]["accuracy"] for r in results["seeds"]]
  return {"run": name, "alpha": kw["alpha"], "temperature": kw["temperature"], "accuracy": accs,
          "median": float(np.median(accs)), "num_steps": results["num_steps"]}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--hf_dir", default=str(ROOT.parent / "shared" / "weights" / "all-MiniLM-L6-v2"))
  p.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "glue" / "SST-2"))
  p.add_argument("--teacher", default="", help="a fine-tuning seed dir; empty: fine-tune MiniLM here first")
  p.add_argument("--workdir", default="runs/distill_sst2")
  p.add_argument("--train_examples", type=int, default=1000)
  p.add_argument("--epochs", type=float, default=2.0)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--max_seq_length", type=int, default=32)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--lr", type=float, default=1e-3, help="a 2-layer student barely moves at 1e-4 in 100 steps")
  p.add_argument("--student_layers", type=int, default=2)
  p.add_argument("--alpha", type=float, default=0.5)
  p.add_argument("--temperatures", default="4,1", help="comma-separated T of the distilled runs, run in this order")
  args = p.parse_args(argv)
  teacher = teacher_dir(args)
  rows = [run(args, "labels", alpha=0.0, temperature=1.0, teacher="")]
  for t in (float(x) for x in args.temperatures.split(",") if x):
    rows.append(run(args, f"T={t:g}", alpha=args.alpha, temperature=t, teacher=teacher))
  teacher_acc = None
  results = os.path.join(os.path.dirname(os.path.normpath(teacher)), "results.json")
  if os.path.exists(results):
    with open(results) as f:
      seed = int(os.path.basename(os.path.normpath(teacher)).rsplit("_", 1)[-1])
      teacher_acc = json.load(f)["seeds"][seed]["eval"]["validation"]["accuracy"]
  print(f"\nSST-2 dev accuracy (872 examples): {args.student_layers}-layer student of MiniLM (every 3rd layer), "
        f"{args.train_examples} train examples, {args.epochs:g} epochs, length {args.max_seq_length}, "
        f"lr {args.lr:g}, alpha {args.alpha:g}, best epoch, {args.seeds} seeds; teacher {teacher}"
        + (f" (dev accuracy {teacher_acc:.4f})" if teacher_acc is not None else ""))
  print("| student | dev accuracy per seed | median |")
  print("|---|---|---:|")
  for r in rows:
    print(f"| {r['run']} | {', '.join(f'{a:.4f}' for a in r['accuracy'])} | {r['median']:.4f} |")
  base = rows[0]["median"]
  for r in rows[1:]:
    print(f"{r['run']} - labels only: {100 * (r['median'] - base):+.2f} points")
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "summary.json"), "w") as f:
    json.dump({"args": vars(args), "teacher": teacher, "teacher_accuracy": teacher_acc, "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
