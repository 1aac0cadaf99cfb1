r"""Fine-tuning side by side: bert_jax (full, LoRA, adapters) and HF PyTorch on the same data.

  python -m bert_jax.benchmarks.finetune_vs_hf --hf_dir=../shared/weights/all-MiniLM-L6-v2 \
      --data_dir=../shared/data/glue/SST-2 --train_examples=2400 --epochs=2 --seeds=3

Both sides start from the same HF checkpoint, see a fixed random subset of train.tsv
(--train_examples, the same subset for every run), in the same batch order per seed
(bert_jax.tasks.finetuning.epoch_batches), with the same hyperparameters: AdamW (weight decay 0.01 off
biases and LayerNorms, eps 1e-6), the same warmup + linear decay, gradient clipping 1.0,
dropout 0.1, evaluated on the full dev set after every epoch, best epoch reported. Ours runs
through `bert_jax.finetune.run` (configs/finetune.py:sst2, +lora, +adapters); HF's is
transformers' BertForSequenceClassification trained by a plain PyTorch loop. Prints dev
accuracy per seed, the medians and the trainable-parameter share; writes summary.json.
torch and transformers are test/benchmark dependencies only.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import numpy as np

from bert_jax import finetune
from bert_jax import models
from bert_jax import optim
from bert_jax import train
from bert_jax.configs import finetune as finetune_configs
from bert_jax.tasks import classification
from bert_jax.tasks import finetuning

ROOT = pathlib.Path(__file__).resolve().parents[2]


def make_config(args, method: str):
  arg = "sst2" + ("" if method == "full" else f",{method}")
  c = finetune_configs.get_config(arg)
  c.init.hf_checkpoint = args.hf_dir
  c.finetune.update(data_dir=args.data_dir, train_examples=args.train_examples, epochs=float(args.epochs),
                    seeds=args.seeds)
  c.data.max_seq_length = args.max_seq_length
  c.train.batch_size = args.batch_size
  if method == "lora":
    c.model.lora_targets = args.lora_targets
  lr = {"full": args.lr, "lora": args.lora_lr, "adapters": args.adapters_lr}[method]
  if lr:
    c.optimizer.learning_rate = lr
  return c


def run_ours(args, method: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  config = make_config(args, method)
  results = finetune.run(config, os.path.join(args.workdir, method))
  s, _ = train.setup_cached(finetune.prepare(config))
  params = s.abstract["params"]
  mask = s.task.trainable(params)
  total = models.param_count(params)
  trainable = total if mask is None else sum(
      int(np.prod(x.shape)) for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)
  accs = [r["eval"]["validation"]["accuracy"] for r in results["seeds"]]
  return {"method": method, "accuracy": accs, "median": float(np.median(accs)), "trainable": trainable,
          "total": total, "learning_rate": config.optimizer.learning_rate, "num_steps": results["num_steps"]}


def run_hf(args) -> dict:
  """HF BertForSequenceClassification, plain PyTorch loop, the same batches and schedule."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(max(1, os.cpu_count() or 1))
  config = finetune.prepare(make_config(args, "full"))
  train_feats = classification.load_split(config, "train")
  dev = classification.load_split(config, "validation")
  n_steps, per_epoch = config.train.num_steps, config.eval.every_steps
  lr_fn = optim.schedule(config.optimizer, n_steps)
  oc = config.optimizer
  accs = []
  for k in range(args.seeds):
    torch.manual_seed(config.seed + k)
    model = transformers.BertForSequenceClassification.from_pretrained(args.hf_dir, num_labels=2)
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n  # noqa: E731
    groups = [{"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": oc.weight_decay},
              {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=oc.learning_rate, betas=(oc.b1, oc.b2), eps=oc.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: float(lr_fn(t)) / oc.learning_rate)
    batches = finetuning.epoch_batches(train_feats, config.train.batch_size, 0, config.data.seed + k)
    best = 0.0
    for step in range(1, n_steps + 1):
      model.train()
      b = next(batches)
      out = model(input_ids=torch.as_tensor(b["input_ids"], dtype=torch.long),
                  attention_mask=torch.as_tensor(b["input_mask"], dtype=torch.long),
                  token_type_ids=torch.as_tensor(b["token_type_ids"], dtype=torch.long),
                  labels=torch.as_tensor(b["label"], dtype=torch.long))
      out.loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), oc.clip_grad_norm)
      opt.step()
      sched.step()
      opt.zero_grad()
      if step % per_epoch == 0 or step == n_steps:
        acc = hf_accuracy(model, dev, torch)
        best = max(best, acc)
        print(f"HF seed {k}: step {step}/{n_steps} loss {float(out.loss):.4f} dev accuracy {acc:.4f}", flush=True)
    accs.append(best)
  return {"method": "hf_pytorch_full", "accuracy": accs, "median": float(np.median(accs)),
          "learning_rate": oc.learning_rate, "num_steps": n_steps}


