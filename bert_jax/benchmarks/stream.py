r"""Streaming (bert_jax.data.stream) vs in-memory training input from the same TFRecords.

  python -m bert_jax.benchmarks.stream                      # built-in corpus
  python -m bert_jax.benchmarks.stream --text_glob='../shared/data/wikitext-2-raw/*.raw'

Preprocesses the corpus into --num_shards record files (once, under --workdir), then for the
in-memory path (stream_window_docs=0) and each window size in --windows prints: seconds to
the first batch, rows/s after it and over the whole run (runs interleaved, --repeats each,
the best kept: the machine is shared), the peak of numpy/Python memory (tracemalloc) while
taking --batches batches, and the most documents held. The in-memory path builds a whole
epoch's rows before its first batch, so its rate after the first batch leaves instance
building out until the next epoch: take --batches past one epoch for a fair average. Then the time to the first batch of
a resume at --resume_batch, with the row-count index and after deleting it (counting by
reading).
"""

from __future__ import annotations

import argparse
import itertools
import os
import pathlib
import shutil
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads with the data modules below

from bert_jax.configs import common  # noqa: E402
from bert_jax.data import pipeline  # noqa: E402
from bert_jax.data import preprocess  # noqa: E402
from bert_jax.data import tokenizers  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(args, workdir):
  c = common.data_config(max_seq_length=args.length,
                         max_predictions_per_seq=round(args.length * 0.15 + 0.5))
  c.tokenizer.vocab_size = args.vocab_size
  c.tokenizer.train_sentences = 50_000
  c.cache_dir = str(workdir / "cache")
  if args.text_glob:
    c.update(source="text", text_glob=args.text_glob, text_format=args.text_format)
  return c


def _run(c, tok, args, start_batch=0, n=None, trace=False):
  stats: dict = {}
  if trace:
    tracemalloc.start()
  t0 = time.perf_counter()
  it = pipeline.train_iterator(c, tok, batch_size=args.batch_size, start_batch=start_batch,
                               stats=stats)
  next(it)
  first = time.perf_counter() - t0
  n = args.batches if n is None else n
  t1 = time.perf_counter()
  for _ in itertools.islice(it, n - 1):
    pass
  t2 = time.perf_counter()
  rate = (n - 1) / max(t2 - t1, 1e-9)
  peak = tracemalloc.get_traced_memory()[1] if trace else 0
  tracemalloc.stop()
  it.close()
  return first, rate, n * args.batch_size / (t2 - t0), peak, stats


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default=str(ROOT / "runs" / "bench_stream"))
  p.add_argument("--text_glob", default="")
  p.add_argument("--text_format", default="document_per_line")
  p.add_argument("--num_shards", type=int, default=8)
  p.add_argument("--length", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--batches", type=int, default=60)
  p.add_argument("--windows", default="1000,10000")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--resume_batch", type=int, default=200)
  p.add_argument("--vocab_size", type=int, default=8000)
  args = p.parse_args(argv)

  workdir = pathlib.Path(args.workdir)
  c = _config(args, workdir)
  tok = tokenizers.build_or_load(c, str(workdir), process_index=0)
  records = workdir / "records" / "docs"
  if not (workdir / "records" / "docs.json").exists():
    summary = preprocess.run(c, tok, str(records), num_shards=args.num_shards)
    print(f"preprocessed {summary['documents']:,} documents, {summary['tokens']:,} tokens")
  c.update(source="tfrecord", tfrecord_glob=f"{records}-*")

  variants = [0] + [int(w) for w in args.windows.split(",")]
  best: dict = {}
  for _ in range(args.repeats):
    for w in variants:
      c.stream_window_docs = w
      shutil.rmtree(workdir / "cache" / "stream_index", ignore_errors=True)
      first, rate, overall, _, stats = _run(c, tok, args)
      old = best.get(w, (first, rate, overall))
      best[w] = (min(first, old[0]), max(rate, old[1]), max(overall, old[2]),
                 stats.get("stream_max_window_docs", stats.get("documents", 0)),
                 stats.get("rows", 0))
  peaks = {}
  for w in variants:  # separately: tracing every allocation slows the runs down
    c.stream_window_docs = w
    peaks[w] = _run(c, tok, args, n=min(args.batches, 100), trace=True)[3]

  print(f"\nbatch {args.batch_size} x length {args.length}, {os.cpu_count()} CPU cores, corpus: "
        f"{args.text_glob or 'builtin'}, {args.num_shards} record files, best of "
        f"{args.repeats}, load average {os.getloadavg()[0]:.1f}\n")
  print(f"| input | first batch (s) | rows/s after it | rows/s over {args.batches} batches | "
        "numpy+Python peak (MB), 100 batches | documents held | rows built |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for w in variants:
    first, rate, overall, docs, built = best[w]
    peak = peaks[w]
    name = "in memory (stream_window_docs=0)" if w == 0 else f"stream, window {w:,}"
    print(f"| {name} | {first:.2f} | {rate * args.batch_size:,.0f} | {overall:,.0f} | "
          f"{peak / 2**20:.0f} | {docs:,} | {built:,} |")

  w = int(args.windows.split(",")[0])
  c.stream_window_docs = w
  rb = args.resume_batch
  print(f"\nresume at batch {rb:,} (window {w:,}): time to the first batch")
  _run(c, tok, args, n=rb + 2)  # writes the index past the resume point
  t_index, _, _, _, st_index = _run(c, tok, args, start_batch=rb, n=1)
  shutil.rmtree(workdir / "cache" / "stream_index", ignore_errors=True)
  t_count, _, _, _, st_count = _run(c, tok, args, start_batch=rb, n=1)
  print(f"  with the row-count index: {t_index:.2f} s "
        f"({st_index['stream_windows_skipped_by_index']} windows skipped unread, "
        f"{st_index['stream_documents_read']:,} documents read)")
  print(f"  without (counting):       {t_count:.2f} s "
        f"({st_count['stream_documents_read']:,} documents read)")


if __name__ == "__main__":
  main()
