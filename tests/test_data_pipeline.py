"""The tf.data pipeline: batch contract, instance kinds, determinism, resume, host shards, bad input."""

import itertools
import os

import numpy as np
import pytest

from bert_jax.configs import common  # noqa: E402
from test_masking import real_text_config  # noqa: E402

from bert_jax.data import instances as inst_lib  # noqa: E402
from bert_jax.data import pipeline  # noqa: E402
from bert_jax.data import tokenizers  # noqa: E402

L, P, B = 64, 10, 16
KEYS = {"input_ids": np.int32, "input_mask": np.int32, "token_type_ids": np.int32,
        "segment_ids": np.int32, "position_ids": np.int32, "masked_lm_positions": np.int32,
        "masked_lm_ids": np.int32, "masked_lm_weights": np.float32,
        "next_sentence_labels": np.int32}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  cache = os.environ.get("BERT_JAX_CACHE") or tmp_path_factory.mktemp("cache")
  c = real_text_config(cache, max_seq_length=L, max_predictions_per_seq=P)
  c.eval_fraction = 0.05
  tok = tokenizers.build_or_load(c, str(tmp_path_factory.mktemp("wd")), process_index=0)
  return c, tok


def cfg(env, **kw):
  c = env[0].copy_and_resolve_references()
  c.update(kw)
  return c


def take(it, n):
  return list(itertools.islice(it, n))


@pytest.mark.parametrize("kind,pack", [("nsp", False), ("sop", False), ("segments", False),
                                       ("full_sentences", False), ("full_sentences", True)])
def test_batch_contract(env, kind, pack):
  c, tok = cfg(env, instances=kind, pack_examples=pack), env[1]
  b = next(pipeline.train_iterator(c, tok, batch_size=B))
  assert set(b) == set(KEYS)
  for k, dt in KEYS.items():
    shape = (B,) if k == "next_sentence_labels" else (B, P if k.startswith("masked") else L)
    assert b[k].shape == shape and b[k].dtype == dt, k
  m = b["input_mask"]
  assert (b["input_ids"][:, 0] == tok.cls_id).all()
  assert (b["token_type_ids"][m == 0] == 0).all() and (b["segment_ids"][m == 0] == 0).all()
  assert (m[:, :-1] >= m[:, 1:]).all()  # real tokens first, then padding
  if not pack:
    np.testing.assert_array_equal(b["segment_ids"], m)
    np.testing.assert_array_equal(b["position_ids"], np.broadcast_to(np.arange(L), (B, L)))
  else:
    seg, pos = b["segment_ids"], b["position_ids"]
    # Whether the first 16 rows hold a packed one is luck of the draw; 8 batches hold some.
    more = take(pipeline.train_iterator(c, tok, batch_size=B), 8)
    assert max(x["segment_ids"].max() for x in more) > 1, "packing put one example per row"
    starts = (np.diff(seg, prepend=0, axis=1) != 0) & (seg > 0)
    assert (pos[starts] == 0).all() and (b["input_ids"][starts] == tok.cls_id).all()
    inner = (seg > 0) & ~starts
    assert (pos[inner] == np.roll(pos, 1, axis=1)[inner] + 1).all()
  if kind in ("segments", "full_sentences"):
    assert (b["next_sentence_labels"] == 0).all()
  if kind == "full_sentences":
    assert (b["token_type_ids"] == 0).all()


@pytest.mark.parametrize("kind", ["nsp", "sop"])
def test_sentence_labels_near_half(env, kind):
  c, tok = env
  corpus = pipeline.load_corpus(c, tok, "train", 0, 1)
  rows = inst_lib.build_rows(corpus, kind=kind, max_seq_length=128, short_seq_prob=0.1, pack=False,
                             specials=inst_lib.Specials(tok.cls_id, tok.sep_id, tok.pad_id),
                             seed=0, epoch=0)
  labels = rows["next_sentence_labels"]
  assert len(labels) > 1000
  # NSP: one-sentence chunks always take a random B (as the reference), so a bit over 50%.
  assert abs(labels.mean() - 0.5) < (0.06 if kind == "nsp" else 0.03), labels.mean()
  # Two segments each ending in [SEP].
  sep = (rows["input_ids"] == tok.sep_id).sum(1)
  assert (sep == 2).all()
  assert (rows["token_type_ids"].max(1) == 1).all()