def hf_accuracy(model, feats, torch) -> float:
  model.eval()
  correct = 0
  with torch.no_grad():
    for i in range(0, len(feats["label"]), 128):
      sl = slice(i, i + 128)
      logits = model(input_ids=torch.as_tensor(feats["input_ids"][sl], dtype=torch.long),
                     attention_mask=torch.as_tensor(feats["input_mask"][sl], dtype=torch.long),
                     token_type_ids=torch.as_tensor(feats["token_type_ids"][sl], dtype=torch.long)).logits
      correct += int((logits.argmax(-1).numpy() == feats["label"][sl]).sum())
  return correct / len(feats["label"])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--hf_dir", default=str(ROOT.parent / "shared" / "weights" / "all-MiniLM-L6-v2"))
  p.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "glue" / "SST-2"))
  p.add_argument("--workdir", default="runs/finetune_vs_hf")
  p.add_argument("--train_examples", type=int, default=2400)
  p.add_argument("--epochs", type=float, default=2.0)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--max_seq_length", type=int, default=48)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--lr", type=float, default=1e-4,
                 help="full fine-tuning lr (0: the recipe's 2e-5, which moves a 6 x 384 model little in 100s of steps)")
  p.add_argument("--lora_lr", type=float, default=2e-3, help="LoRA lr (0: the recipe's 5e-4)")
  p.add_argument("--lora_targets", default="query,value", help="config.model.lora_targets")
  p.add_argument("--adapters_lr", type=float, default=0.0, help="adapters lr (0: the recipe's 1e-3)")
  p.add_argument("--methods", default="full,lora,adapters", help="ours: any of full, lora, adapters")
  p.add_argument("--skip_hf", action="store_true")
  args = p.parse_args(argv)
  rows = [run_ours(args, m) for m in args.methods.split(",") if m]
  if not args.skip_hf:
    rows.append(run_hf(args))
  print(f"\nSST-2 dev accuracy (872 examples), {args.train_examples} train examples, {args.epochs:g} epochs, "
        f"length {args.max_seq_length}, batch {args.batch_size}, best epoch, {args.seeds} seeds")
  print("| run | lr | trainable params | dev accuracy per seed | median |")
  print("|---|---:|---:|---|---:|")
  for r in rows:
    share = f"{r['trainable'] / 1e6:.3f}M ({100 * r['trainable'] / r['total']:.2f}%)" if "trainable" in r else "all"
    print(f"| {r['method']} | {r['learning_rate']:g} | {share} | {', '.join(f'{a:.4f}' for a in r['accuracy'])} | "
          f"{r['median']:.4f} |")
  by = {r["method"]: r["median"] for r in rows}
  if "full" in by and "hf_pytorch_full" in by:
    print(f"ours full - HF full: {100 * (by['full'] - by['hf_pytorch_full']):+.2f} points")
  for m in ("lora", "adapters"):
    if m in by and "full" in by:
      print(f"{m} - full: {100 * (by[m] - by['full']):+.2f} points")
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "summary.json"), "w") as f:
    json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
