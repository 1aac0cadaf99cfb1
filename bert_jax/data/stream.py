"""Bounded-memory row stream over preprocessed TFRecords (config.data.source='tfrecord').

The in-memory path (bert_jax.data.row_source.load_corpus) holds a host's whole tokenized share.
This module reads the records with tf.data instead and holds at most
`config.data.stream_window_docs` documents and the rows built from them at a time (besides
tf.data's read-ahead of a few blocks of 256 records), whatever the corpus size;
`stream_window_docs=0` selects the in-memory path (row_source.row_pieces dispatches on it).
It yields the same row pieces (unmasked rows + uint32 masking keys) as the in-memory
row generator (bert_jax.data.row_source), so masking and batching are shared.

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
           Rows are mixed within a window only, so the window should span many documents.
  batches  windows and epochs are concatenated (pieces handed to pipeline's masking stage,
           which cuts batch_size rows).
  eval     the same over the eval documents, with windows of at most 1024 documents (eval
           documents are ~eval_fraction of the records; a small window lets a few eval
           batches read only the records they need). Eval always starts at batch 0.

Resume (`start_row` = start_batch * batch_size): rows to skip. A window's row count is exact
only once it is built, so the stream keeps a row-count index: one entry per window (rows,
the read position after it: file number in the epoch's order and record number in that
file, and whether it ended the epoch), appended as each window is built (before its
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

import dataclasses
import hashlib
import json
import os
import uuid
from typing import Iterator

import numpy as np
import tensorflow as tf

from bert_jax.data import corpora
from bert_jax.data import instances as inst_lib
from bert_jax.data import masking
from bert_jax.data import preprocess

_INDEX_VERSION = 2  # bump when build_rows or the window layout changes row counts
# Eval documents are ~eval_fraction of the records, so an eval window of W documents reads
# about W / eval_fraction records; a small one lets a few eval batches read only what they need.
_EVAL_WINDOW_DOCS = 1024
_FEATURES = {
    "tokens": tf.io.RaggedFeature(tf.int64),
    "sentence_lengths": tf.io.RaggedFeature(tf.int64),
    "doc_index": tf.io.FixedLenFeature([], tf.int64),
}
_READ_BATCH = 256  # records per tf.data element (one element costs ~0.3 ms of Python)


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


@dataclasses.dataclass
class _Docs:
  """Documents in read order: per-document arrays plus flat tokens and sentence lengths."""
  ids: np.ndarray        # int64 [D] doc_index
  pos: np.ndarray        # int64 [D, 2] (file number in the epoch's order, record number)
  n_tok: np.ndarray      # int64 [D]
  n_sent: np.ndarray     # int64 [D]
  tokens: np.ndarray     # int32 [sum n_tok]
  sent_lens: np.ndarray  # int64 [sum n_sent]

  def __len__(self) -> int:
    return len(self.ids)

  def split(self, m: int) -> tuple["_Docs", "_Docs"]:
    t, s = int(self.n_tok[:m].sum()), int(self.n_sent[:m].sum())
    return (_Docs(self.ids[:m], self.pos[:m], self.n_tok[:m], self.n_sent[:m],
                  self.tokens[:t], self.sent_lens[:s]),
            _Docs(self.ids[m:], self.pos[m:], self.n_tok[m:], self.n_sent[m:],
                  self.tokens[t:], self.sent_lens[s:]))

  def take(self, order: np.ndarray) -> "_Docs":
    """The documents `order` (indices), in that order."""
    ts, ss = np.cumsum(self.n_tok) - self.n_tok, np.cumsum(self.n_sent) - self.n_sent
    return _Docs(self.ids[order], self.pos[order], self.n_tok[order], self.n_sent[order],
                 self.tokens[inst_lib.concat_ranges(ts[order], self.n_tok[order])],
                 self.sent_lens[inst_lib.concat_ranges(ss[order], self.n_sent[order])])

  @staticmethod
  def concat(blocks: list["_Docs"]) -> "_Docs":
    if not blocks:
      z = np.zeros([0], np.int64)
      return _Docs(z, np.zeros([0, 2], np.int64), z, z, np.zeros([0], np.int32), z)
    return _Docs(*(np.concatenate([getattr(b, f.name) for b in blocks])
                   for f in dataclasses.fields(_Docs)))

  def corpus(self) -> inst_lib.TokenizedCorpus:
    return inst_lib.TokenizedCorpus(
        tokens=self.tokens,
        sent_offsets=np.concatenate([[0], np.cumsum(self.sent_lens)]).astype(np.int64),
        doc_offsets=np.concatenate([[0], np.cumsum(self.n_sent)]).astype(np.int64),
        doc_ids=self.ids)


def _parse(file_no, skip, k, records):
  """One block of records of one file: (file number, record numbers, parsed features)."""
  ex = tf.io.parse_example(records, _FEATURES)
  rec_no = skip + k * _READ_BATCH + tf.range(tf.size(records, tf.int64), dtype=tf.int64)
  return (file_no, rec_no, ex["doc_index"], ex["tokens"].values, ex["tokens"].row_splits,
          ex["sentence_lengths"].values, ex["sentence_lengths"].row_splits)


def _documents(files: list[str], start: tuple[int, int], split: str, eval_fraction: float,
               stats: dict) -> Iterator[_Docs]:
  """Blocks of the split's documents, reading `files` in order from record start[1] of
  files[start[0]] (up to _READ_BATCH records of one file at a time)."""
  if start[0] >= len(files):
    return
  want_eval = split == "eval"
  skips = [start[1]] + [0] * (len(files) - start[0] - 1)
  names = tf.data.Dataset.from_tensor_slices((files[start[0]:], tf.constant(skips, tf.int64)))
  ds = names.enumerate(start=start[0]).flat_map(
      lambda i, fs: tf.data.TFRecordDataset(fs[0]).skip(fs[1]).batch(_READ_BATCH).enumerate()
      .map(lambda k, recs: (i, fs[1], k, recs)))
  ds = ds.map(_parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
  for file_no, rec_no, ids, toks, tok_rs, sls, sl_rs in ds.as_numpy_iterator():
    block = _Docs(ids, np.stack([np.full_like(rec_no, file_no), rec_no], 1), np.diff(tok_rs),
                  np.diff(sl_rs), toks.astype(np.int32), sls)
    keep = inst_lib.is_eval_document(ids, eval_fraction) == want_eval
    if not keep.all():
      block = block.take(np.nonzero(keep)[0])
    stats["stream_documents_read"] = stats.get("stream_documents_read", 0) + len(block)
    yield block


def _windows(files, start, window_docs, split, eval_fraction, stats):
  """(documents, read position after them, last of the epoch) for the rest of an epoch. A
  window holds at most window_docs documents (stats['stream_max_window_docs'] records the
  most); besides it only the rest of one read block and tf.data's prefetch are in memory."""
  pending: list[_Docs] = []
  held, end = 0, start
  for block in _documents(files, start, split, eval_fraction, stats):
    while len(block):
      head, block = block.split(min(window_docs - held, len(block)))
      pending.append(head)
      held += len(head)
      end = (int(head.pos[-1, 0]), int(head.pos[-1, 1]) + 1)
      stats["stream_max_window_docs"] = max(stats.get("stream_max_window_docs", 0), held)
      if held == window_docs:
        yield _Docs.concat(pending), end, False
        pending, held = [], 0
  yield _Docs.concat(pending), end, True


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
      # A name of its own: several streams of one config (e.g. in one process) may write at
      # once; their entries agree, and the rename is atomic.
      tmp = f"{self.path}.tmp{uuid.uuid4().hex}"
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


