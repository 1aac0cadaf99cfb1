"""Tokenized corpora and pretraining instances (numpy, host side).

A `TokenizedCorpus` holds documents as flat int32 tokens with sentence and document
offsets. `build_rows` turns a set of documents into fixed-length rows for one epoch:
every random draw uses a numpy Generator keyed by (seed, epoch, global document id),
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
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

INSTANCE_KINDS = ("nsp", "sop", "segments", "full_sentences")


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
    enc = tokenizer.encode_batch(flat) if flat else []
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


def _truncate_pair(a: list, b: list, max_tokens: int, rng) -> None:
  """The reference's truncate_seq_pair: trim the longer side, randomly front or back."""
  while len(a) + len(b) > max_tokens:
    t = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del t[0]
    else:
      t.pop()


def _split_long(doc: list[np.ndarray], max_len: int, stats: dict) -> list[np.ndarray]:
  out = []
  for s in doc:
    if len(s) > max_len:
      stats["split_long_sentences"] = stats.get("split_long_sentences", 0) + 1
      out.extend(s[i:i + max_len] for i in range(0, len(s), max_len))
    else:
      out.append(s)
  return out


def _pair_instances(corpus, i, doc, kind, max_seq_length, short_seq_prob, rng, stats):
  """BERT NSP / ALBERT SOP instances of one document: list of (a, b, label)."""
  max_tokens = max_seq_length - 3
  target = max_tokens
  if rng.random() < short_seq_prob:
    target = int(rng.integers(2, max_tokens + 1))
  out = []
  chunk, length, j = [], 0, 0
  while j < len(doc):
    chunk.append(doc[j])
    length += len(doc[j])
    if j == len(doc) - 1 or length >= target:
      a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
      a = [t for s in chunk[:a_end] for t in s.tolist()]
      b: list = []
      label = 0
      split_inside = len(chunk) == 1 and len(a) >= 2
      if split_inside:
        # One-sentence chunk: A and B are its two parts (the reference forces a random
        # B here, which pushes NSP labels well over 50% on long-sentence corpora).
        cut = int(rng.integers(1, len(a)))
        a, b = a[:cut], a[cut:]
      if kind == "nsp" and ((len(chunk) == 1 and not split_inside) or rng.random() < 0.5):
        b = []
        label = 1
        if corpus.num_docs > 1:
          for _ in range(10):
            r = int(rng.integers(0, corpus.num_docs))
            if r != i:
              break
          rdoc = corpus.document(r)
          start = int(rng.integers(0, len(rdoc)))
          for s in rdoc[start:]:
            b.extend(s.tolist())
            if len(b) >= target - len(a):
              break
        # Put the unused sentences back (the reference's rewind).
        j -= len(chunk) - a_end
      else:
        if not split_inside:
          b = [t for s in chunk[a_end:] for t in s.tolist()]
        if kind == "sop" and rng.random() < 0.5:
          a, b, label = b, a, 1
      _truncate_pair(a, b, max_tokens, rng)
      if a and b:
        out.append((a, b, label))
      else:
        stats["skipped_chunks"] = stats.get("skipped_chunks", 0) + 1
      chunk, length = [], 0
    j += 1
  return out


def _segment_instances(doc, max_seq_length, rng):
  """ELECTRA's ExampleBuilder on one document: list of (a, b, 0)."""
  out = []
  target = max_seq_length
  sents, length = [], 0

  def make():
    first_target = 100_000 if rng.random() < 0.1 else (target - 3) // 2
    a, b = [], []
    for s in sents:
      s = s.tolist()
      if (not a or len(a) + len(s) < first_target or
          (not b and len(a) < first_target and rng.random() < 0.5)):
        a += s
      else:
        b += s
    a = a[:max_seq_length - 2]
    b = b[:max(0, max_seq_length - len(a) - 3)]
    return a, b, 0

  for s in doc:
    sents.append(s)
    length += len(s)
    if length >= target:
      out.append(make())
      sents, length = [], 0
      target = int(rng.integers(5, max_seq_length + 1)) if rng.random() < 0.05 else max_seq_length
  if sents:
    out.append(make())
  return out


def _full_sentence_instances(doc, max_seq_length):
  out, cur = [], []
  for s in doc:
    if cur and len(cur) + len(s) > max_seq_length - 2:
      out.append((cur, [], 0))
      cur = []
    cur = cur + s.tolist()
  if cur:
    out.append((cur, [], 0))
  return out


def build_rows(corpus: TokenizedCorpus, *, kind: str, max_seq_length: int,
               short_seq_prob: float, pack: bool, specials: Specials, seed: int, epoch: int,
               stats: dict | None = None) -> dict[str, np.ndarray]:
  """All rows of one epoch over `corpus`, in document order (the caller shuffles)."""
  if kind not in INSTANCE_KINDS:
    raise ValueError(f"config.data.instances={kind!r}; choose one of {INSTANCE_KINDS}.")
  stats = stats if stats is not None else {}
  L = max_seq_length
  insts = []
  for i in range(corpus.num_docs):
    rng = np.random.default_rng([seed, epoch, int(corpus.doc_ids[i])])
    doc = _split_long(corpus.document(i), L - 3, stats)
    if kind in ("nsp", "sop"):
      insts.extend(_pair_instances(corpus, i, doc, kind, L, short_seq_prob, rng, stats))
    elif kind == "segments":
      insts.extend(_segment_instances(doc, L, rng))
    else:
      insts.extend(_full_sentence_instances(doc, L))
  # Rows: each instance is [CLS] a [SEP] (b [SEP]); packing puts several in one row.
  rows: list[list[tuple]] = []
  used = L
  for a, b, label in insts:
    n = len(a) + 2 + (len(b) + 1 if b else 0)
    if pack and rows and used + n <= L:
      rows[-1].append((a, b, label))
      used += n
    else:
      rows.append([(a, b, label)])
      used = n
  N = len(rows)
  out = {k: np.zeros([N, L], np.int32) for k in
         ("input_ids", "input_mask", "token_type_ids", "segment_ids", "position_ids")}
  out["input_ids"][:] = specials.pad_id
  out["next_sentence_labels"] = np.zeros([N], np.int32)
  for r, row in enumerate(rows):
    p = 0
    for k, (a, b, label) in enumerate(row):
      toks = [specials.cls_id] + a + [specials.sep_id]
      types = [0] * len(toks)
      if b:
        toks += b + [specials.sep_id]
        types += [1] * (len(b) + 1)
      n = len(toks)
      out["input_ids"][r, p:p + n] = toks
      out["token_type_ids"][r, p:p + n] = types
      out["segment_ids"][r, p:p + n] = k + 1
      out["position_ids"][r, p:p + n] = np.arange(n)
      out["next_sentence_labels"][r] = label
      p += n
    out["input_mask"][r, :p] = 1
  if not pack:
    out["position_ids"][:] = np.arange(L)[None, :]
  stats["rows"] = stats.get("rows", 0) + N
  stats["instances"] = stats.get("instances", 0) + len(insts)
  return out
