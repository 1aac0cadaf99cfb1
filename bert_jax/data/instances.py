"""Tokenized corpora and pretraining instances (numpy, host side).

A `TokenizedCorpus` holds documents as flat int32 tokens with sentence and document
offsets. `build_rows` turns a set of documents into fixed-length rows for one epoch:
every random draw uses a generator keyed by (seed, epoch, global document id),
so rows do not depend on host count or on other documents' draws (except the
random-next document of NSP, drawn from the same document set).

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

nsp, sop and segments walk each document in Python (per-document random draws);
full_sentences is computed for all documents at once in numpy. Unpacked rows are
written by dense [N, L] passes (or scattered when rows are mostly padding), already in
the caller's shuffled order (`row_order`).
"""

from __future__ import annotations

import dataclasses
import random
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


def _truncate_pair(a0, a1, b0, b1, max_tokens, rng):
  """The reference's truncate_seq_pair in closed form: trim the longer side one token at a
  time (ties trim B), each token from the front or the back with probability 1/2."""
  la, lb = a1 - a0, b1 - b0
  excess = la + lb - max_tokens
  if excess <= 0:
    return a0, a1, b0, b1
  if abs(la - lb) >= excess:
    na, nb = (la - excess, lb) if la > lb else (la, lb - excess)
  else:
    na, nb = (max_tokens + 1) // 2, max_tokens // 2
  ka, kb = la - na, lb - nb
  # Binomial(k, 1/2) front removals: the number of set bits among k random bits.
  fa = bin(rng.getrandbits(ka)).count("1") if ka else 0
  fb = bin(rng.getrandbits(kb)).count("1") if kb else 0
  return a0 + fa, a1 - (ka - fa), b0 + fb, b1 - (kb - fb)


def _split_offsets(corpus, max_len, stats):
  """Sentence offsets (python list) with sentences over max_len cut into pieces, and the
  per-document index into them (python list)."""
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
  return o.tolist(), docs.tolist()


def _rng(seed: int, epoch: int, doc_id: int) -> random.Random:
  # Python's Random: seeding and scalar draws are ~10x cheaper than numpy Generators here.
  # The key is mixed into 64 bits (seeding cost grows with the key's size).
  k = (seed * 0x9E3779B97F4A7C15 + epoch * 0xC2B2AE3D27D4EB4F + doc_id * 0x165667B19E3779F9)
  return random.Random(k & 0xFFFFFFFFFFFFFFFF)


def _randint(rng: random.Random, lo: int, hi: int) -> int:
  """Uniform in [lo, hi) (bias below 2**-50; randrange's rejection loop is slower)."""
  return lo + int(rng.random() * (hi - lo))


def _pair_instances(corpus, i, o, kind, max_seq_length, short_seq_prob, rng, stats, out,
                    bounds_of):
  """BERT NSP / ALBERT SOP instances of one document (o: its sentence offsets)."""
  max_tokens = max_seq_length - 3
  target = max_tokens
  if rng.random() < short_seq_prob:
    target = _randint(rng, 2, max_tokens + 1)
  n_sent = len(o) - 1
  first, j = 0, 0   # current chunk: sentences first..j
  while j < n_sent:
    length = o[j + 1] - o[first]
    if j == n_sent - 1 or length >= target:
      n_chunk = j + 1 - first
      a_end = first + (_randint(rng, 1, n_chunk) if n_chunk >= 2 else 1)
      a0, a1 = o[first], o[a_end]
      b0 = b1 = o[a_end]
      b0, b1 = o[a_end], o[j + 1]
      label = 0
      split_inside = n_chunk == 1 and a1 - a0 >= 2
      if split_inside:
        # One-sentence chunk: A and B are its two parts (the reference forces a random
        # B here, which pushes NSP labels well over 50% on long-sentence corpora).
        cut = a0 + _randint(rng, 1, a1 - a0)
        a1, b0, b1 = cut, cut, a1
      if kind == "nsp" and ((n_chunk == 1 and not split_inside) or rng.random() < 0.5):
        label = 1
        b0 = b1 = 0
        if corpus.num_docs > 1:
          for _ in range(10):
            r = _randint(rng, 0, corpus.num_docs)
            if r != i:
              break
          ro = bounds_of(r)
          start = _randint(rng, 0, len(ro) - 1)
          need = target - (a1 - a0)
          k = start + 1
          while k < len(ro) - 1 and ro[k] - ro[start] < need:
            k += 1
          b0, b1 = ro[start], ro[k]
        # Put the unused sentences back (the reference's rewind).
        if not split_inside:
          j = a_end - 1
      elif kind == "sop" and rng.random() < 0.5:
        a0, a1, b0, b1, label = b0, b1, a0, a1, 1
      a0, a1, b0, b1 = _truncate_pair(a0, a1, b0, b1, max_tokens, rng)
      if a1 > a0 and b1 > b0:
        out.append((a0, a1, b0, b1, label))
      else:
        stats["skipped_chunks"] = stats.get("skipped_chunks", 0) + 1
      first = j + 1
    j += 1


def _segment_instances(o, max_seq_length, rng, out):
  """ELECTRA's ExampleBuilder on one document. Once the second segment has started, later
  sentences stay in it (the reference may move a short one back into the first)."""
  target = max_seq_length
  first, n_sent = 0, len(o) - 1

  def make(s_from, s_to):
    first_target = 100_000 if rng.random() < 0.1 else (target - 3) // 2
    cut = s_to
    for k in range(s_from, s_to):
      la = o[k] - o[s_from]
      if not (la == 0 or la + o[k + 1] - o[k] < first_target or
              (la < first_target and rng.random() < 0.5)):
        cut = k
        break
    a0, a1 = o[s_from], min(o[cut], o[s_from] + max_seq_length - 2)
    b0 = o[cut]
    b1 = min(o[s_to], b0 + max(0, max_seq_length - (a1 - a0) - 3))
    out.append((a0, a1, b0, b1 if b1 > b0 else b0, 0))

  for j in range(n_sent):
    if o[j + 1] - o[first] >= target:
      make(first, j + 1)
      first = j + 1
      target = (_randint(rng, 5, max_seq_length + 1) if rng.random() < 0.05
                else max_seq_length)
  if first < n_sent:
    make(first, n_sent)


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
  bounds_of = lambda i: offsets[doc_first[i]:doc_first[i + 1] + 1]
  insts: list[tuple] = []
  if kind == "full_sentences":
    inst = _full_sentence_instances(offsets, doc_first, L)
  else:
    for i in range(corpus.num_docs):
      o = bounds_of(i)
      if kind in ("nsp", "sop"):
        rng = _rng(seed, epoch, int(corpus.doc_ids[i]))
        _pair_instances(corpus, i, o, kind, L, short_seq_prob, rng, stats, insts, bounds_of)
      else:
        _segment_instances(o, L, _rng(seed, epoch, int(corpus.doc_ids[i])), insts)
    inst = np.asarray(insts, np.int64).reshape(-1, 5)
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
