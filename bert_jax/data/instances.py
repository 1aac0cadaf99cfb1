"""Tokenized corpora and pretraining instances (numpy, host side).

A `TokenizedCorpus` holds documents as flat int32 tokens with sentence and document
offsets. `build_rows` turns a set of documents into fixed-length rows for one epoch:
every random draw is a counter-based hash of (seed, epoch, global document id, chunk
index, stream), so rows do not depend on host count or on other documents' draws (except
the random-next document of NSP, drawn from the same document set).

Instance kinds (config.data.instances):
  nsp             BERT: A/B from sentence chunks; 50% B from a random other document
                  (label 1), short_seq_prob shorter targets, pair truncation as the
                  reference (longer side, random front/back).
  sop             ALBERT: A/B in order (label 0) or swapped (label 1).
  (nsp and sop: a one-sentence chunk is split at a random token into A and B; the
  references use a random document there, which skews the labels.)
  segments        ELECTRA: consecutive sentences, split into two segments (10% one
                  segment), 5% random shorter targets; label 0.
  full_sentences  RoBERTa: consecutive sentences of one document up to the length, one
                  segment; with pack_examples several such chunks (from consecutive
                  documents) share a row, told apart by segment_ids/position_ids.

Every kind is computed for all documents at once in numpy: each document is walked in
lockstep with the others, one chunk per step (a step costs a few array operations over
the documents still live, so the Python loop runs max(chunks per document) times). The
reference's per-document loops are kept as test oracles (tests/test_data_pipeline.py),
which draw the same hashes and give the same instances. Unpacked rows are
written by dense [N, L] passes (or scattered when rows are mostly padding), already in
the caller's shuffled order (`row_order`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import numpy as np

INSTANCE_KINDS = ("nsp", "sop", "segments", "full_sentences")
# Unpacked rows are filled by dense [N, L] passes when they are at least this full on
# average (cheaper then), else by scattering the tokens (cheaper for short rows).
DENSE_FILL_MIN = 0.4


@dataclasses.dataclass
class TokenizedCorpus:
  tokens: np.ndarray        # int32 [T]
  sent_offsets: np.ndarray  # int64 [S + 1] into tokens
  doc_offsets: np.ndarray   # int64 [D + 1] into sentences
  doc_ids: np.ndarray       # int64 [D] global document index (sharding, eval split, keys)

  @property
  def num_docs(self) -> int:
    return len(self.doc_ids)

  @property
  def num_tokens(self) -> int:
    return len(self.tokens)

  def document(self, i: int) -> list[np.ndarray]:
    s0, s1 = self.doc_offsets[i], self.doc_offsets[i + 1]
    o = self.sent_offsets
    return [self.tokens[o[s]:o[s + 1]] for s in range(s0, s1)]

  def select(self, rows: np.ndarray) -> "TokenizedCorpus":
    """The sub-corpus of the given document rows (in that order)."""
    docs = [self.document(int(r)) for r in rows]
    return from_documents(docs, self.doc_ids[rows])


_GOLDEN = 0.6180339887498949


def is_eval_document(doc_ids, eval_fraction: float) -> np.ndarray:
  """The eval split rule of every source: document d (its position in the source) is held out
  when frac(d * golden_ratio) < eval_fraction (an even spread, independent of corpus size)."""
  return np.modf(np.asarray(doc_ids).astype(np.float64) * _GOLDEN)[0] < eval_fraction


def empty_split_error(split: str, process_index: int, process_count: int, source: str, num_docs: int,
                      eval_fraction: float) -> ValueError:
  """The one-line refusal of a corpus with no `split` documents for a process."""
  return ValueError(f"No {split} documents for process {process_index}/{process_count} (source {source!r}, "
                    f"{num_docs} documents, eval_fraction={eval_fraction}); use a bigger corpus or change "
                    "config.data.eval_fraction.")


def check_train_split(num_docs: int, eval_fraction: float, source: str) -> None:
  """Refuses a corpus of `num_docs` documents that leaves no train document (the rule of
  is_eval_document), before anything is trained on it."""
  if not (~is_eval_document(np.arange(num_docs), eval_fraction)).any():
    raise empty_split_error("train", 0, 1, source, num_docs, eval_fraction)


def from_documents(docs: Sequence[Sequence[Sequence[int]]], doc_ids=None) -> TokenizedCorpus:
  sents = [np.asarray(s, np.int32) for d in docs for s in d]
  sent_lens = np.array([len(s) for s in sents], np.int64)
  doc_lens = np.array([len(d) for d in docs], np.int64)
  return TokenizedCorpus(
      tokens=np.concatenate(sents).astype(np.int32) if sents else np.zeros([0], np.int32),
      sent_offsets=np.concatenate([[0], np.cumsum(sent_lens)]).astype(np.int64),
      doc_offsets=np.concatenate([[0], np.cumsum(doc_lens)]).astype(np.int64),
      doc_ids=np.arange(len(docs), dtype=np.int64) if doc_ids is None else np.asarray(doc_ids))


def tokenize_documents(docs: Iterable[list[str]], tokenizer, stats: dict,
                       chunk_docs: int = 256) -> TokenizedCorpus:
  """Tokenizes a document stream; empty documents/sentences are skipped and counted."""
  out: list[list[np.ndarray]] = []
  pending: list[list[str]] = []

  def flush():
    flat = [s for d in pending for s in d]
    # Word-continuation flags of a word segmenter (if any) ride along in the ids until masking.
    enc = tokenizer.encode_for_masking(flat) if flat else []
    k = 0
    for d in pending:
      sents = []
      for _ in d:
        if len(enc[k]):
          sents.append(np.asarray(enc[k], np.int32))
        else:
          stats["empty_sentences"] = stats.get("empty_sentences", 0) + 1
        k += 1
      if sents:
        out.append(sents)
        if len(sents) == 1:
          stats["one_sentence_documents"] = stats.get("one_sentence_documents", 0) + 1
      else:
        stats["empty_documents"] = stats.get("empty_documents", 0) + 1
    pending.clear()

  for doc in docs:
    doc = [s for s in (x.strip() for x in doc) if s]
    if not doc:
      stats["empty_documents"] = stats.get("empty_documents", 0) + 1
      continue
    pending.append(doc)
    if len(pending) >= chunk_docs:
      flush()
  flush()
  stats["documents"] = len(out)
  return from_documents(out)


# ----------------------------------------------------------------------------- instances

@dataclasses.dataclass(frozen=True)
class Specials:
  cls_id: int
  sep_id: int
  pad_id: int


# Instances are token ranges of the flat corpus: (a0, a1, b0, b1, label), b empty when
# b0 == b1. Consecutive sentences of a document are contiguous, so A and B are ranges and
# no token is touched in Python; rows are filled by vectorized gathers at the end.


def _split_offsets(corpus, max_len, stats):
  """Sentence offsets with sentences over max_len cut into pieces, and the per-document
  index into them (int64 arrays)."""
  o = corpus.sent_offsets
  lens = np.diff(o)
  pieces = np.maximum(1, -(-lens // max_len))  # ceil; empty sentences keep one piece
  if (pieces > 1).any():
    stats["split_long_sentences"] = stats.get("split_long_sentences", 0) + int((pieces > 1).sum())
    k = np.repeat(np.arange(len(lens)), pieces)
    within = np.arange(len(k)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    o = np.concatenate([o[:-1][k] + within * max_len, o[-1:]])
    first = np.concatenate([[0], np.cumsum(pieces)])
    docs = first[corpus.doc_offsets]
  else:
    docs = corpus.doc_offsets
  return o.astype(np.int64), np.asarray(docs, np.int64)


# ----------------------------------------------------------------------------- draws

# nsp, sop and segments draw from a counter-based hash of (document key, chunk index, stream):
# the key mixes (seed, epoch, global document id), so a document's instances do not depend
# on the other documents or on the order in which they are walked. Streams (any distinct
# constants; bit t % 64 of stream _S_TRUNC_A + t // 64 sends the t-th token trimmed from A
# to the front or the back, likewise for B):
_S_SHORT, _S_TARGET, _S_A_END, _S_CUT, _S_COIN, _S_START, _S_FIRST_TARGET = range(1, 8)
_S_RANDOM_DOC = 100   # + try (0..9)
_S_TRUNC_A, _S_TRUNC_B = 1000, 2000
_NSP_DOC_TRIES = 10   # the reference's tries for a random document other than this one
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x):
  """splitmix64's finalizer: a bijective avalanche mix of uint64 values."""
  x = x ^ (x >> np.uint64(30))
  x = x * np.uint64(0xBF58476D1CE4E5B9)
  x = x ^ (x >> np.uint64(27))
  x = x * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def doc_keys(seed: int, epoch: int, doc_ids) -> np.ndarray:
  """uint64 key per document from (seed, epoch, global document id)."""
  base = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))
  base = _mix(base ^ np.uint64(epoch * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF))
  return _mix(base ^ _mix(np.asarray(doc_ids).astype(np.uint64) + np.uint64(0x165667B19E3779F9)))


