"""Bounded-memory row stream over preprocessed TFRecords (config.data.source='tfrecord').

The in-memory path (bert_jax.data.pipeline.load_corpus) holds a host's whole tokenized share.
This module reads the records with tf.data instead and holds at most
`config.data.stream_window_docs` documents (and the rows built from them) at a time, whatever
the corpus size; `stream_window_docs=0` selects the in-memory path (pipeline.train_iterator
dispatches on it). It yields the same "row batches" (unmasked rows + uint32 masking keys) as
pipeline._row_batches, so masking and the rest of the stream are shared.

Stream layout (per host):
  files    host p reads files[p::process_count] of the sorted glob (disjoint, covering); with
           fewer files than hosts it refuses to start (re-run the preprocess command with
           --num_shards >= process_count).
  epoch e  the host's files in a permutation keyed by (seed, e, p), read one after another;
           documents of the other split are dropped on the fly (document d is eval when
           frac(d * golden_ratio) < eval_fraction, d = the record's doc_index, as in memory).
  window   the next `stream_window_docs` kept documents (the last window of an epoch may be
           shorter); their order is permuted by (seed, e, p, w), instances.build_rows builds
           the window's rows (rng per document keyed by (seed, e, doc_index); NSP's random B
           and packing draw from the same window), the rows are permuted by (seed, e, p, w)
           and get masking keys from (seed, e, row index within the epoch's host stream).
  batches  windows and epochs are concatenated and cut into batch_size rows.
  eval     the same over the eval documents, with windows of at most 1024 documents (eval
           documents are ~eval_fraction of the records; a small window lets a few eval
           batches read only the records they need). Eval always starts at batch 0.

Resume (`start_batch`): rows to skip = start_batch * batch_size. A window's row count is exact
only once it is built, so the stream keeps a row-count index: one entry per window (rows,
documents, the read position after it: file number in the epoch's order, record number in
that file, and whether it ended the epoch), appended as each window is built (before its
rows are handed on, so the index always reaches past the last checkpointed batch). It lives
in <cache_dir>/stream_index/<key>.json (tf.io.gfile; the key hashes the files and their sizes,
tokenizer, instance settings, seed, split, host and window size). A resume walks the index,
skipping whole windows and epochs without reading them, and opens the reader at the stored
position (tf.data skips records inside one file only). Windows past the index (a fresh
machine, a deleted cache) are counted by reading them and building their rows, without
permuting or masking; that is exact, only slower. A resumed window whose count disagrees with
the index (stale index, changed code) is refused with the index path to delete.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator

import numpy as np
import tensorflow as tf

from bert_jax.data import corpora
from bert_jax.data import instances as inst_lib
from bert_jax.data import masking
from bert_jax.data import preprocess

_GOLDEN = 0.6180339887498949  # the eval split rule of pipeline.load_corpus
_INDEX_VERSION = 1  # bump when build_rows or the window layout changes row counts
# Eval documents are ~eval_fraction of the records, so an eval window of W documents reads
# about W / eval_fraction records; a small one lets a few eval batches read only what they need.
_EVAL_WINDOW_DOCS = 1024
_FEATURES = {
    "tokens": tf.io.RaggedFeature(tf.int64),
    "sentence_lengths": tf.io.RaggedFeature(tf.int64),
    "doc_index": tf.io.FixedLenFeature([], tf.int64),
}
_READ_BATCH = 256  # records parsed per tf.data element (per-element Python cost ~0.3 ms)


def host_files(data_config, tokenizer, process_index: int, process_count: int) -> list[str]:
  """This host's record files (files[process_index::process_count] of the sorted glob)."""
  files = preprocess.record_files(data_config.tfrecord_glob, tokenizer)
  if len(files) < process_count:
    raise ValueError(
        f"config.data.tfrecord_glob={data_config.tfrecord_glob!r} matches {len(files)} files "
        f"but {process_count} processes each stream their own files; re-run "
        f"`python -m bert_jax.data.preprocess` with --num_shards >= {process_count} (a multiple "
        "of the process count keeps hosts even), or set config.data.stream_window_docs=0 to "
        "load the records in memory.")
  return files[process_index::process_count]


def _parse(file_no, rec_no, records):
  return file_no, rec_no, tf.io.parse_example(records, _FEATURES)


