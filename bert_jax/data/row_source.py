"""The row generator: a host's unmasked rows of a split, in stream order, with their masking keys.

Training, eval (bert_jax.data.pipeline) and the row records (bert_jax.data.rows) all take their
rows from `row_pieces`: pieces of at most `chunk_rows` rows (numpy; the layout is
`piece_signature`), built in Python from the tokenized documents (held in memory, or streamed
from preprocessed TFRecords through a bounded window by bert_jax.data.stream).

Stream layout (per host): epoch e holds this host's documents' rows in a permutation
keyed by (seed, e, process_index); epochs are concatenated, so with pieces cut into batches of
`batch_size` rows, batch k is fixed by (seed, k). The masks of a row are keyed by
(seed, epoch, global example index) through a stateless hash (bert_jax.data.masking),
so masking is new every epoch, identical across runs, and `start_row` only has to
skip rows (it never masks what it skips).

source='tfrecord' streams the records through a bounded window of documents instead
(bert_jax.data.stream; config.data.stream_window_docs=0 loads them here like the others).

Documents: document d (in corpus order) is held out for eval when
frac(d * golden_ratio) < eval_fraction; the i-th document of a split belongs to host
i % process_count (preprocessed TFRecords with at least process_count files are
sharded by file instead), so hosts' shards are disjoint and together cover the split.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from bert_jax.data import checks
from bert_jax.data import corpora
from bert_jax.data import instances as inst_lib
from bert_jax.data import masking
from bert_jax.data import preprocess
from bert_jax.data import stream

EVAL_SEED_OFFSET = 0x3C6EF372  # the eval stream's seed: config.data.seed + this (not the train stream)
_INT_KEYS = ("input_ids", "input_mask", "token_type_ids", "segment_ids", "position_ids")


def piece_signature(length: int) -> dict:
  """The row pieces every source yields: unmasked [n, L] rows, labels and uint32 masking keys."""
  return {**{k: tf.TensorSpec([None, length], tf.int32) for k in _INT_KEYS},
          "next_sentence_labels": tf.TensorSpec([None], tf.int32),
          "keys": tf.TensorSpec([None], tf.uint32)}


def default_chunk_rows(batch_size: int, length: int, strategy: str) -> int:
  """Rows masked per TF call, at least a batch: about 2**19 tokens (TF's per-call cost
  dominates below that on CPU: 43k rows/s at 256 x 128, 116k at 4096 x 128); 2**16 for
  the XLA-compiled strategies, whose while_loop runs until the slowest row of the piece is
  done (no gain from bigger pieces) and whose pieces are padded to one compiled size."""
  return max(batch_size, (1 << (16 if strategy in masking.XLA_STRATEGIES else 19)) // length)


# ----------------------------------------------------------------------------- corpus

def _cache_dir(data_config):
  return data_config.get("cache_dir", "") or corpora.default_cache_dir()


def _all_documents(data_config, tokenizer, split: str, stats: dict) -> inst_lib.TokenizedCorpus:
  """The whole tokenized source (cached as .npz keyed by source + tokenizer)."""
  c = data_config
  key = json.dumps(dict(source=c.source, tfds=[c.tfds_name, split, c.tfds_text_key,
                                               c.tfds_data_dir],
                        text=[c.text_glob, c.text_format], tok=tokenizer.fingerprint(),
                        builtin=str(corpora.builtin_corpus_path(_cache_dir(c)).name)
                        if c.source == "builtin" else ""), sort_keys=True)
  path = os.path.join(str(_cache_dir(c)), "tokenized",
                      hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")
  if os.path.exists(path):
    z = np.load(path, allow_pickle=False)
    stats.update(json.loads(str(z["stats"])))
    return inst_lib.TokenizedCorpus(z["tokens"], z["sent_offsets"], z["doc_offsets"],
                                    z["doc_ids"])
  corpus = inst_lib.tokenize_documents(
      corpora.source_documents(c, split, stats, _cache_dir(c)), tokenizer, stats)
  if corpus.num_docs == 0:
    raise ValueError(f"{corpora.describe_source(c)} produced no documents (stats: {stats}): an empty "
                     "corpus; point the source at your text.")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.npz"
  np.savez(tmp, tokens=corpus.tokens, sent_offsets=corpus.sent_offsets,
           doc_offsets=corpus.doc_offsets, doc_ids=corpus.doc_ids, stats=json.dumps(stats))
  os.replace(tmp, path)
  return corpus


def load_corpus(data_config, tokenizer, split: str, process_index: int, process_count: int,
                stats: dict | None = None) -> inst_lib.TokenizedCorpus:
  """This host's documents of `split` ("train" or "eval")."""
  c = data_config
  stats = stats if stats is not None else {}
  separate_eval = checks.separate_eval(c)
  src_split = c.tfds_eval_split if (split == "eval" and separate_eval) else c.tfds_split
  if split == "eval" and separate_eval and c.source == "text":  # the eval files read as the corpus
    c = ml_collections.ConfigDict(c.to_dict())
    c.text_glob = c.text_eval_glob
  if c.source == "tfrecord":
    corpus, host_sharded = preprocess.read_corpus(c.tfrecord_glob, stats, tokenizer,
                                                  process_index, process_count)
  else:
    corpus, host_sharded = _all_documents(c, tokenizer, src_split, stats), False
  is_eval = inst_lib.is_eval_document(corpus.doc_ids, c.eval_fraction)
  if separate_eval:
    keep = np.ones_like(is_eval)
  else:
    keep = is_eval if split == "eval" else ~is_eval
  rows = np.nonzero(keep)[0]
  if not host_sharded:
    rows = rows[np.arange(len(rows)) % process_count == process_index]
  if len(rows) == 0:
    raise inst_lib.empty_split_error(split, process_index, process_count, c.source, corpus.num_docs,
                                     c.eval_fraction)
  return corpus.select(rows)


