r"""Streams a corpus once into sharded TFRecords of tokenized documents.

  python -m bert_jax.data.preprocess --config=configs/bert.py:base \
      --workdir=gs://bucket/bert_base --output=gs://bucket/data/wiki \
      --num_shards=256 --num_workers=16 \
      --config.data.source=tfds --config.data.tfds_name=wikipedia/20230601.en

Then train with --config.data.source=tfrecord --config.data.tfrecord_glob='gs://bucket/data/wiki-*'.

One record per document (tf.train.Example): `tokens` (all sentences, flat), `sentence_lengths`,
`word_starts` (0/1 per token) and `doc_index` (position in the source stream). Sentences are
split and tokenized in `num_workers` processes; at most `max_pending` chunks of documents are
in flight, so memory stays bounded whatever the corpus size (the reference scripts hold the
whole corpus in RAM). Document i goes to shard i % num_shards; the output depends only on the
source order and the tokenizer (no randomness). A sidecar <output>.json records the tokenizer
fingerprint, counts and skip statistics; training refuses records made with another tokenizer.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
from typing import Iterator

import numpy as np
import tensorflow as tf

from bert_jax.data import corpora
from bert_jax.data import instances as inst_lib
from bert_jax.data import tokenizers
from bert_jax import configs

_TOKENIZER = None


def _init_worker(path: str, kind: str, lower_case: bool, segmenter: str = "") -> None:
  global _TOKENIZER
  _TOKENIZER = tokenizers.load(path, kind, lower_case, segmenter)


def _encode_chunk(docs) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
  stats: dict = {}
  corpus = inst_lib.tokenize_documents(docs, _TOKENIZER, stats)
  stats.pop("documents", None)
  out = []
  for i in range(corpus.num_docs):
    s0, s1 = corpus.doc_offsets[i], corpus.doc_offsets[i + 1]
    o0, o1 = corpus.sent_offsets[s0], corpus.sent_offsets[s1]
    out.append((corpus.tokens[o0:o1], np.diff(corpus.sent_offsets[s0:s1 + 1])))
  return out, stats


def _example(tokens: np.ndarray, sentence_lengths: np.ndarray, word_starts: np.ndarray,
             doc_index: int) -> bytes:
  i64 = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))
  return tf.train.Example(features=tf.train.Features(feature={
      "tokens": i64(tokens), "sentence_lengths": i64(sentence_lengths),
      "word_starts": i64(word_starts.astype(np.int64)), "doc_index": i64([doc_index]),
  })).SerializeToString()


def _chunks(docs: Iterator[list[str]], size: int):
  chunk = []
  for d in docs:
    chunk.append(d)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def run(data_config, tokenizer, output: str, num_shards: int = 16, num_workers: int = 0,
        chunk_docs: int = 256, max_pending: int = 0) -> dict:
  """Writes <output>-XXXXX-of-NNNNN TFRecords and <output>.json; returns the summary."""
  if num_shards < 1:
    raise ValueError(f"--num_shards={num_shards} must be >= 1.")
  if data_config.source == "tfrecord":
    raise ValueError("config.data.source='tfrecord' is already preprocessed; pick builtin, "
                     "text or tfds.")
  num_workers = num_workers or max(1, (os.cpu_count() or 2) - 1)
  max_pending = max_pending or 2 * num_workers
  out_dir = os.path.dirname(output)
  if out_dir:
    tf.io.gfile.makedirs(out_dir)
  writers = [tf.io.TFRecordWriter(f"{output}-{i:05d}-of-{num_shards:05d}")
             for i in range(num_shards)]
  source_stats: dict = {}
  stats: collections.Counter = collections.Counter()
  n_docs = n_tokens = 0
  docs = corpora.source_documents(data_config, data_config.tfds_split, source_stats)
  ctx = multiprocessing.get_context("spawn")  # TF state must not be forked
  with ctx.Pool(num_workers, _init_worker,
                (tokenizer.path, tokenizer.kind, tokenizer.lower_case, tokenizer.segmenter)) as pool:
    pending: collections.deque = collections.deque()

    def write_oldest():
      nonlocal n_docs, n_tokens
      docs, s = pending.popleft().get()
      stats.update(s)
      for tokens, sent_lens in docs:
        # doc_index counts kept documents in source order: independent of chunking.
        writers[n_docs % num_shards].write(
            _example(tokens, sent_lens, tokenizer.word_starts(tokens), n_docs))
        n_docs += 1
        n_tokens += len(tokens)

    for chunk in _chunks(docs, chunk_docs):
      pending.append(pool.apply_async(_encode_chunk, (chunk,)))
      if len(pending) >= max_pending:  # bounded memory: wait for the oldest chunk
        write_oldest()
    while pending:
      write_oldest()
  for w in writers:
    w.close()
  summary = dict(documents=n_docs, tokens=n_tokens, num_shards=num_shards,
                 tokenizer=dict(path=str(tokenizer.path), kind=tokenizer.kind,
                                fingerprint=tokenizer.fingerprint(),
                                vocab_size=tokenizer.vocab_size),
                 stats={**source_stats, **dict(stats)})
  with tf.io.gfile.GFile(output + ".json", "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def _parse(record: bytes):
  f = tf.train.Example.FromString(record).features.feature
  return (np.asarray(f["tokens"].int64_list.value, np.int32),
          np.asarray(f["sentence_lengths"].int64_list.value, np.int64),
          int(f["doc_index"].int64_list.value[0]))


def record_files(glob: str, tokenizer=None) -> list[str]:
  """The sorted record files of `glob` (sidecar .json excluded); refuses a missing glob, no
  match, or records whose sidecar names another tokenizer."""
  if not glob:
    raise ValueError("config.data.source='tfrecord' needs config.data.tfrecord_glob.")
  files = sorted(f for f in tf.io.gfile.glob(glob) if not f.endswith(".json"))
  if not files:
    raise ValueError(f"config.data.tfrecord_glob={glob!r} matches no files.")
  if tokenizer is not None:
    for meta in sorted({f.rsplit("-", 3)[0] + ".json" for f in files}):
      if tf.io.gfile.exists(meta):
        with tf.io.gfile.GFile(meta) as f:
          fp = json.load(f)["tokenizer"]["fingerprint"]
        if fp not in (tokenizer.fingerprint(), tokenizer.file_fingerprint()):  # file's: older records
          raise ValueError(f"{meta}: records were tokenized with another tokenizer "
                           f"({fp} != {tokenizer.fingerprint()}); set config.data.tokenizer.path "
                           "to the one used for preprocessing.")
  return files


def read_corpus(glob: str, stats: dict, tokenizer=None, process_index: int = 0,
                process_count: int = 1) -> tuple[inst_lib.TokenizedCorpus, bool]:
  """Reads preprocessed records. With at least process_count files each host reads only
  files[process_index::process_count] (returns True: already host-sharded)."""
  files = record_files(glob, tokenizer)
  sharded = len(files) >= process_count > 1
  if sharded:
    files = files[process_index::process_count]
  toks, sent_lens, doc_lens, ids = [], [], [], []
  for rec in tf.data.TFRecordDataset(files).as_numpy_iterator():
    t, s, d = _parse(rec)
    toks.append(t)
    sent_lens.append(s)
    doc_lens.append(len(s))
    ids.append(d)
  stats["documents"] = len(ids)
  order = np.argsort(np.asarray(ids, np.int64), kind="stable")  # source order
  toks = [toks[i] for i in order]
  sent_lens = [sent_lens[i] for i in order]
  doc_lens = np.asarray(doc_lens, np.int64)[order]
  sl = np.concatenate(sent_lens) if sent_lens else np.zeros([0], np.int64)
  corpus = inst_lib.TokenizedCorpus(
      tokens=np.concatenate(toks) if toks else np.zeros([0], np.int32),
      sent_offsets=np.concatenate([[0], np.cumsum(sl)]).astype(np.int64),
      doc_offsets=np.concatenate([[0], np.cumsum(doc_lens)]).astype(np.int64),
      doc_ids=np.asarray(ids, np.int64)[order])
  return corpus, sharded


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  tok = tokenizers.build_or_load(config.data, flags.FLAGS.workdir, process_index=0)
  summary = run(config.data, tok, flags.FLAGS.output, flags.FLAGS.num_shards,
                flags.FLAGS.num_workers)
  print(json.dumps(summary, indent=2))


def cli() -> None:
  """Console entry point `bert-jax-preprocess` (flags are defined here, not at import, so the
  worker processes that import this module define none)."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  configs.define_flag("config", "configs/<family>.py:<arg> or a packaged <family>.py:<arg>")
  flags.DEFINE_string("workdir", None, "where the tokenizer is trained or found")
  flags.DEFINE_string("output", None, "output prefix (local or gs://)")
  flags.DEFINE_integer("num_shards", 16, "TFRecord shards")
  flags.DEFINE_integer("num_workers", 0, "tokenizer processes (0: cores - 1)")
  flags.mark_flags_as_required(["config", "workdir", "output"])
  app.run(main)


if __name__ == "__main__":
  cli()