def test_sop_swaps_segments(env):
  """An SOP row with label 1 is an in-order row with A and B exchanged."""
  c, tok = env
  corpus = pipeline.load_corpus(c, tok, "train", 0, 1).select(np.arange(50))
  text = corpus.tokens.tolist()
  rows = inst_lib.build_rows(corpus, kind="sop", max_seq_length=512, short_seq_prob=0.0,
                             pack=False, specials=inst_lib.Specials(tok.cls_id, tok.sep_id,
                                                                    tok.pad_id), seed=0, epoch=0)
  checked = [0, 0]
  joined = ",".join(map(str, text))
  for ids, types, label in zip(rows["input_ids"], rows["token_type_ids"],
                               rows["next_sentence_labels"]):
    a = ids[(types == 0) & (ids != tok.pad_id)][1:-1].tolist()
    b = ids[(types == 1) & (ids != tok.sep_id)].tolist()
    first, second = (b, a) if label else (a, b)
    if len(a) + len(b) < 500:  # untruncated: first+second is a contiguous stretch of the text
      assert ",".join(map(str, first + second)) in joined
      checked[label] += 1
  assert min(checked) > 5


def test_full_sentences_chunks_match_the_greedy_rule(env):
  """The vectorized RoBERTa chunking equals the greedy per-document loop it replaces."""
  c, tok = env
  corpus = pipeline.load_corpus(c, tok, "train", 0, 1).select(np.arange(300))
  sp = inst_lib.Specials(tok.cls_id, tok.sep_id, tok.pad_id)
  for length in (16, 64):
    rows = inst_lib.build_rows(corpus, kind="full_sentences", max_seq_length=length,
                               short_seq_prob=0.0, pack=False, specials=sp, seed=0, epoch=0)
    expected = []
    for d in range(corpus.num_docs):
      chunk = []
      for sent in corpus.document(d):
        sent = sent.tolist()
        for k in range(0, len(sent), length - 3):  # long sentences are cut into pieces
          piece = sent[k:k + length - 3]
          if chunk and len(chunk) + len(piece) > length - 2:
            expected.append(chunk)
            chunk = []
          chunk = chunk + piece
      expected.append(chunk)
    got = [r[1:m.sum() - 1].tolist() for r, m in zip(rows["input_ids"], rows["input_mask"])]
    assert len(expected) > corpus.num_docs and got == expected