# ----------------------------------------------------------------------------- rows

def _row_chunks(corpus, data_config, tokenizer, *, chunk_rows: int, process_index: int,
                process_count: int, seed: int, start_row: int, stats: dict,
                max_epochs: int | None = None) -> Iterator[dict]:
  """Unmasked rows (numpy) plus uint32 masking keys in stream order from row `start_row`,
  in pieces of at most `chunk_rows` rows (a piece never crosses an epoch boundary)."""
  c = data_config
  specials = inst_lib.Specials(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
  to_skip = start_row
  epoch = 0
  while max_epochs is None or epoch < max_epochs:
    shuffle = np.random.default_rng([seed, epoch, process_index, 0x5EED]).permutation
    rows = inst_lib.build_rows(corpus, kind=c.instances, max_seq_length=c.max_seq_length,
                               short_seq_prob=c.short_seq_prob, pack=c.pack_examples,
                               specials=specials, seed=seed, epoch=epoch, stats=stats,
                               row_order=shuffle)
    n = len(rows["next_sentence_labels"])
    if n == 0:
      raise ValueError(f"Process {process_index} built no instances from {corpus.num_docs} "
                       f"documents (stats: {stats}); the corpus is too small.")
    if to_skip >= n:  # skip whole epochs without masking them
      to_skip -= n
      epoch += 1
      continue
    rows["keys"] = masking.example_keys(seed, epoch,
                                        np.arange(n, dtype=np.int64) * process_count +
                                        process_index)
    for start in range(to_skip, n, chunk_rows):
      yield {k: v[start:start + chunk_rows] for k, v in rows.items()}
    to_skip = 0
    epoch += 1


def _streaming(data_config) -> bool:
  """Records stream through a bounded window (bert_jax.data.stream) unless
  config.data.stream_window_docs=0; every other source is loaded in memory."""
  return data_config.source == "tfrecord" and data_config.get("stream_window_docs", 0) != 0


def row_pieces(data_config, tokenizer, split: str, *, chunk_rows: int, process_index: int,
               process_count: int, seed: int, start_row: int, stats: dict,
               max_epochs: int | None = None) -> Iterator[dict]:
  """This host's unmasked row pieces of `split` from row `start_row` (in memory, or the TFRecord
  stream): the one row generator of training, eval and the row records (bert_jax.data.rows)."""
  kw = dict(chunk_rows=chunk_rows, process_index=process_index, process_count=process_count,
            seed=seed, start_row=start_row, stats=stats, max_epochs=max_epochs)
  if _streaming(data_config):
    # Eval always starts at row 0: no resume index.
    return stream.row_pieces(data_config, tokenizer, split=split, use_index=split == "train", **kw)
  corpus = load_corpus(data_config, tokenizer, split, process_index, process_count, stats)
  return _row_chunks(corpus, data_config, tokenizer, **kw)