def row_pieces(data_config, tokenizer, *, split: str, chunk_rows: int, process_index: int,
               process_count: int, seed: int, start_row: int, stats: dict,
               use_index: bool = True, max_epochs: int | None = None) -> Iterator[dict]:
  """Unmasked rows plus uint32 masking keys in stream order from row `start_row`, in pieces
  of at most `chunk_rows` rows, as row_source's in-memory generator yields them. Checks the
  files now; reads lazily."""
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
                   chunk_rows=chunk_rows, process_index=process_index,
                   process_count=process_count, seed=seed, start_row=start_row, stats=stats,
                   max_epochs=max_epochs)


def _generate(c, tokenizer, files, index, window, *, split, chunk_rows, process_index,
              process_count, seed, start_row, stats, max_epochs=None):
  specials = inst_lib.Specials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
  pi, pc = process_index, process_count
  to_skip = start_row
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
  while max_epochs is None or epoch < max_epochs:
    order = np.random.default_rng([seed, epoch, pi, 0xF11E]).permutation(len(files))
    files_e = [files[i] for i in order]
    from_start, epoch_docs = w == 0, 0
    for docs, end, last in _windows(files_e, pos, window, split, c.eval_fraction, stats):
      epoch_docs += len(docs)
      rows, n = None, 0
      if len(docs):
        corpus = docs.take(np.random.default_rng(
            [seed, epoch, pi, w, 0xD0C5]).permutation(len(docs))).corpus()
        rows = inst_lib.build_rows(
            corpus, kind=c.instances, max_seq_length=c.max_seq_length,
            short_seq_prob=c.short_seq_prob, pack=c.pack_examples, specials=specials, seed=seed,
            epoch=epoch, stats=stats,
            row_order=np.random.default_rng([seed, epoch, pi, w, 0x5EED]).permutation)
        corpus = None
        n = len(rows["next_sentence_labels"])
      index.check_or_add(k, dict(rows=n, end=list(end), last=last))
      k += 1
      if to_skip >= n:  # count only: no masking keys, nothing handed on
        to_skip -= n
      else:
        rows["keys"] = masking.example_keys(
            seed, epoch, (rows_before + np.arange(n, dtype=np.int64)) * pc + pi)
        for start in range(to_skip, n, chunk_rows):
          yield {key: v[start:start + chunk_rows] for key, v in rows.items()}
        to_skip = 0
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