def reference_pairs(o, first, keys, kind, L, short_seq_prob):
  """The reference's per-document NSP / SOP loop (the package's code before the lockstep
  walk), one document and one token at a time, drawing the same hashes as inst_lib: chunk c
  of a document draws with step c, the t-th token trimmed from A (B) goes from the front
  when bit t of its truncation stream is set. Returns ([K, 5] instances, skipped chunks)."""
  max_tokens, n_docs = L - 3, len(first) - 1
  out, skipped = [], 0
  for i in range(n_docs):
    key = keys[i:i + 1]
    u = lambda step, stream: float(inst_lib.uniform(key, step, stream)[0])
    randint = lambda step, stream, lo, hi: int(inst_lib.randint(key, step, stream, lo, hi)[0])
    bit = lambda step, stream, t: int(inst_lib._bits(key, step, stream + t // 64)[0]) >> t % 64 & 1
    target = max_tokens
    if u(0, inst_lib._S_SHORT) < short_seq_prob:
      target = randint(0, inst_lib._S_TARGET, 2, max_tokens + 1)
    d, n_sent = o[first[i]:first[i + 1] + 1].tolist(), first[i + 1] - first[i]
    start_sent, j, c = 0, 0, 0
    while j < n_sent:
      if j == n_sent - 1 or d[j + 1] - d[start_sent] >= target:
        n_chunk = j + 1 - start_sent
        a_end = start_sent + (randint(c, inst_lib._S_A_END, 1, n_chunk) if n_chunk >= 2 else 1)
        a0, a1, b0, b1, label = d[start_sent], d[a_end], d[a_end], d[j + 1], 0
        split = n_chunk == 1 and a1 - a0 >= 2
        if split:
          a1 = b0 = a0 + randint(c, inst_lib._S_CUT, 1, a1 - a0)
        if kind == "nsp" and ((n_chunk == 1 and not split) or u(c, inst_lib._S_COIN) < 0.5):
          label, b0, b1 = 1, 0, 0
          if n_docs > 1:
            for t in range(10):
              r = randint(c, inst_lib._S_RANDOM_DOC + t, 0, n_docs)
              if r != i:
                break
            ro = o[first[r]:first[r + 1] + 1].tolist()
            start = randint(c, inst_lib._S_START, 0, len(ro) - 1)
            k = start + 1
            while k < len(ro) - 1 and ro[k] - ro[start] < target - (a1 - a0):
              k += 1
            b0, b1 = ro[start], ro[k]
          if not split:
            j = a_end - 1
        elif kind == "sop" and u(c, inst_lib._S_COIN) < 0.5:
          a0, a1, b0, b1, label = b0, b1, a0, a1, 1
        ta = tb = 0
        while a1 - a0 + b1 - b0 > max_tokens:  # truncate_seq_pair
          if a1 - a0 > b1 - b0:
            a0, a1 = (a0 + 1, a1) if bit(c, inst_lib._S_TRUNC_A, ta) else (a0, a1 - 1)
            ta += 1
          else:
            b0, b1 = (b0 + 1, b1) if bit(c, inst_lib._S_TRUNC_B, tb) else (b0, b1 - 1)
            tb += 1
        if a1 > a0 and b1 > b0:
          out.append((a0, a1, b0, b1, label))
        else:
          skipped += 1
        start_sent = j + 1
        c += 1
      j += 1
  return np.array(out, np.int64).reshape(-1, 5), skipped


def reference_segments(o, first, keys, L):
  """ELECTRA's ExampleBuilder per document (the package's code before the lockstep walk),
  drawing the same hashes as inst_lib."""
  out = []
  for i in range(len(first) - 1):
    key = keys[i:i + 1]
    u = lambda step, stream: float(inst_lib.uniform(key, step, stream)[0])
    d, n_sent = o[first[i]:first[i + 1] + 1].tolist(), first[i + 1] - first[i]

    def make(s_from, s_to, c, target):
      first_target = 100_000 if u(c, inst_lib._S_FIRST_TARGET) < 0.1 else (target - 3) // 2
      cut = s_to
      for k in range(s_from, s_to):
        la = d[k] - d[s_from]
        if not (la == 0 or la + d[k + 1] - d[k] < first_target or
                (la < first_target and u(c, inst_lib._S_COIN) < 0.5)):
          cut = k
          break
      a0, a1 = d[s_from], min(d[cut], d[s_from] + L - 2)
      b0 = d[cut]
      b1 = min(d[s_to], b0 + max(0, L - (a1 - a0) - 3))
      out.append((a0, a1, b0, max(b1, b0), 0))

    start_sent, target, c = 0, L, 0
    for j in range(n_sent):
      if d[j + 1] - d[start_sent] >= target:
        make(start_sent, j + 1, c, target)
        start_sent = j + 1
        target = L
        if u(c, inst_lib._S_TARGET) < 0.05:
          target = int(inst_lib.randint(key, c, inst_lib._S_SHORT, 5, L + 1)[0])
        c += 1
    if start_sent < n_sent:
      make(start_sent, n_sent, c, target)
  return np.array(out, np.int64).reshape(-1, 5)


def random_documents(n_docs, seed=0):
  """Documents of 1-12 sentences of 1-150 tokens (long ones are cut into pieces)."""
  rng = np.random.default_rng(seed)
  return inst_lib.from_documents([[rng.integers(10, 99, rng.integers(1, 150)) for _ in
                                   range(rng.integers(1, 13))] for _ in range(n_docs)],
                                 doc_ids=rng.permutation(10 * n_docs)[:n_docs])


@pytest.mark.parametrize("kind", ["nsp", "sop", "segments"])
def test_lockstep_instances_equal_the_per_document_loop(env, kind):
  """The vectorized walk gives the reference loop's instances, draw for draw: real text and
  random documents (long sentences, short targets, heavy truncation), and one document."""
  c, tok = env
  real = pipeline.load_corpus(c, tok, "train", 0, 1).select(np.arange(400))
  checked = 0
  for corpus, length, short in ((real, 128, 0.1), (real, 64, 0.5), (random_documents(300), 32, 0.3),
                                (random_documents(1, seed=3), 16, 0.0)):
    o, first = inst_lib._split_offsets(corpus, length - 3, {})
    keys = inst_lib.doc_keys(7, 2, corpus.doc_ids)
    stats = {}
    if kind == "segments":
      got, want, skipped = (inst_lib._segment_instances(o, first, keys, length),
                            reference_segments(o, first, keys, length), 0)
    else:
      got = inst_lib._pair_instances(o, first, keys, kind, length, short, stats)
      want, skipped = reference_pairs(o, first, keys, kind, length, short)
    np.testing.assert_array_equal(got, want)
    assert stats.get("skipped_chunks", 0) == skipped
    checked += len(want)
  assert checked > 1000


@pytest.mark.parametrize("kind", ["nsp", "full_sentences"])
def test_dense_and_scattered_row_fill_agree(env, kind, monkeypatch):
  c, tok = env
  corpus = pipeline.load_corpus(c, tok, "train", 0, 1).select(np.arange(200))
  kw = dict(kind=kind, max_seq_length=L, short_seq_prob=0.1, pack=False, seed=0, epoch=2,
            specials=inst_lib.Specials(tok.cls_id, tok.sep_id, tok.pad_id))
  order = lambda n: np.random.default_rng(n).permutation(n)
  out = []
  for threshold in (0.0, 2.0):  # always dense, never dense
    monkeypatch.setattr(inst_lib, "DENSE_FILL_MIN", threshold)
    out.append(inst_lib.build_rows(corpus, **kw))
    out.append(inst_lib.build_rows(corpus, row_order=order, **kw))
  perm = order(len(out[0]["input_ids"]))
  for k in KEYS:
    if k in out[0]:
      np.testing.assert_array_equal(out[0][k], out[2][k], err_msg=k)
      np.testing.assert_array_equal(out[0][k][perm], out[1][k], err_msg=k)
      np.testing.assert_array_equal(out[1][k], out[3][k], err_msg=k)


def test_masking_piece_size_does_not_change_the_stream(env):
  """Rows are masked in pieces of chunk_rows rows; any piece size gives the same batches
  (span: XLA-compiled, pieces padded to a few sizes)."""
  c, tok = cfg(env, masking="span"), env[1]
  a = take(pipeline.train_iterator(c, tok, batch_size=B, chunk_rows=B), 6)
  b = take(pipeline.train_iterator(c, tok, batch_size=B, chunk_rows=3 * B + 5), 6)
  for x, y in zip(a, b):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_same_seed_same_stream_and_other_seed_differs(env):
  c, tok = cfg(env, masking="ngram"), env[1]
  a = take(pipeline.train_iterator(c, tok, batch_size=B), 3)
  b = take(pipeline.train_iterator(c, tok, batch_size=B), 3)
  d = take(pipeline.train_iterator(c, tok, batch_size=B, seed=1), 3)
  for x, y in zip(a, b):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k])
  assert any((x["input_ids"] != y["input_ids"]).any() for x, y in zip(a, d))


