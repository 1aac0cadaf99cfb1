r"""Input pipeline throughput after tokenization, vs HF DataCollatorForLanguageModeling.

  python -m bert_jax.benchmarks.data_pipeline            # builtin corpus, lengths 128 and 512
  python -m bert_jax.benchmarks.data_pipeline --text_glob='../shared/data/wikitext-2-raw/*.raw'

Ours ("bert_jax"): rows from the tokenized corpus (instance building, shuffling, batching)
+ masking in TF + numpy output, i.e. everything after tokenization, timed over several
epochs' worth of batches (instance building of new epochs included). --runs lists the
instance kind and masking of each row (default: RoBERTa-style full_sentences with token
masking, the headline, then BERT's nsp with token, whole_word and span masking).
"bert_jax ... serial" adds up the two stages' time per row, each timed alone (TF's kernels
may use every core): `instances.build_rows` for a whole epoch (shuffled order) and the
masking function on pieces of `pipeline.default_chunk_rows` rows, i.e. what the row and
masking code cost without the stream around them (tf.data, copies, batching).
HF: DataCollatorForLanguageModeling (mlm_probability 0.15, 80/10/10, PyTorch) called on
the same rows' token ids as lists (its usual input): it pads, builds the special-token
mask and masks, nothing else. "HF core" calls torch_mask_tokens on an already padded
tensor with a precomputed special-token mask (the collator's vectorized core alone).
transformers is a test/benchmark dependency only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import pathlib
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads with the data modules below

from bert_jax.configs import common  # noqa: E402
from bert_jax.data import instances as inst_lib  # noqa: E402
from bert_jax.data import masking  # noqa: E402
from bert_jax.data import pipeline  # noqa: E402
from bert_jax.data import tokenizers  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(args, length: int, strategy: str, instances: str = "nsp"):
  c = common.data_config(max_seq_length=length, max_predictions_per_seq=round(length * 0.15 + 0.5),
                         masking=strategy, instances=instances)
  c.tokenizer.vocab_size = args.vocab_size
  c.tokenizer.train_sentences = 50_000
  if args.text_glob:
    c.update(source="text", text_glob=args.text_glob, text_format=args.text_format)
  return c


def _rate(it, batch_size, seconds, warmup=3):
  for _ in range(warmup):
    next(it)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    next(it)
    n += 1
  return n * batch_size / (time.perf_counter() - t0)


def _best_seconds(fn, repeats=3):
  fn()  # warm up (tracing, compilation)
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def _stage_us(corpus, c, tok, length, strategies, batch_size):
  """Time per row (us) of build_rows for one epoch and of masking per strategy."""
  order = np.random.default_rng(0).permutation
  build = lambda: inst_lib.build_rows(
      corpus, kind=c.instances, max_seq_length=length, short_seq_prob=c.short_seq_prob,
      pack=False, specials=inst_lib.Specials(tok.cls_id, tok.sep_id, tok.pad_id), seed=0,
      epoch=0, row_order=order)
  rows = build()
  out = {"rows": 1e6 * _best_seconds(build) / len(rows["input_ids"])}
  for strategy in strategies:
    c.masking = strategy
    spec = masking.spec_from_config(c, tok)
    n = min(pipeline.default_chunk_rows(batch_size, length, strategy), len(rows["input_ids"]))
    piece, keys = pipeline.mask_inputs({k: rows[k][:n] for k in ("input_ids", "input_mask")},
                                       masking.example_keys(0, 0, np.arange(n)))
    fn = pipeline.mask_fn(spec, length)  # the pipeline's own
    out[strategy] = 1e6 * _best_seconds(lambda: fn(piece, keys)["input_ids"].numpy()) / n
  return out


def _hf(tok, rows, batch_size, seconds):
  import torch  # pylint: disable=g-import-not-at-top
  import tokenizers as hf_tokenizers  # pylint: disable=g-import-not-at-top
  from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  vocab = {tok.sp.id_to_piece(i): i for i in range(tok.vocab_size)}
  core = hf_tokenizers.Tokenizer(hf_tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  hf_tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
  collator = DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
  lists = [r[m > 0].tolist() for r, m in zip(rows["input_ids"], rows["input_mask"])]
  batches = [lists[i:i + batch_size] for i in range(0, len(lists) - batch_size + 1, batch_size)]

  def loop(fn):
    for b in batches[:2]:
      fn(b)
    n, t0 = 0, time.perf_counter()
    for b in itertools.cycle(batches):
      fn(b)
      n += 1
      if time.perf_counter() - t0 > seconds:
        break
    return n * batch_size / (time.perf_counter() - t0)

  padded = [(torch.tensor(rows["input_ids"][i:i + batch_size], dtype=torch.long),
             torch.tensor(np.isin(rows["input_ids"][i:i + batch_size], tok.special_ids)))
            for i in range(0, len(lists) - batch_size + 1, batch_size)]

  def core(_):
    x, special = next(it)
    return collator.torch_mask_tokens(x.clone(), special)

  # torch's intra-op threading is sometimes far slower on a busy 2-core machine (seen:
  # 20x at length 512), so HF gets the better of 1 and all threads.
  best = (0.0, 0.0, 0)
  for threads in sorted({1, torch.get_num_threads()}):
    torch.set_num_threads(threads)
    it = itertools.cycle(padded)
    collate, core_rate = loop(collator), loop(core)
    if collate > best[0]:
      best = (collate, core_rate, threads)
  return best


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default=str(ROOT / "runs" / "bench_data"))
  p.add_argument("--text_glob", default="")
  p.add_argument("--text_format", default="document_per_line")
  p.add_argument("--runs", default="full_sentences:token,nsp:token,nsp:whole_word,nsp:span",
                 help="comma separated instances:masking pairs")
  p.add_argument("--lengths", default="128,512")
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--vocab_size", type=int, default=8000)
  p.add_argument("--seconds", type=float, default=8.0)
  args = p.parse_args(argv)

  runs = [tuple(r.split(":")) for r in args.runs.split(",")]
  kinds = list(dict.fromkeys(k for k, _ in runs))
  results = []  # (length, instance kind, name, sequences/s)
  for length in (int(x) for x in args.lengths.split(",")):
    base = _config(args, length, "token")
    tok = tokenizers.build_or_load(base, args.workdir, process_index=0)
    corpus = pipeline.load_corpus(base, tok, "train", 0, 1)  # tokenize (cached) before timing
    for kind in kinds:
      strategies = [m for k, m in runs if k == kind]
      # The stages alone, before this kind's streams run in this process.
      us = _stage_us(corpus, _config(args, length, "token", kind), tok, length, strategies,
                     args.batch_size)
      print(f"L={length} {kind} stages (us/row): " +
            ", ".join(f"{k} {v:.1f}" for k, v in us.items()), flush=True)
      for strategy in strategies:
        c = _config(args, length, strategy, kind)
        it = pipeline.train_iterator(c, tok, batch_size=args.batch_size)
        rate = _rate(it, args.batch_size, args.seconds)
        it.close()
        results.append((length, kind, f"bert_jax {kind} + {strategy}", rate))
        print(f"L={length} {kind} + {strategy}: {rate:,.0f} seq/s", flush=True)
      for strategy in strategies:
        results.append((length, kind, f"bert_jax {kind} + {strategy}, serial (rows "
                        f"{us['rows']:.1f} + masking {us[strategy]:.1f} us/row)",
                        1e6 / (us["rows"] + us[strategy])))
      # HF masks the token ids of the same kind of rows, measured right after ours.
      rows = inst_lib.build_rows(corpus, kind=kind, max_seq_length=length,
                                 short_seq_prob=base.short_seq_prob, pack=False,
                                 specials=inst_lib.Specials(tok.cls_id, tok.sep_id, tok.pad_id),
                                 seed=0, epoch=0)
      collate, core, threads = _hf(tok, rows, args.batch_size, args.seconds)
      results.append((length, kind, f"HF DataCollatorForLanguageModeling on {kind} rows "
                      f"(lists of ids, {threads} torch thread(s))", collate))
      results.append((length, kind, f"HF torch_mask_tokens only on {kind} rows (padded tensor "
                      "+ special mask)", core))
      print(f"L={length} HF collator on {kind} rows: {collate:,.0f} seq/s, core: {core:,.0f} "
            f"seq/s ({threads} torch threads)", flush=True)

  print(f"\nbatch {args.batch_size}, {os.cpu_count()} CPU cores, "
        f"corpus: {args.text_glob or 'builtin'}, load average {os.getloadavg()[0]:.1f}\n")
  print("| length | pipeline | sequences/s | vs HF collator (same rows) |")
  print("|---:|---|---:|---:|")
  for length, kind, name, rate in results:
    ref = next(r for l, k, n, r in results
               if l == length and k == kind and n.startswith("HF DataCollator"))
    print(f"| {length} | {name} | {rate:,.0f} | {rate / ref:.1f}x |")

if __name__ == "__main__":
  main()