def _bits(keys, step, stream: int):
  """uint64 hashes of (keys, step (chunk index), stream), elementwise."""
  # 1-d at least: numpy warns on (intended) uint64 overflow of scalars, not of arrays.
  counter = (np.atleast_1d(step).astype(np.uint64) << np.uint64(20)) + np.uint64(stream)
  return _mix(keys ^ _mix(counter * np.uint64(0x9E3779B97F4A7C15)))


def uniform(keys, step, stream: int):
  """float64 uniforms in [0, 1) keyed by (keys, step, stream)."""
  return (_bits(keys, step, stream) >> np.uint64(11)) * (1.0 / (1 << 53))


def randint(keys, step, stream: int, lo, hi):
  """Uniform integers in [lo, hi) (hi > lo; bias below (hi - lo) * 2**-53)."""
  return lo + (uniform(keys, step, stream) * (hi - lo)).astype(np.int64)


def binomial_half(keys, step, stream: int, k):
  """Binomial(k, 1/2): the set bits among k random bits (k < 64 * 1000)."""
  k = np.asarray(k, np.int64)
  out = np.zeros(k.shape, np.int64)
  for w in range((int(k.max(initial=0)) + 63) // 64):
    n = np.clip(k - 64 * w, 0, 64).astype(np.uint64)
    mask = np.where(n > 0, _M64 >> (np.uint64(64) - np.maximum(n, np.uint64(1))), np.uint64(0))
    out += np.bitwise_count(_bits(keys, step, stream + w) & mask)
  return out


def _truncate_pairs(a0, a1, b0, b1, max_tokens, keys, step):
  """The reference's truncate_seq_pair in closed form: trim the longer side one token at a
  time (ties trim B), each token from the front or the back with probability 1/2."""
  la, lb = a1 - a0, b1 - b0
  excess = la + lb - max_tokens
  one_side = np.abs(la - lb) >= excess
  na = np.where(one_side, np.where(la > lb, la - excess, la), (max_tokens + 1) // 2)
  nb = np.where(one_side, np.where(la > lb, lb, lb - excess), max_tokens // 2)
  ka, kb = np.where(excess > 0, la - na, 0), np.where(excess > 0, lb - nb, 0)
  fa = binomial_half(keys, step, _S_TRUNC_A, ka)  # front removals
  fb = binomial_half(keys, step, _S_TRUNC_B, kb)
  return a0 + fa, a1 - (ka - fa), b0 + fb, b1 - (kb - fb)


def _chunks_in_document_order(records):
  """Columns of per-step [n] arrays (document first), concatenated and sorted by document
  (stable: a document's chunks stay in step order)."""
  cols = [np.concatenate(c) for c in zip(*records)]
  order = np.argsort(cols[0], kind="stable")
  return [c[order] for c in cols]


def _pair_instances(o, first, keys, kind, max_seq_length, short_seq_prob, stats):
  """BERT NSP / ALBERT SOP instances of all documents at once: [K, 5] in document order.

  Per document (o: sentence offsets, first: per-document index into them, keys: doc_keys):
  a target length (short_seq_prob: uniform in [2, max_tokens]), then chunks of consecutive
  sentences up to the target; A is a random number of the chunk's first sentences, B the
  rest. nsp: B from a random other document with probability 1/2 (and always when the chunk
  is one sentence too short to split; label 1), and then the chunk's unused sentences start
  the next chunk (the reference's rewind). sop: A and B swapped with probability 1/2 (label
  1). Chunk c of a document draws with step c. The walk over chunks runs for all documents in
  lockstep, one chunk per step; the rest is one pass over all chunks
  (tests/test_data_pipeline.py checks both against a per-document loop).
  """
  max_tokens = max_seq_length - 3
  n_docs = len(first) - 1
  short = uniform(keys, 0, _S_SHORT) < short_seq_prob
  targets = np.where(short, randint(keys, 0, _S_TARGET, 2, max_tokens + 1), max_tokens)
  doc, cur, step, records = np.arange(n_docs), first[:-1], 0, []
  while True:
    live = cur < first[doc + 1]
    doc, cur = doc[live], cur[live]
    if not len(doc):
      break
    k = keys[doc]
    # The chunk: sentences cur..j, the first j reaching the target or the document's last.
    j = np.minimum(np.searchsorted(o, o[cur] + targets[doc], side="left") - 1, first[doc + 1] - 1)
    n_chunk = j + 1 - cur
    a_end = cur + np.where(n_chunk >= 2, randint(k, step, _S_A_END, 1, np.maximum(n_chunk, 2)), 1)
    # One-sentence chunk: A and B are its two parts (the reference forces a random B here,
    # which pushes NSP labels well over 50% on long-sentence corpora).
    split = (n_chunk == 1) & (o[cur + 1] - o[cur] >= 2)
    label = uniform(k, step, _S_COIN) < 0.5
    nxt = j + 1
    if kind == "nsp":
      label |= (n_chunk == 1) & ~split
      nxt = np.where(label & ~split, a_end, nxt)  # a random B: put the unused sentences back
    records.append((doc, np.full_like(doc, step), cur, j, a_end, split, label))
    cur = nxt
    step += 1
  if not records:
    return np.zeros([0, 5], np.int64)
  doc, step, cur, j, a_end, split, label = _chunks_in_document_order(records)
  k = keys[doc]
  a0, a1, b0, b1 = o[cur], o[a_end], o[a_end], o[j + 1]
  cut = a0 + randint(k, step, _S_CUT, 1, np.maximum(a1 - a0, 2))
  a1, b0 = np.where(split, cut, a1), np.where(split, cut, b0)
  if kind == "nsp" and n_docs > 1:
    r = randint(k, step, _S_RANDOM_DOC, 0, n_docs)
    for t in range(1, _NSP_DOC_TRIES):
      same = r == doc
      if not same.any():
        break
      r[same] = randint(k[same], step[same], _S_RANDOM_DOC + t, 0, n_docs)
    rs, re = first[r], first[r + 1]
    start = rs + randint(k, step, _S_START, 0, re - rs)
    # B: sentences of r from `start` until target - len(A) tokens or r's end.
    stop = np.searchsorted(o, o[start] + targets[doc] - (a1 - a0), side="left")
    stop = np.minimum(np.maximum(stop, start + 1), re)
    b0, b1 = np.where(label, o[start], b0), np.where(label, o[stop], b1)
  elif kind == "nsp":  # no other document: the chunk is skipped
    b0, b1 = np.where(label, 0, b0), np.where(label, 0, b1)
  else:
    a0, a1, b0, b1 = (np.where(label, x, y) for x, y in ((b0, a0), (b1, a1), (a0, b0), (a1, b1)))
  a0, a1, b0, b1 = _truncate_pairs(a0, a1, b0, b1, max_tokens, k, step)
  ok = (a1 > a0) & (b1 > b0)
  if not ok.all():
    stats["skipped_chunks"] = stats.get("skipped_chunks", 0) + int((~ok).sum())
  return np.stack([a0, a1, b0, b1, label], axis=1)[ok].astype(np.int64)


def _segment_instances(o, first, keys, max_seq_length):
  """ELECTRA's ExampleBuilder on all documents at once: [K, 5] in document order.

  Chunks of consecutive sentences reach a target of max_seq_length tokens (after each chunk,
  with probability 0.05 a uniform one in [5, max_seq_length]); the first segment takes
  sentences until (target - 3) // 2 tokens (the sentence crossing it with probability 1/2),
  or the whole chunk with probability 0.1. Once the second segment has started, later
  sentences stay in it (the reference may move a short one back into the first). Chunk c of a
  document draws with step c; the chunks are walked as in `_pair_instances`.
  """
  L = max_seq_length
  doc, cur, step, records = np.arange(len(first) - 1), first[:-1], 0, []
  target = np.full(len(doc), L)
  while True:
    live = cur < first[doc + 1]
    doc, cur, target = doc[live], cur[live], target[live]
    if not len(doc):
      break
    s_to = np.minimum(np.searchsorted(o, o[cur] + target, side="left"), first[doc + 1])
    records.append((doc, np.full_like(doc, step), cur, s_to, target))
    k = keys[doc]
    target = np.where(uniform(k, step, _S_TARGET) < 0.05, randint(k, step, _S_SHORT, 5, L + 1), L)
    cur = s_to
    step += 1
  if not records:
    return np.zeros([0, 5], np.int64)
  doc, step, cur, s_to, target = _chunks_in_document_order(records)
  k = keys[doc]
  first_target = np.where(uniform(k, step, _S_FIRST_TARGET) < 0.1, 100_000, (target - 3) // 2)
  # The sentence k1 that takes the first segment to first_target: it joins the first segment
  # with probability 1/2 (always when the segment is still empty).
  k1 = np.searchsorted(o, o[cur] + first_target, side="left") - 1
  joins = (o[k1] == o[cur]) | (uniform(k, step, _S_COIN) < 0.5)
  cut = np.where(k1 < s_to, np.minimum(k1 + joins, s_to), s_to)
  a0 = o[cur]
  a1 = np.minimum(o[cut], a0 + L - 2)
  b0 = o[cut]
  b1 = np.maximum(np.minimum(o[s_to], b0 + np.maximum(0, L - (a1 - a0) - 3)), b0)
  return np.stack([a0, a1, b0, b1, np.zeros_like(a0)], axis=1)


def _full_sentence_instances(offsets, doc_first, max_seq_length):
  """RoBERTa chunks of all documents at once: [K, 5] instances in document order.

  A chunk starting at sentence s ends before the first sentence that would take it past
  max_seq_length - 2 tokens (or at the document's end); every document is walked in
  lockstep, one chunk per step, so the loop runs max(chunks per document) times.
  """
  o = np.asarray(offsets, np.int64)
  first = np.asarray(doc_first, np.int64)
  # Sentence index one past the last that fits, for a chunk starting at each sentence.
  fits = np.searchsorted(o, o[:-1] + (max_seq_length - 2), side="right") - 1
  doc_end = np.repeat(first[1:], np.diff(first))  # per sentence: its document's end
  nxt = np.minimum(np.maximum(fits, np.arange(len(o) - 1) + 1), doc_end)
  cur, end = first[:-1], first[1:]
  starts = []
  while True:
    live = cur < end
    if not live.any():
      break
    cur, end = cur[live], end[live]
    starts.append(cur)
    cur = nxt[cur]
  s0 = np.sort(np.concatenate(starts)) if starts else np.zeros([0], np.int64)
  s1 = nxt[s0]
  a0, a1 = o[s0], o[s1]
  return np.stack([a0, a1, a1, a1, np.zeros_like(a0)], axis=1)


def concat_ranges(starts, lengths):
  """Concatenated aranges [starts[i], starts[i] + lengths[i])."""
  lengths = np.asarray(lengths, np.int64)
  total = int(lengths.sum())
  if total == 0:
    return np.zeros([0], np.int64)
  offs = np.cumsum(lengths) - lengths
  return np.repeat(np.asarray(starts, np.int64) - offs, lengths) + np.arange(total)


def build_rows(corpus: TokenizedCorpus, *, kind: str, max_seq_length: int,
               short_seq_prob: float, pack: bool, specials: Specials, seed: int, epoch: int,
               stats: dict | None = None,
               row_order: Callable[[int], np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """All rows of one epoch over `corpus`, in document order, or in the order
  `row_order(num_rows)` (a permutation: row i of the result is row_order(n)[i] of the
  document order), which costs nothing extra when rows are not packed."""
  if kind not in INSTANCE_KINDS:
    raise ValueError(f"config.data.instances={kind!r}; choose one of {INSTANCE_KINDS}.")
  stats = stats if stats is not None else {}
  L = max_seq_length
  offsets, doc_first = _split_offsets(corpus, L - 3, stats)
  keys = doc_keys(seed, epoch, corpus.doc_ids)
  if kind == "full_sentences":
    inst = _full_sentence_instances(offsets, doc_first, L)
  elif kind == "segments":
    inst = _segment_instances(offsets, doc_first, keys, L)
  else:
    inst = _pair_instances(offsets, doc_first, keys, kind, L, short_seq_prob, stats)
  if not pack and row_order is not None:
    inst = inst[row_order(len(inst))]
  a0, a1, b0, b1, label = inst.T
  la, lb = a1 - a0, b1 - b0
  hasb = lb > 0
  n = la + 2 + np.where(hasb, lb + 1, 0)
  if not pack and n.sum() >= DENSE_FILL_MIN * len(n) * L:
    stats["rows"] = stats.get("rows", 0) + len(n)
    stats["instances"] = stats.get("instances", 0) + len(n)
    return _fill_rows(corpus.tokens, inst, L, specials)
  # Rows: each instance is [CLS] a [SEP] (b [SEP]); packing puts several in one row.
  if pack:
    row = np.zeros(len(n), np.int64)
    off = np.zeros(len(n), np.int64)
    k_in_row = np.zeros(len(n), np.int64)
    r, used, k = -1, L, 0
    for t, m in enumerate(n.tolist()):
      if used + m > L:
        r, used, k = r + 1, 0, 0
      row[t], off[t], k_in_row[t] = r, used, k
      used += m
      k += 1
    N = r + 1
  else:
    row, off, k_in_row = np.arange(len(n)), np.zeros(len(n), np.int64), np.zeros(len(n), np.int64)
    N = len(n)
  out = {k: np.zeros([N, L], np.int32) for k in
         ("input_ids", "input_mask", "token_type_ids", "segment_ids", "position_ids")}
  ids = out["input_ids"]
  ids[:] = specials.pad_id
  # Token ranges -> row cells, all at once.
  ids[row, off] = specials.cls_id
  ra = np.repeat(row, la)
  ids[ra, concat_ranges(off + 1, la)] = corpus.tokens[concat_ranges(a0, la)]
  ids[row, off + 1 + la] = specials.sep_id
  rb = np.repeat(row, lb)
  cb = concat_ranges(off + 2 + la, lb)
  ids[rb, cb] = corpus.tokens[concat_ranges(b0, lb)]
  out["token_type_ids"][rb, cb] = 1
  ids[row[hasb], (off + 2 + la + lb)[hasb]] = specials.sep_id
  out["token_type_ids"][row[hasb], (off + 2 + la + lb)[hasb]] = 1
  rn, cn = np.repeat(row, n), concat_ranges(off, n)
  out["input_mask"][rn, cn] = 1
  out["segment_ids"][rn, cn] = np.repeat(k_in_row + 1, n)
  if pack:
    out["position_ids"][rn, cn] = cn - np.repeat(off, n)
  else:
    out["position_ids"][:] = np.arange(L)[None, :]
  labels = np.zeros([N], np.int32)
  labels[row] = label  # one label per row (packing is refused for nsp/sop)
  out["next_sentence_labels"] = labels
  stats["rows"] = stats.get("rows", 0) + N
  stats["instances"] = stats.get("instances", 0) + len(n)
  if pack and row_order is not None:
    perm = row_order(N)
    out = {k: v[perm] for k, v in out.items()}
  return out


def _fill_rows(tokens, inst, L: int, specials: Specials) -> dict[str, np.ndarray]:
  """One instance per row, [CLS] a [SEP] (b [SEP]) then padding: dense [N, L] passes
  (a gather of token ids and a few selects), several times faster than scattering."""
  a0, a1, b0, b1, label = (x[:, None] for x in inst.T)
  la, lb = a1 - a0, b1 - b0
  hasb = lb > 0
  n = la + 2 + np.where(hasb, lb + 1, 0)
  col = np.arange(L, dtype=np.int64)[None, :]
  in_a = col <= la  # columns 1..la hold A (column 0 is [CLS])
  src = np.where(in_a, a0 - 1 + col, b0 - la - 2 + col)
  ids = np.take(tokens, src, mode="clip").astype(np.int32, copy=False)  # fixed up below
  sep = (col == la + 1) | (hasb & (col == n - 1))
  ids[sep] = specials.sep_id
  ids[:, 0] = specials.cls_id
  mask = col < n
  ids[~mask] = specials.pad_id
  input_mask = mask.astype(np.int32)
  return {
      "input_ids": ids,
      "input_mask": input_mask,
      "token_type_ids": (mask & (col > la + 1)).astype(np.int32),
      "segment_ids": input_mask.copy(),
      "position_ids": np.broadcast_to(np.arange(L, dtype=np.int32), (len(inst), L)).copy(),
      "next_sentence_labels": label[:, 0].astype(np.int32),
  }