def small_text_corpus(tmp_path, n_docs=40):
  """A small sentence_per_line file from the real text (a short epoch)."""
  from bert_jax.data import corpora  # pylint: disable=g-import-not-at-top
  docs = []
  for doc in corpora.source_documents(real_text_config(tmp_path)):
    if len(doc) >= 3:
      docs.append(doc[:6])
    if len(docs) == n_docs:
      break
  path = tmp_path / "small.txt"
  path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
  return path


def small_text_setup(tmp_path_factory, name: str, n_docs: int):
  """(config of a small sentence-per-line text corpus, a sentencepiece tokenizer, scratch dir)."""
  cache = os.environ.get("BERT_JAX_CACHE") or tmp_path_factory.mktemp("cache")
  c = real_text_config(cache, max_seq_length=64, max_predictions_per_seq=10)
  c.tokenizer.vocab_size = 1500
  c.tokenizer.train_sentences = 4000
  tok = tokenizers.build_or_load(c, str(tmp_path_factory.mktemp("wd")), process_index=0)
  tmp = tmp_path_factory.mktemp(name)
  text = small_text_corpus(tmp, n_docs=n_docs)
  c = c.copy_and_resolve_references()
  c.update(source="text", text_glob=str(text), text_format="sentence_per_line",
           eval_fraction=0.1, cache_dir=str(tmp))
  return c, tok, tmp


def test_resume_continues_exact_stream_across_epochs(env, tmp_path):
  path = small_text_corpus(tmp_path, n_docs=8)
  c, tok = cfg(env, source="text", text_glob=str(path), text_format="sentence_per_line",
               eval_fraction=0.0, cache_dir=str(tmp_path)), env[1]
  corpus = pipeline.load_corpus(c, tok, "train", 0, 1)
  epoch_rows = len(inst_lib.build_rows(
      corpus, kind=c.instances, max_seq_length=L, short_seq_prob=c.short_seq_prob, pack=False,
      specials=inst_lib.Specials(tok.cls_id, tok.sep_id, tok.pad_id), seed=0,
      epoch=0)["next_sentence_labels"])
  assert 8 < epoch_rows < 5 * 8, "the stream should cross epoch boundaries"
  full = take(pipeline.train_iterator(c, tok, batch_size=8), 12)
  for start in (5, 9):
    resumed = take(pipeline.train_iterator(c, tok, batch_size=8, start_batch=start), 12 - start)
    for x, y in zip(full[start:], resumed):
      for k in KEYS:
        np.testing.assert_array_equal(x[k], y[k])


