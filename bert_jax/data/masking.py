"""Dynamic MLM masking in TF ops, vectorized over a batch.

All randomness comes from a counter-based hash of (example key, stream, position),
where the example key is derived from (seed, epoch, example index) in the pipeline.
So the masks of an example do not depend on the batch it lands in, on the number of
parallel calls, or on where a resumed run starts.

Strategies (config.data.masking):
  token       BERT: num_to_predict random non-special tokens.
  whole_word  all pieces of randomly chosen words (a word never split).
  ngram       ALBERT: n words, p(n) from ngram_weights (default 1/n), n <= ngram_max;
              n drawn among the lengths that fit the budget somewhere without
              overlapping earlier n-grams (`_select_spans`).
  span        SpanBERT: span length in words ~ Geometric(span_p) truncated at span_max
              (drawn the same way).
  electra     token masking with 85% [MASK] / 15% kept / no random tokens.
The budget per row is min(max_predictions_per_seq, max(1, round(mask_rate * n))) with n
the number of maskable (non-special, non-padding) tokens.

Decoupled rates (Wettig et al. 2022, "Should You Mask 15% in Masked Language Modeling?"):
mask_rate is the share of maskable tokens PREDICTED, corrupt_rate (0: = mask_rate) the share
CORRUPTED (given to the [MASK] / random / keep split). With different rates the strategy
selects max(both) tokens, and the smaller set is a random subset of its tokens: corrupt more
than predicted (corrupted tokens outside the prediction slots are never predicted), or predict
more than corrupted (the extra predicted tokens are left intact, like "keep"). The corruption
budget is capped in proportion to the prediction slots:
ceil(max_predictions_per_seq * corrupt_rate / mask_rate).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from bert_jax.data import checks

# Defined (TF-free) in checks, which validates config.data.masking before anything is built.
STRATEGIES = checks.MASKING_STRATEGIES
# Masked under XLA by the pipeline (a fused while_loop); the others in TF's kernels.
XLA_STRATEGIES = ("ngram", "span")

# Streams of the hash RNG (any distinct constants).
_S_SCORE, _S_REPLACE, _S_START, _S_LENGTH = 1, 2, 1000, 500_000
_S_SUBSET = 3  # decoupled rates: which selected tokens form the smaller set
# Bit set on a token id by tokenizers.Tokenizer.encode_for_masking where a word segmenter
# (jieba) says the token continues a word; mask_batch strips it (= tokenizers.WORD_CONTINUES).
WORD_CONTINUES = 1 << 30


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  """Everything masking needs, resolved from the config and the tokenizer."""
  strategy: str
  mask_rate: float
  max_predictions: int
  mask_prob: float
  random_prob: float
  length_probs: tuple[float, ...]   # p(n words), n = 1..len; (1.0,) for whole_word
  special_ids: tuple[int, ...]
  mask_id: int
  is_word_start: np.ndarray         # bool [vocab]
  random_ids: np.ndarray            # int32 ids allowed as random replacements
  corrupt_rate: float = 0.0         # share corrupted; 0: = mask_rate (not decoupled)
  max_corrupt: int = 0              # cap of the corruption budget (0: max_predictions)

  @property
  def decoupled(self) -> bool:
    return bool(self.corrupt_rate) and self.corrupt_rate != self.mask_rate


def spec_from_config(data_config, tokenizer) -> MaskingSpec:
  """Validates the masking keys of config.data and resolves them (cheap, raises early)."""
  c = data_config
  checks.masking(c)  # raises naming the key; also run before anything is built (train.validate)
  corrupt = float(c.get("corrupt_rate", 0.0) or 0.0)
  mask_p, rand_p = c.mask_token_prob, c.random_token_prob  # keep: the rest
  if c.masking == "electra":
    mask_p, rand_p = 0.85, 0.0  # 15% kept
  length_probs = checks.length_probs(c)
  specials = tuple(sorted(set(int(i) for i in tokenizer.special_ids)))
  vocab = tokenizer.vocab_size
  if c.random_token_range == "non_special":
    random_ids = np.setdiff1d(np.arange(vocab), np.array(specials)).astype(np.int32)
  else:  # "all" (checks.masking allows no other)
    random_ids = np.arange(vocab, dtype=np.int32)
  return MaskingSpec(
      strategy=c.masking, mask_rate=float(c.mask_rate),
      max_predictions=int(c.max_predictions_per_seq), mask_prob=float(mask_p),
      random_prob=float(rand_p), length_probs=length_probs, special_ids=specials,
      mask_id=int(tokenizer.mask_id), is_word_start=np.asarray(tokenizer.is_word_start, bool),
      random_ids=random_ids, corrupt_rate=corrupt if corrupt != c.mask_rate else 0.0,
      max_corrupt=min(int(c.max_seq_length), int(np.ceil(
          c.max_predictions_per_seq * corrupt / c.mask_rate - 1e-9))) if corrupt else 0)


# ----------------------------------------------------------------------------- hash RNG

def _fmix(x):
  """murmur3's 32-bit finalizer: a bijective avalanche mix of uint32 values."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
  x = x * tf.constant(0x85EBCA6B, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
  x = x * tf.constant(0xC2B2AE35, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def hash_bits(keys, stream, n: int):
  """[B, n] uint32 hashes of (keys[b] (uint32), stream, column)."""
  stream = tf.cast(stream, tf.uint32)
  col = tf.cast(tf.range(n), tf.uint32) * tf.constant(0x9E3779B9, tf.uint32)
  # The inner mix is a constant when stream is a Python int (folded by the graph).
  return _fmix(keys[:, None] ^ _fmix(col[None, :] + stream * tf.constant(0x632BE5AB, tf.uint32)))


def uniform(keys, stream, n: int):
  """[B, n] float32 uniforms in [0, 1) keyed by (keys[b] (uint32), stream, column)."""
  h = hash_bits(keys, stream, n)
  return tf.cast(tf.bitwise.right_shift(h, 8), tf.float32) * (1.0 / (1 << 24))


def example_keys(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
  """uint32 key per example from (seed, epoch, example index) (numpy, host side)."""
  def fmix(x):
    x = x.astype(np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    x ^= x >> 16
    return x
  base = fmix(fmix(np.array(seed, np.uint64) & 0xFFFFFFFF) ^ np.array(epoch * 0x27D4EB2F,
                                                                      np.uint64))
  idx = np.asarray(indices, np.uint64)
  # Indices above 2**32 fold their high word in.
  return fmix(base ^ fmix(idx & 0xFFFFFFFF) ^ fmix((idx >> 32) + 0x165667B1)).astype(np.uint32)


# ----------------------------------------------------------------------------- strategies

def _budget(spec: MaskingSpec, n_cand, rate: float | None = None, cap: int | None = None):
  rate = spec.mask_rate if rate is None else rate
  n = tf.cast(tf.round(tf.cast(n_cand, tf.float32) * rate), tf.int32)
  n = tf.minimum(spec.max_predictions if cap is None else cap, tf.maximum(1, n))
  return tf.where(n_cand > 0, n, 0)


def _word_ids(spec: MaskingSpec, ids, cand):
  """Word index per maskable token (-1 elsewhere): new word at a word-start piece or after
  any non-maskable token, so words never cross [SEP] or padding. `ids` may carry the
  WORD_CONTINUES flag of a word segmenter (Chinese whole words): a flagged piece never
  starts a word."""
  ws = tf.gather(tf.constant(spec.is_word_start), tf.bitwise.bitwise_and(ids, WORD_CONTINUES - 1))
  ws &= tf.bitwise.bitwise_and(ids, WORD_CONTINUES) == 0
  prev_cand = tf.pad(cand[:, :-1], [[0, 0], [1, 0]])
  start = cand & (ws | ~prev_cand)
  wid = tf.cumsum(tf.cast(start, tf.int32), axis=1) - 1
  return tf.where(cand, wid, -1)


def _in_width_buckets(fn, width, arrays, min_width: int):
  """fn(W, *arrays cut to W columns) on buckets of rows by `width` ([B]: the columns that
  matter in each row), W = min_width, 2 * min_width, ..., L: the row-wise sorts below cost
  W log W per row, and most rows are much shorter than L. `arrays` are [B, L] or [B];
  fn returns [b, ...] tensors, which come back in row order."""
  B, L = tf.shape(width)[0], arrays[0].shape[1]
  widths = [L]
  while widths[0] // 2 >= min_width:
    widths.insert(0, widths[0] // 2)
  bucket = tf.add_n([tf.cast(width > w, tf.int32) for w in widths[:-1]] + [tf.zeros_like(width)])
  rows = tf.dynamic_partition(tf.range(B), bucket, len(widths))
  outs = [fn(w, *(tf.gather(a, r)[:, :w] if a.shape.rank == 2 else tf.gather(a, r)
                  for a in arrays)) for w, r in zip(widths, rows)]
  return [tf.dynamic_stitch(rows, list(o)) for o in zip(*outs)]


def _select_tokens(spec, keys, cand, budget, k: int | None = None, stream: int = _S_SCORE):
  """The first `budget` maskable tokens in a random order: [B, k] positions and validity
  (k: the largest budget, default max_predictions)."""
  L = cand.shape[1]
  k = k or spec.max_predictions
  pos_bits = max(1, int(np.ceil(np.log2(L))))
  # Unique int32 scores (random high bits, position low bits): no ties at the threshold.
  h = tf.bitwise.right_shift(hash_bits(keys, stream, L), pos_bits + 1)
  score = tf.bitwise.bitwise_or(tf.bitwise.left_shift(tf.cast(h, tf.int32), pos_bits),
                                tf.range(L)[None, :])
  score = tf.where(cand, score, -1)
  if spec.strategy in XLA_STRATEGIES:  # static shapes only
    vals, idx = tf.math.top_k(score, k=k, sorted=True)
  else:  # by buckets of rows (columns past a row's last candidate only hold -1 scores)
    last = tf.reduce_max(tf.where(cand, tf.range(L)[None, :] + 1, 0), axis=1)
    vals, idx = _in_width_buckets(lambda w, x: tf.math.top_k(x, k=k, sorted=True), last,
                                  [score], max(32, k))
  ok = (tf.range(k)[None, :] < budget[:, None]) & (vals >= 0)
  # Selected tokens: scores at or above the budget-th best (scores are unique).
  kth = tf.gather(vals, tf.maximum(budget - 1, 0), batch_dims=1)
  selected = cand & (score >= kth[:, None]) & (budget > 0)[:, None]
  return idx, ok, selected


def _first_positions(selected, P: int, xla: bool):
  """Columns of the first P selected tokens per row, increasing; L where fewer.

  The (k+1)-th selected column is the number of columns whose running count of selected
  tokens is <= k: tf.searchsorted in TF's kernels (4x cheaper than a sort of [B, L]), a
  binary search by flat gathers under XLA (where searchsorted is 10x slower).
  """
  L = selected.shape[1]
  cs = tf.cumsum(tf.cast(selected, tf.int32), axis=1)  # nondecreasing per row
  k = tf.range(P)[None, :] + tf.zeros_like(cs[:, :1])
  if not xla:
    return tf.searchsorted(cs, k, side="right")
  flat = tf.reshape(cs, [-1])
  base = (tf.range(tf.shape(cs)[0]) * L)[:, None]
  lo = tf.zeros_like(k)
  step = 1 << (L.bit_length() - 1)
  while step:
    probe = lo + step
    val = tf.gather(flat, base + tf.minimum(probe, L) - 1)
    lo = tf.where((probe <= L) & (val <= k), probe, lo)
    step >>= 1
  return lo


def _select_whole_words(spec, keys, cand, wid, budget, min_width: int = 32):
  """Random words in random order, each taken if it still fits (BERT's whole-word rule,
  done as vectorized greedy passes, `_greedy_words`).

  The random order is a sort, the costly part, so rows are sorted in buckets by word count
  (`_in_width_buckets`), each over its width only: the masks are those of one sort over all
  L columns (the scores are keyed by word index; words past a row's last never come first).
  """
  L = cand.shape[1]
  wlen = _word_lengths(cand, wid)
  n_words = tf.reduce_max(wid, axis=1) + 1
  greedy = lambda w, *a: [tf.pad(_greedy_words(*a), [[0, 0], [0, L - w]])]
  word_taken, = _in_width_buckets(greedy, n_words, [uniform(keys, _S_SCORE, L), wlen, n_words,
                                                    budget], min_width)
  return tf.gather(word_taken, tf.maximum(wid, 0), batch_dims=1) & cand


def _greedy_words(score, wlen, n_words, budget, passes: int = 3):
  """[b, W] words taken: words in decreasing score, each taken if it still fits the budget,
  as `passes` greedy passes (each takes the longest prefix of the fitting words that fits)."""
  b, W = tf.shape(score)[0], score.shape[1]
  exists = tf.range(W)[None, :] < n_words[:, None]
  order = tf.argsort(tf.where(exists, score, -1.0), axis=1, direction="DESCENDING")
  slen = tf.gather(wlen, order, batch_dims=1)
  sexists = tf.gather(exists, order, batch_dims=1)
  taken = tf.zeros_like(sexists)
  rem = budget
  for _ in range(passes):
    avail = sexists & ~taken & (slen <= rem[:, None])
    csum = tf.cumsum(tf.where(avail, slen, 0), axis=1)
    new = avail & (csum <= rem[:, None])
    taken |= new
    rem -= tf.reduce_sum(tf.where(new, slen, 0), axis=1)
  # Back to word order: a scatter (3x cheaper than inverting the permutation by a sort).
  word_taken = tf.math.unsorted_segment_max(tf.cast(taken, tf.int32),
                                            order + tf.range(b)[:, None] * W, b * W)
  return tf.reshape(word_taken, [b, W]) > 0


def _word_lengths(cand, wid):
  """Tokens per word, indexed by word id: [B, L] (0 past the last word)."""
  B, L = tf.shape(cand)[0], cand.shape[1]
  seg = tf.where(cand, wid + tf.range(B)[:, None] * L, B * L)
  return tf.reshape(tf.math.unsorted_segment_sum(tf.ones_like(wid), seg, B * L + 1)[:-1], [B, L])


def _select_spans(spec, keys, cand, wid, budget):
  """Spans of n whole words until the budget is met (ALBERT n-grams, SpanBERT spans).

  Each round, every row places one span: n ~ length_probs restricted to the lengths that fit
  somewhere (n uncovered words within the remaining budget), then a start uniformly among the
  word positions where n such words fit. This is the distribution of "draw n, redraw until a
  place exists" without the redraws, so a row needs one round per span and the loop ends when
  no uncovered word fits; the realized lengths follow length_probs as far as the budget allows.
  It replaces that rejection loop (3-4x the rounds; past half its round limit it shortened the
  drawn n instead), so masks differ from before once a row's longest place is shorter than
  n_max (the same hash streams, used differently), with the same length statistics
  (tests/test_masking.py). The fit of every (start, n) is one compare with precomputed token
  counts, and the uncovered runs are updated in place, so a round costs O(L * n_max) compares.
  """
  B, L = tf.shape(cand)[0], cand.shape[1]
  n_max = len(spec.length_probs)
  cdf = tf.constant(np.cumsum(spec.length_probs), tf.float32)
  n_words = tf.reduce_max(wid, axis=1) + 1
  wlen = _word_lengths(cand, wid)
  cs = tf.cumsum(wlen, axis=1)
  w = tf.range(L)[None, :]
  # tokens[n - 1, b, w]: tokens of the n words from w, over any budget where they don't
  # all exist (fixed: the loop only compares it with the remaining budget). n leads, so the
  # count below adds n_max [B, L] slabs (a reduction over a minor axis of 10 vectorizes
  # badly on CPU).
  ends = tf.stack([tf.pad(cs[:, k:], [[0, 0], [0, k]]) for k in range(n_max)], axis=0)
  n_col = tf.range(1, n_max + 1)[:, None, None]
  tokens = tf.where(w[None] + n_col <= n_words[None, :, None], ends - (cs - wlen)[None], L + 1)

  def body(r, wcov, run, used, hist, go):
    del go
    rem = budget - used
    # longest[w]: the most words (up to n_max) from w that are all uncovered (run) and fit
    # the remaining budget.
    fit = tf.reduce_sum(tf.cast(tokens <= rem[None, :, None], tf.int32), axis=0)
    longest = tf.minimum(run, fit)
    top = tf.reduce_max(longest, axis=1)
    ok = top > 0
    # n ~ length_probs restricted to 1..top (inverse cdf of the truncated distribution).
    u = uniform(keys, _S_LENGTH + r, 1)[:, 0] * tf.gather(cdf, tf.maximum(top - 1, 0))
    n = tf.minimum(1 + tf.reduce_sum(tf.cast(u[:, None] >= cdf[None, :-1], tf.int32), axis=1),
                   tf.maximum(top, 1))
    score = tf.where(longest >= n[:, None], uniform(keys, _S_START + r, L), -1.0)
    w0 = tf.argmax(score, axis=1, output_type=tf.int32)
    w0 = tf.where(ok, w0, L)[:, None]  # rows without a place cover nothing
    w1 = w0 + n[:, None]
    span = (w >= w0) & (w < w1)
    # Runs before the span now end at it.
    run = tf.where(w < w0, tf.minimum(run, w0 - w), tf.where(span, 0, run))
    used += tf.reduce_sum(tf.where(span, wlen, 0), axis=1)
    hist += tf.reduce_sum(tf.one_hot(tf.where(ok, n - 1, -1), n_max, dtype=tf.int32), axis=0)
    return r + 1, wcov | span, run, used, hist, tf.reduce_any(ok)

  # A round that places nothing anywhere ends the loop: one idle last round instead of a
  # separate "does any uncovered word fit" test before every round (a quarter of the loop's
  # time on CPU).
  cond = lambda *state: state[-1]
  run = tf.clip_by_value(n_words[:, None] - w, 0, n_max)  # nothing covered yet
  init = (tf.constant(0), tf.zeros_like(cand), run, tf.zeros([B], tf.int32),
          tf.zeros([n_max], tf.int32), tf.constant(True))
  _, wcov, _, _, hist, _ = tf.while_loop(cond, body, init)
  return tf.gather(wcov, tf.maximum(wid, 0), batch_dims=1) & cand, hist


def _is_any(ids, values, vocab: int):
  """ids in `values` ([B, L] bool): a few comparisons, or a table lookup for many."""
  if len(values) <= 8:
    out = tf.zeros_like(ids, tf.bool)
    for v in values:
      out |= tf.equal(ids, v)
    return out
  table = np.zeros(vocab, bool)
  table[list(values)] = True
  return tf.gather(tf.constant(table), ids)


def _take_random_ids(random_ids: np.ndarray, vocab: int, i):
  """random_ids[i]. When random_ids is range(vocab) minus a few ids (the usual case) this
  is i shifted past each left-out id in increasing order, cheaper than a gather."""
  gaps = np.setdiff1d(np.arange(vocab), random_ids)
  if len(gaps) > 8 or not np.array_equal(random_ids, np.setdiff1d(np.arange(vocab), gaps)):
    return tf.gather(tf.constant(random_ids), i)
  for g in gaps.tolist():  # sorted: after each shift, i counts ids below g correctly
    i += tf.cast(i >= g, i.dtype)
  return i


def _select_union(spec, keys, cand, ids, budget, out: dict):
  """Decoupled rates: the tokens the strategy selects with the larger of the two budgets."""
  if spec.strategy in ("token", "electra"):
    return _select_tokens(spec, keys, cand, budget, max(spec.max_predictions, spec.max_corrupt))[2]
  wid = _word_ids(spec, ids, cand)
  if spec.strategy == "whole_word":
    return _select_whole_words(spec, keys, cand, wid, budget)
  selected, out["span_length_hist"] = _select_spans(spec, keys, cand, wid, budget)
  return selected


def mask_batch(spec: MaskingSpec, batch: dict, keys) -> dict:
  """Adds masked_lm_{positions,ids,weights} and replaces input_ids (TF, batched).

  batch: input_ids/input_mask [B, L] int32; keys: [B] uint32 example keys.
  Also returns "span_length_hist" [len(length_probs)] (accepted spans per length, in
  words) for ngram/span, used by tests and statistics.
  """
  flagged = batch["input_ids"]  # word-continuation flags (if any) only decide the words
  ids = tf.bitwise.bitwise_and(flagged, WORD_CONTINUES - 1)
  L = ids.shape[1]
  P = spec.max_predictions
  is_special = _is_any(ids, spec.special_ids, len(spec.is_word_start))
  cand = (batch["input_mask"] > 0) & ~is_special
  n_cand = tf.reduce_sum(tf.cast(cand, tf.int32), axis=1)
  budget = _budget(spec, n_cand)
  out = dict(batch)
  if spec.decoupled:  # predictions and corruption of different sizes, the smaller nested
    corrupt_budget = _budget(spec, n_cand, spec.corrupt_rate, max(spec.max_corrupt, 1))
    selected = _select_union(spec, keys, cand, flagged, tf.maximum(budget, corrupt_budget), out)
    k = max(spec.max_predictions, spec.max_corrupt)
    sub = _select_tokens(spec, keys, selected, tf.minimum(budget, corrupt_budget), k,
                         _S_SUBSET)[2]
    more_corrupted = spec.corrupt_rate > spec.mask_rate
    predicted, selected = (sub, selected) if more_corrupted else (selected, sub)
    positions = _first_positions(predicted, P, xla=spec.strategy in XLA_STRATEGIES)
  elif spec.strategy in ("token", "electra"):
    idx, ok, selected = _select_tokens(spec, keys, cand, budget)
    positions = tf.sort(tf.where(ok, idx, L), axis=1)
  else:
    wid = _word_ids(spec, flagged, cand)
    if spec.strategy == "whole_word":
      selected = _select_whole_words(spec, keys, cand, wid, budget)
    else:
      selected, out["span_length_hist"] = _select_spans(spec, keys, cand, wid, budget)
    # Positions in increasing order (selected never holds more than P tokens).
    positions = _first_positions(selected, P, xla=spec.strategy in XLA_STRATEGIES)
  weights = positions < L
  positions = tf.where(weights, positions, 0)
  # One hash per token decides both the replacement (high 12 bits) and the random id
  # (low 20 bits), which are independent bit fields.
  h = hash_bits(keys, _S_REPLACE, L)
  u = tf.cast(tf.bitwise.right_shift(h, 20), tf.float32) * (1.0 / (1 << 12))
  n_rand = len(spec.random_ids)
  low = tf.cast(tf.bitwise.bitwise_and(h, 0xFFFFF), tf.int64)
  rand_ids = _take_random_ids(spec.random_ids, len(spec.is_word_start),
                              tf.cast(tf.bitwise.right_shift(low * n_rand, 20), tf.int32))
  new_ids = tf.where(selected & (u < spec.mask_prob), spec.mask_id, ids)
  new_ids = tf.where(selected & (u >= spec.mask_prob) & (u < spec.mask_prob + spec.random_prob),
                     rand_ids, new_ids)
  out["input_ids"] = new_ids
  out["masked_lm_positions"] = positions
  out["masked_lm_ids"] = tf.where(weights, tf.gather(ids, positions, batch_dims=1), 0)
  out["masked_lm_weights"] = tf.cast(weights, tf.float32)
  return out
