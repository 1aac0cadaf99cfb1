r"""Chinese whole-word masking end to end: a tiny BERT pretrained on ChnSentiCorp reviews with
jieba words masked whole, then fine-tuned on ChnSentiCorp sentiment.

  python -m bert_jax.benchmarks.chinese_wwm --data_dir=../shared/data/chinese/ChnSentiCorp \
      --pretrain_steps=600 --train_examples=2000 --epochs=3 --lr=1e-3

1. Pretraining (configs/bert.py:tiny,runlocal: 2 x 128): the review texts of train.tsv (one
   document per line) are the corpus; a sentencepiece model is trained on them with CJK
   characters one by one (config.data.tokenizer.split_cjk), jieba marks the words
   (config.data.tokenizer.word_segmenter=jieba) and config.data.masking=whole_word masks them
   whole (full_sentences instances, no sentence loss).
2. Fine-tuning (configs/finetune.py:task=tsv) on a fixed subset of train.tsv from that workdir,
   and from random init with the same architecture and tokenizer; dev accuracy of the best epoch.
Prints the figures; writes <workdir>/summary.json.

With --checkpoint=<HF directory> (bert-base-chinese, hfl/chinese-roberta-wwm-ext, ERNIE 1.0) step 1
continues that checkpoint instead (config.init.hf_checkpoint: its architecture and vocab.txt, jieba
words for the masking), and step 2's second arm fine-tunes the checkpoint as it is. Without a
released checkpoint at hand, --standin_vocab=<its vocab.txt> writes a stand-in first: a randomly
initialised BERT of bert.py:tiny's shape (2 x 128) with that vocabulary, saved as an HF directory
by bert_jax.interop.hf (the path and the vocabulary are the real ones, the weights are not).

  python -m bert_jax.benchmarks.chinese_wwm --data_dir=path/to/ChnSentiCorp --workdir=runs/zh_standin \
      --standin_vocab=path/to/bert-base-chinese/vocab.txt --pretrain_steps=600 --train_examples=4000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

from bert_jax import finetune
from bert_jax import models
from bert_jax import train
from bert_jax.configs import bert
from bert_jax.configs import finetune as finetune_configs
from bert_jax.interop import hf

ROOT = pathlib.Path(__file__).resolve().parents[2]


def corpus_file(data_dir: str, workdir: str) -> str:
  """The review texts of train.tsv (label column dropped), one document per line."""
  out = os.path.join(workdir, "corpus", "chnsenticorp_train.txt")
  if not os.path.exists(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(os.path.join(data_dir, "train.tsv"), encoding="utf-8") as f:
      texts = [line.rsplit("\t", 1)[0].strip() for line in f if line.strip()]
    with open(out + ".tmp", "w", encoding="utf-8") as f:
      f.write("\n".join(t for t in texts if t) + "\n")
    os.replace(out + ".tmp", out)
  return out


def standin_checkpoint(vocab_file: str, out_dir: str, seed: int = 0) -> str:
  """A randomly initialised BERT of bert.py:tiny's shape with the vocabulary of `vocab_file`, as an
  HF directory (config.json, model.safetensors with the MLM and NSP heads, vocab.txt)."""
  import jax  # pylint: disable=g-import-not-at-top
  with open(vocab_file, encoding="utf-8") as f:
    pieces = f.read().rstrip("\n").split("\n")  # not splitlines: \x85 and kin are pieces
  c = bert.get_config("tiny,runlocal").model
  c.vocab_size = len(pieces)
  cfg = models.validate(c)
  params = models.init_params(models.build(cfg), jax.random.PRNGKey(seed), models.dummy_batch(cfg))
  hf.export_hf(cfg, params, out_dir)
  with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(pieces) + "\n")
  return out_dir


def pretrain_config(args, corpus: str):
  c = bert.get_config("tiny,runlocal")
  c.data.update(source="text", text_glob=corpus, text_format="document_per_line", instances="full_sentences",
                masking=args.masking, max_seq_length=args.max_seq_length)
  c.data.tokenizer.word_segmenter = "jieba"
  if args.checkpoint:  # architecture and vocab.txt from the checkpoint (Pretraining.configure)
    c.init.hf_checkpoint = args.checkpoint
  else:
    c.data.tokenizer.update(split_cjk=True, vocab_size=args.vocab_size)
    c.model.vocab_size = args.vocab_size
  c.objective.sentence_loss = "none"
  c.model.max_position_embeddings = max(c.model.max_position_embeddings, args.max_seq_length)
  c.train.num_steps = args.pretrain_steps
  c.optimizer.warmup_steps = max(1, args.pretrain_steps // 10)
  c.checkpoint.every_steps = c.eval.every_steps = args.pretrain_steps
  return c


def finetune_config(args, pretrain_dir: str, random_init: bool):
  """From `pretrain_dir`; the second arm: random init of its shape, or the checkpoint as it is."""
  c = finetune_configs.get_config("task=tsv")
  if random_init and args.checkpoint:
    c.init.hf_checkpoint = args.checkpoint
  else:
    c.init.workdir = pretrain_dir
  c.finetune.update(data_dir=args.data_dir, train_examples=args.train_examples, epochs=float(args.epochs),
                    seeds=args.seeds, random_init=random_init and not args.checkpoint)
  c.data.max_seq_length = args.max_seq_length
  c.optimizer.learning_rate = args.lr
  return c


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "chinese" / "ChnSentiCorp"))
  p.add_argument("--workdir", default="runs/chinese_wwm")
  p.add_argument("--masking", default="whole_word", help="config.data.masking of the pretraining")
  p.add_argument("--pretrain_steps", type=int, default=600)
  p.add_argument("--vocab_size", type=int, default=4000)
  p.add_argument("--max_seq_length", type=int, default=64)
  p.add_argument("--train_examples", type=int, default=2000)
  p.add_argument("--epochs", type=float, default=3.0)
  p.add_argument("--seeds", type=int, default=1)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--checkpoint", default="", help="an HF directory to continue instead of pretraining from scratch")
  p.add_argument("--standin_vocab", default="", help="a vocab.txt: write a stand-in checkpoint with it and continue it")
  args = p.parse_args(argv)
  import numpy as np  # pylint: disable=g-import-not-at-top
  if args.standin_vocab:
    args.checkpoint = os.path.join(args.workdir, "standin_checkpoint")
    if not os.path.exists(os.path.join(args.checkpoint, "model.safetensors")):
      standin_checkpoint(args.standin_vocab, args.checkpoint)
  corpus = corpus_file(args.data_dir, args.workdir)
  pre_dir = os.path.join(args.workdir, "pretrain")
  pre = train.train_and_evaluate(pretrain_config(args, corpus), pre_dir)
  pre_eval = os.path.join(args.workdir, "pretrain_eval.json")
  if pre["eval"]:
    with open(pre_eval, "w") as f:
      json.dump(pre["eval"], f)
  else:  # the pretraining had finished before (a re-run): its last eval
    with open(pre_eval) as f:
      pre["eval"] = json.load(f)
  rows = {}
  for name, random_init in (("pretrained", False), ("random_init", True)):
    res = finetune.run(finetune_config(args, pre_dir, random_init), os.path.join(args.workdir, name))
    accs = [r["eval"]["validation"]["accuracy"] for r in res["seeds"]]
    rows[name] = {"accuracy": float(np.median(accs)), "seeds": accs, "num_steps": res["num_steps"]}
  with open(os.path.join(args.data_dir, "dev.tsv"), encoding="utf-8") as f:
    labels = [line.rstrip("\n").rsplit("\t", 1)[-1] for line in f if line.strip()]
  majority = max(labels.count(x) for x in set(labels)) / len(labels)
  out = {"args": vars(args),
         "pretrain": {"masking": args.masking, "steps": pre["step"], "mlm_accuracy": pre["eval"]["mlm_accuracy"],
                      "most_frequent_token_accuracy": pre["eval"]["most_frequent_token_accuracy"]},
         "finetune": rows["pretrained"], "random_init": rows["random_init"], "majority": majority}
  what = f"continued pretraining of {args.checkpoint}" if args.checkpoint else "pretraining (2 x 128)"
  second = "the checkpoint as it is" if args.checkpoint else "random init"
  print(f"\nChinese {args.masking} {what}, {args.pretrain_steps} steps, jieba words, ChnSentiCorp train texts: "
        f"eval MLM accuracy {out['pretrain']['mlm_accuracy']:.4f} (most frequent token "
        f"{out['pretrain']['most_frequent_token_accuracy']:.4f})")
  print(f"ChnSentiCorp dev accuracy ({len(labels)} reviews, {args.train_examples} train examples, "
        f"{args.epochs:g} epochs, length {args.max_seq_length}): pretrained {rows['pretrained']['accuracy']:.4f}, "
        f"{second} {rows['random_init']['accuracy']:.4f}, majority class {majority:.4f}")
  with open(os.path.join(args.workdir, "summary.json"), "w") as f:
    json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main()