def test_host_shards_disjoint_and_cover(env):
  c, tok = env
  train_all = set(pipeline.load_corpus(c, tok, "train", 0, 1).doc_ids.tolist())
  eval_all = set(pipeline.load_corpus(c, tok, "eval", 0, 1).doc_ids.tolist())
  assert train_all and eval_all and not train_all & eval_all
  for split, everything in (("train", train_all), ("eval", eval_all)):
    shards = [set(pipeline.load_corpus(c, tok, split, i, 3).doc_ids.tolist()) for i in range(3)]
    assert set().union(*shards) == everything
    assert all(not shards[i] & shards[j] for i in range(3) for j in range(i + 1, 3))
  # And hosts' batches differ.
  b0 = next(pipeline.train_iterator(c, tok, batch_size=B, process_index=0, process_count=2))
  b1 = next(pipeline.train_iterator(c, tok, batch_size=B, process_index=1, process_count=2))
  assert (b0["input_ids"] != b1["input_ids"]).any()


def test_eval_iterator_fixed_and_finite(env):
  c, tok = env
  a = list(pipeline.eval_iterator(c, tok, batch_size=B, num_batches=3))
  b = list(pipeline.eval_iterator(c, tok, batch_size=B, num_batches=3))
  assert len(a) == 3
  for x, y in zip(a, b):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k])
  t = next(pipeline.train_iterator(c, tok, batch_size=B))
  assert (t["input_ids"] != a[0]["input_ids"]).any()


def test_bad_text_input_is_counted_not_fatal(env, tmp_path):
  d = tmp_path / "bad"
  d.mkdir()
  (d / "a_empty.txt").write_bytes(b"")
  (d / "b_blank.txt").write_bytes(b"   \n\t\n\n  \n")
  good = small_text_corpus(tmp_path, n_docs=10).read_bytes()
  long_sentence = (" ".join(["word"] * 3000)).encode()
  (d / "c_mixed.txt").write_bytes(
      good + b"\n\nOne lonely sentence.\n\n \n\n" + b"bad \xff\xfe bytes here.\nSecond.\n\n" +
      long_sentence + b"\nAnd the end.\n")
  c, tok = cfg(env, source="text", text_glob=str(d / "*.txt"), eval_fraction=0.0,
               cache_dir=str(tmp_path), instances="nsp"), env[1]
  stats = {}
  batches = take(pipeline.train_iterator(c, tok, batch_size=4, stats=stats), 30)
  assert len(batches) == 30
  assert stats["invalid_utf8_lines"] == 1
  assert stats["one_sentence_documents"] >= 1
  assert stats["split_long_sentences"] >= 1
  assert all((b["masked_lm_weights"].sum(1) >= 1).all() for b in batches)


@pytest.mark.parametrize("overrides,match", [
    (dict(instances="nsp", pack_examples=True), "pack_examples"),
    (dict(instances="bogus"), "instances"),
    (dict(short_seq_prob=2.0), "short_seq_prob"),
    (dict(source="text", text_glob=""), "text_glob"),
    (dict(source="text", text_glob="/nonexistent/dir/*.txt"), "matches no files"),
    (dict(source="nope"), "source"),
    (dict(mask_rate=0.0), "mask_rate"),
])
def test_bad_config_raises_early(env, overrides, match):
  c, tok = cfg(env, **overrides), env[1]
  with pytest.raises(ValueError, match=match):
    next(pipeline.train_iterator(c, tok, batch_size=B))


def test_bad_process_index(env):
  with pytest.raises(ValueError, match="process_index"):
    pipeline.train_iterator(env[0], env[1], batch_size=B, process_index=2, process_count=2)


def test_bad_chunk_rows(env):
  with pytest.raises(ValueError, match="chunk_rows"):
    pipeline.train_iterator(env[0], env[1], batch_size=B, chunk_rows=-4)


def test_builtin_corpus_default(tmp_path):
  """The default source needs nothing but the interpreter; built once, then cached."""
  from bert_jax.data import corpora  # pylint: disable=g-import-not-at-top
  cache = os.environ.get("BERT_JAX_CACHE") or tmp_path
  path = corpora.builtin_corpus_path(cache)
  assert path.stat().st_size > 1_000_000
  assert corpora.builtin_corpus_path(cache) == path
  c = common.data_config()
  assert c.source == "builtin"
  docs = list(itertools.islice(corpora.source_documents(c, cache_dir=cache), 200))
  assert len(docs) == 200 and all(len(d) >= 2 and all(s.strip() for s in d) for d in docs)
