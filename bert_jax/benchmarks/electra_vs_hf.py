r"""ELECTRA's discriminator at `runlocal` scale: ours next to HF's, and what the data allows.

  python -m bert_jax.benchmarks.electra_vs_hf                  # 300 steps, lr 1e-3, 2 heads
  python -m bert_jax.benchmarks.electra_vs_hf --heads 8 --lr 3e-3 --batch_size 128
  python -m bert_jax.benchmarks.electra_vs_hf --steps 6000 --every 500 --skip_hf   # the plateau's end

Replaced-token detection alone, on the built-in corpus with the electra.py:small,runlocal
model (2 x 128, no dropout, init std 0.02 unless --init_std): the masked positions of each batch get replacements drawn from
the batch's own masked tokens (their unigram distribution, so a token's identity says nothing
and only context can tell). Our discriminator (JAX, optax AdamW) and HF's
ElectraForPreTraining (PyTorch, torch AdamW), started from the same weights (our init exported
with bert_jax.interop.hf), train on the same batches with the same schedule; the script prints
both losses, eval ROC AUCs and our eval accuracy (threshold 0.5) next to the all-real baseline
(`--skip_hf` trains ours only, for long runs). Then the AUC of a bigram count model (add-k smoothed, trained on
the train split's tokens) on the same eval batches: how much the context tells.
torch and transformers are test/benchmark dependencies only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import pathlib
import tempfile

import numpy as np

from bert_jax import models
from bert_jax.configs import electra
from bert_jax.interop import hf

ROOT = pathlib.Path(__file__).resolve().parents[2]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC AUC by ranks (ties share their mean rank)."""
  order = np.argsort(scores, kind="stable")
  ranks = np.empty(len(scores))
  s = scores[order]
  i = 0
  while i < len(s):  # mean rank over tied runs
    j = i
    while j + 1 < len(s) and s[j + 1] == s[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2 + 1
    i = j + 1
  pos = labels > 0
  n_pos, n_neg = pos.sum(), (~pos).sum()
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def replace_unigram(batch: dict, rng: np.random.Generator) -> dict:
  """Masked positions get tokens drawn from the batch's masked originals; labels 1 where changed."""
  pos, orig_ids, w = batch["masked_lm_positions"], batch["masked_lm_ids"], batch["masked_lm_weights"]
  r, p = np.nonzero(w > 0)
  original = batch["input_ids"].copy()
  original[r, pos[r, p]] = orig_ids[r, p]
  fake = original.copy()
  fake[r, pos[r, p]] = orig_ids[r, p][rng.integers(0, len(r), len(r))]
  return dict(input_ids=fake, input_mask=batch["input_mask"], token_type_ids=batch["token_type_ids"],
              labels=(fake != original).astype(np.float32))


def bigram_auc(train_tokens: np.ndarray, batches: list[dict], vocab: int, k: float = 0.1) -> float:
  """Score log p(x_i)/p(x_i | x_{i-1}) + log p(x_{i+1})/p(x_{i+1} | x_i) from counts."""
  t = train_tokens.astype(np.int64)
  uni = np.bincount(t, minlength=vocab) + 1.0
  uni /= uni.sum()
  pairs = {}
  keys, counts = np.unique(t[:-1] * vocab + t[1:], return_counts=True)
  pairs = dict(zip(keys.tolist(), counts.tolist()))
  row = np.bincount(t[:-1], minlength=vocab).astype(np.float64)

  def logp(a, b):
    c = np.array([pairs.get(int(x), 0) for x in a * vocab + b], np.float64)
    return np.log((c + k * vocab * uni[b]) / (row[a] + k * vocab))

  scores, labels = [], []
  for b in batches:
    for ids, m, y in zip(b["input_ids"], b["input_mask"], b["labels"]):
      x = ids[:int(m.sum())].astype(np.int64)
      i = np.arange(1, len(x) - 1)
      scores.append(np.log(uni[x[i]]) - logp(x[i - 1], x[i]) + np.log(uni[x[i + 1]]) - logp(x[i], x[i + 1]))
      labels.append(y[i])
  return auc(np.concatenate(scores), np.concatenate(labels))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default=str(ROOT / "runs" / "bench_electra"))
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--heads", type=int, default=2)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--every", type=int, default=100)
  p.add_argument("--init_std", type=float, default=0.02,
                 help="initializer_range (README's figures use the recipe's 0.02; runlocal has 0.1)")
  p.add_argument("--skip_hf", action="store_true", help="train ours only (long runs)")
  args = p.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax.data import pipeline, tokenizers  # pylint: disable=g-import-not-at-top,g-multiple-import

  c = electra.get_config("small,runlocal")
  c.model.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_attention_heads=args.heads,
                 initializer_range=args.init_std)
  tok = tokenizers.build_or_load(c.data, args.workdir, process_index=0)
  rng = np.random.default_rng(0)
  train = [replace_unigram(b, rng) for b in itertools.islice(
      pipeline.train_iterator(c.data, tok, batch_size=args.batch_size), args.steps)]
  evals = [replace_unigram(b, rng) for b in pipeline.eval_iterator(c.data, tok, batch_size=32, num_batches=10)]
  eval_mask = np.concatenate([b["input_mask"].ravel() for b in evals]) > 0
  eval_labels = np.concatenate([b["labels"].ravel() for b in evals])[eval_mask]

  model = models.build(c.model)
  L, P = c.data.max_seq_length, c.data.max_predictions_per_seq
  params = models.init_params(model, jax.random.PRNGKey(0), models.dummy_batch(c.model, 2, L, P))
  warm = max(1, args.steps // 10)
  sched = optax.join_schedules([optax.linear_schedule(0.0, args.lr, warm),
                                optax.linear_schedule(args.lr, 0.0, args.steps - warm)], [warm])
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, eps=1e-6, weight_decay=0.0))
  opt = tx.init(params)
  keys = ("input_ids", "input_mask", "token_type_ids")

  def logits(prm, b):
    return model.apply({"params": prm}, *(b[k] for k in keys), method=model.discriminator)

  def loss_fn(prm, b):
    z, y, m = logits(prm, b), b["labels"], b["input_mask"]
    bce = jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    return jnp.sum(m * bce) / jnp.sum(m)

  @jax.jit
  def step(prm, o, b):
    loss, g = jax.value_and_grad(loss_fn)(prm, b)
    u, o = tx.update(g, o, prm)
    return optax.apply_updates(prm, u), o, loss

  ours_logits = jax.jit(logits)
  if not args.skip_hf:  # HF starts from our init, exported
    hf_dir = tempfile.mkdtemp()
    hf.export_hf(c.model, params, hf_dir)
    theirs = transformers.ElectraForPreTraining.from_pretrained(hf_dir, attn_implementation="eager")
    t_opt = torch.optim.AdamW(theirs.parameters(), lr=args.lr, eps=1e-6, weight_decay=0.0)
    t_sched = torch.optim.lr_scheduler.LambdaLR(t_opt, lambda s: float(sched(s)) / args.lr)

  def torch_in(b):
    return dict(input_ids=torch.as_tensor(b["input_ids"]).long(),
                attention_mask=torch.as_tensor(b["input_mask"]).long(),
                token_type_ids=torch.as_tensor(b["token_type_ids"]).long())

  def eval_ours():
    """(AUC, accuracy at logit 0) of ours on the eval batches."""
    ours = np.concatenate([np.asarray(ours_logits(params, b)).ravel() for b in evals])[eval_mask]
    return auc(ours, eval_labels), float(np.mean((ours > 0) == (eval_labels > 0)))

  def eval_hf():
    theirs.eval()
    with torch.no_grad():
      hf_scores = np.concatenate([theirs(**torch_in(b)).logits.numpy().ravel() for b in evals])
    theirs.train()
    return auc(hf_scores[eval_mask], eval_labels)

  print(f"discriminator only, unigram replacements; {args.steps} steps of {args.batch_size} x {L}, "
        f"lr {args.lr}, {args.heads} heads; all-real baseline accuracy {1 - eval_labels.mean():.4f}")
  print("| step | loss ours | loss HF | eval AUC ours | eval AUC HF | eval accuracy ours |\n"
        "|---:|---:|---:|---:|---:|---:|")
  for i, b in enumerate(train):
    params, opt, loss = step(params, opt, b)
    if not args.skip_hf:
      m = torch.as_tensor(b["input_mask"]).float()
      bce = torch.nn.functional.binary_cross_entropy_with_logits(
          theirs(**torch_in(b)).logits, torch.as_tensor(b["labels"]), reduction="none")
      t_loss = (bce * m).sum() / m.sum()
      t_opt.zero_grad()
      t_loss.backward()
      torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
      t_opt.step()
      t_sched.step()
    if (i + 1) % args.every == 0 or i + 1 == len(train):
      a_ours, acc = eval_ours()
      hf_loss, hf_auc = ("-", "-") if args.skip_hf else (f"{t_loss.item():.4f}", f"{eval_hf():.3f}")
      print(f"| {i + 1} | {float(loss):.4f} | {hf_loss} | {a_ours:.3f} | {hf_auc} | {acc:.4f} |", flush=True)
  corpus = pipeline.load_corpus(c.data, tok, "train", 0, 1)
  print(f"bigram count model on the same eval batches: AUC {bigram_auc(corpus.tokens, evals, tok.vocab_size):.3f}")


if __name__ == "__main__":
  main()