def _documents(files: list[str], start: tuple[int, int], split: str, eval_fraction: float,
               stats: dict) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, int]]:
  """(file number, record number, tokens, sentence lengths, doc_index) of the split's
  documents, reading `files` in order from record start[1] of files[start[0]]."""
  if start[0] >= len(files):
    return
  want_eval = split == "eval"
  names = tf.data.Dataset.from_tensor_slices(files[start[0]:]).enumerate(start=start[0])
  ds = names.flat_map(lambda i, f: tf.data.TFRecordDataset(f).enumerate().map(
      lambda r, rec: (i, r, rec)))
  ds = ds.skip(start[1]).batch(_READ_BATCH).map(_parse).prefetch(2)
  for file_no, rec_no, ex in ds:
    file_no, rec_no, ids = file_no.numpy(), rec_no.numpy(), ex["doc_index"].numpy()
    tok_rs, toks = ex["tokens"].row_splits.numpy(), ex["tokens"].values.numpy().astype(np.int32)
    sl_rs, sls = ex["sentence_lengths"].row_splits.numpy(), ex["sentence_lengths"].values.numpy()
    keep = (np.modf(ids.astype(np.float64) * _GOLDEN)[0] < eval_fraction) == want_eval
    stats["stream_documents_read"] = stats.get("stream_documents_read", 0) + int(keep.sum())
    for j in np.nonzero(keep)[0].tolist():
      yield (int(file_no[j]), int(rec_no[j]), toks[tok_rs[j]:tok_rs[j + 1]],
             sls[sl_rs[j]:sl_rs[j + 1]], int(ids[j]))


def _windows(files, start, window_docs, split, eval_fraction, stats):
  """(documents, read position after them, last of the epoch) for the rest of an epoch; at
  most window_docs documents are held (stats['stream_max_window_docs'] records the most)."""
  docs: list = []
  end = start
  for fi, r, tokens, sent_lens, d in _documents(files, start, split, eval_fraction, stats):
    docs.append((tokens, sent_lens, d))
    stats["stream_max_window_docs"] = max(stats.get("stream_max_window_docs", 0), len(docs))
    end = (fi, r + 1)
    if len(docs) == window_docs:
      yield docs, end, False
      docs = []
  yield docs, end, True


def _window_corpus(docs, order) -> inst_lib.TokenizedCorpus:
  docs = [docs[i] for i in order]
  sl = np.concatenate([s for _, s, _ in docs])
  return inst_lib.TokenizedCorpus(
      tokens=np.concatenate([t for t, _, _ in docs]),
      sent_offsets=np.concatenate([[0], np.cumsum(sl)]).astype(np.int64),
      doc_offsets=np.concatenate([[0], np.cumsum([len(s) for _, s, _ in docs])]).astype(np.int64),
      doc_ids=np.asarray([d for _, _, d in docs], np.int64))


class _Index:
  """Row counts of the windows built so far, in stream order (see module doc)."""

  def __init__(self, path: str | None):
    self.path, self.entries = path, []
    if path and tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        self.entries = json.load(f)["windows"]

  def check_or_add(self, k: int, entry: dict) -> None:
    if k < len(self.entries):
      if self.entries[k] != entry:
        raise ValueError(f"{self.path}: window {k} has {entry} but the stream index says "
                         f"{self.entries[k]} (stale index); delete the file and resume again.")
      return
    assert k == len(self.entries), (k, len(self.entries))
    self.entries.append(entry)
    if self.path:
      tf.io.gfile.makedirs(os.path.dirname(self.path))
      tmp = f"{self.path}.tmp{os.getpid()}"
      with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump({"version": _INDEX_VERSION, "windows": self.entries}, f)
      tf.io.gfile.rename(tmp, self.path, overwrite=True)


def index_path(data_config, tokenizer, files, split, seed, process_index, process_count) -> str:
  c = data_config
  key = json.dumps(dict(
      v=_INDEX_VERSION, files=[(f, tf.io.gfile.stat(f).length) for f in files],
      tok=tokenizer.fingerprint(), split=split, eval_fraction=c.eval_fraction,
      instances=c.instances, max_seq_length=c.max_seq_length, short_seq_prob=c.short_seq_prob,
      pack=c.pack_examples, seed=seed, host=[process_index, process_count],
      window=c.stream_window_docs), sort_keys=True)
  cache = c.get("cache_dir", "") or str(corpora.default_cache_dir())
  return os.path.join(cache, "stream_index", hashlib.sha1(key.encode()).hexdigest()[:16] + ".json")


def row_batches(data_config, tokenizer, *, split: str, batch_size: int, process_index: int,
                process_count: int, seed: int, start_batch: int, stats: dict,
                use_index: bool = True) -> Iterator[dict]:
  """Numpy batches of unmasked rows plus uint32 masking keys, from batch `start_batch`, as
  pipeline._row_batches yields them. Checks the files now; reads lazily."""
  c = data_config
  window = c.stream_window_docs
  if not isinstance(window, int) or window < 1:
    raise ValueError(f"config.data.stream_window_docs={window!r} must be a positive number of "
                     "documents (0 loads the records in memory instead).")
  files = host_files(c, tokenizer, process_index, process_count)
  path = (index_path(c, tokenizer, files, split, seed, process_index, process_count)
          if use_index else None)
  if split == "eval":
    window = min(window, _EVAL_WINDOW_DOCS)
  return _generate(c, tokenizer, files, _Index(path), window, split=split,
                   batch_size=batch_size, process_index=process_index,
                   process_count=process_count, seed=seed, start_batch=start_batch, stats=stats)


def _generate(c, tokenizer, files, index, window, *, split, batch_size, process_index,
              process_count, seed, start_batch, stats):
  specials = inst_lib.Specials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
  pi, pc = process_index, process_count
  to_skip = start_batch * batch_size
  # Skip whole windows (and epochs) the index knows, without reading them.
  epoch, w, pos, rows_before, k = 0, 0, (0, 0), 0, 0
  while k < len(index.entries) and to_skip >= index.entries[k]["rows"]:
    e = index.entries[k]
    to_skip -= e["rows"]
    rows_before += e["rows"]
    w, pos, k = w + 1, tuple(e["end"]), k + 1
    if e["last"]:
      epoch, w, pos, rows_before = epoch + 1, 0, (0, 0), 0
  stats["stream_windows_skipped_by_index"] = k
  carry: dict | None = None
  while True:
    order = np.random.default_rng([seed, epoch, pi, 0xF11E]).permutation(len(files))
    files_e = [files[i] for i in order]
    from_start, epoch_docs = w == 0, 0
    for docs, end, last in _windows(files_e, pos, window, split, c.eval_fraction, stats):
      epoch_docs += len(docs)
      rows, n = None, 0
      if docs:
        corpus = _window_corpus(docs, np.random.default_rng(
            [seed, epoch, pi, w, 0xD0C5]).permutation(len(docs)))
        rows = inst_lib.build_rows(corpus, kind=c.instances, max_seq_length=c.max_seq_length,
                                   short_seq_prob=c.short_seq_prob, pack=c.pack_examples,
                                   specials=specials, seed=seed, epoch=epoch, stats=stats)
        corpus = None
        n = len(rows["next_sentence_labels"])
      index.check_or_add(k, dict(rows=n, end=list(end), last=last))
      k += 1
      if to_skip >= n:  # count only: no permutation, no masking
        to_skip -= n
      else:
        perm = np.random.default_rng([seed, epoch, pi, w, 0x5EED]).permutation(n)
        rows = {key: v[perm] for key, v in rows.items()}
        rows["keys"] = masking.example_keys(
            seed, epoch, (rows_before + np.arange(n, dtype=np.int64)) * pc + pi)
        start, to_skip = to_skip, 0
        while start < n:
          take = batch_size - (0 if carry is None else len(carry["keys"]))
          part = {key: v[start:start + take] for key, v in rows.items()}
          start += take
          carry = part if carry is None else {key: np.concatenate([carry[key], part[key]])
                                              for key in part}
          if len(carry["keys"]) == batch_size:
            yield carry
            carry = None
      rows = None
      rows_before += n
      w, pos = w + 1, end
    if from_start and epoch_docs == 0:
      raise ValueError(
          f"No {split} documents for process {pi}/{pc} in {len(files)} record files of "
          f"config.data.tfrecord_glob={c.tfrecord_glob!r} (eval_fraction={c.eval_fraction}); "
          "use more records or change config.data.eval_fraction.")
    if from_start and rows_before == 0:
      raise ValueError(f"Process {pi} built no instances from {epoch_docs} {split} documents "
                       f"(stats: {stats}); the corpus is too small.")
    epoch, w, pos, rows_before = epoch + 1, 0, (0, 0), 0
