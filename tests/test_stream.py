"""The bounded-memory TFRecord stream (bert_jax.data.stream): determinism, epochs, resume,
host shards, eval split, memory bound, bad input, NSP/masking statistics. Real text."""
# pylint: disable=protected-access

import itertools
import json

import numpy as np
import pytest

from test_data_pipeline import KEYS, small_text_setup  # noqa: E402
from test_masking import real_text_config  # noqa: E402

from bert_jax.data import instances as inst_lib  # noqa: E402
from bert_jax.data import pipeline  # noqa: E402
from bert_jax.data import preprocess  # noqa: E402
from bert_jax.data import stream  # noqa: E402
from bert_jax.data import tokenizers  # noqa: E402

WINDOW, SHARDS, B = 16, 4, 8


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  c, tok, tmp = small_text_setup(tmp_path_factory, "st", n_docs=120)
  c.cache_dir = str(tmp / "cache")
  preprocess.run(c, tok, str(tmp / "rec" / "docs"), num_shards=SHARDS, num_workers=1)
  c.update(source="tfrecord", tfrecord_glob=str(tmp / "rec" / "docs-*"),
           stream_window_docs=WINDOW)
  return c, tok, tmp


def cfg(env, **kw):
  c = env[0].copy_and_resolve_references()
  c.update(kw)
  return c


def take(it, n):
  """n batches; then the stream is stopped and joined so it writes no more index entries."""
  out = list(itertools.islice(it, n))
  if isinstance(it, pipeline.Batches):
    it.close()
  return out


def assert_same(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def epoch_docs(c, tok, split, pi, pc):
  """doc_index of every document host pi streams in one epoch."""
  files = stream.host_files(c, tok, pi, pc)
  windows = stream._windows(files, (0, 0), c.stream_window_docs, split, c.eval_fraction, {})
  return [d for docs, _, _ in windows for d in docs.ids.tolist()]


def raw_rows(c, tok, n, **kw):
  """The first n unmasked rows (with keys) of the host stream, one per 'batch'."""
  kw = dict(split="train", chunk_rows=1, process_index=0, process_count=1, seed=0,
            start_row=0, stats={}, **kw)
  return take(stream.row_pieces(c, tok, **kw), n)


def test_same_config_same_batches_other_seed_differs(env):
  c, tok, _ = env
  a = take(pipeline.train_iterator(c, tok, batch_size=B), 4)
  assert_same(a, take(pipeline.train_iterator(c, tok, batch_size=B), 4))
  d = take(pipeline.train_iterator(c, tok, batch_size=B, seed=1), 4)
  assert any((x["input_ids"] != y["input_ids"]).any() for x, y in zip(a, d))
  # Rows are masked in pieces of chunk_rows (across windows): the size never changes batches.
  for chunk in (B, 3 * B + 5):
    assert_same(a, take(pipeline.train_iterator(c, tok, batch_size=B, chunk_rows=chunk), 4))


def test_epochs_reorder_the_same_rows_with_new_masks(env, tmp_path):
  """full_sentences rows do not depend on the window, so an epoch's rows are a fixed
  multiset: the next epoch must hold the same rows in another order with other keys."""
  c, tok, _ = env
  c = cfg(env, instances="full_sentences", cache_dir=str(tmp_path))
  n_docs = len(epoch_docs(c, tok, "train", 0, 1))
  assert n_docs > 5 * WINDOW  # several windows per epoch
  rows = raw_rows(c, tok, 10 * n_docs, use_index=True)  # > 2 epochs of rows
  files = stream.host_files(c, tok, 0, 1)
  index = stream._Index(stream.index_path(c, tok, files, "train", 0, 0, 1)).entries
  ends = [i for i, e in enumerate(index) if e["last"]]
  n0 = sum(e["rows"] for e in index[:ends[0] + 1])
  n1 = sum(e["rows"] for e in index[ends[0] + 1:ends[1] + 1])
  assert n0 == n1 and 2 * n0 <= len(rows)
  e0 = np.concatenate([r["input_ids"] for r in rows[:n0]])
  e1 = np.concatenate([r["input_ids"] for r in rows[n0:2 * n0]])
  assert (e0 != e1).any()  # new order
  srt = lambda a: a[np.lexsort(a.T[::-1])]
  np.testing.assert_array_equal(srt(e0), srt(e1))  # same rows
  k0 = np.concatenate([r["keys"] for r in rows[:n0]])
  k1 = np.concatenate([r["keys"] for r in rows[n0:2 * n0]])
  assert len(set(k0.tolist()) & set(k1.tolist())) < n0 // 20  # new masking keys


@pytest.mark.parametrize("with_index", [True, False])
def test_resume_equals_uninterrupted(env, tmp_path, with_index):
  """N batches, then a resumed stream at N, equal 2N uninterrupted batches, across windows
  and an epoch boundary; with the row-count index (skips windows unread) and without."""
  c, tok, _ = env
  c = cfg(env, cache_dir=str(tmp_path))
  n = 40
  stats = {}
  full = take(pipeline.train_iterator(c, tok, batch_size=B, stats=stats), 2 * n)
  assert stats["stream_windows_skipped_by_index"] == 0
  epoch_read = len(epoch_docs(c, tok, "train", 0, 1))
  assert stats["stream_documents_read"] > epoch_read, "2N batches should cross an epoch"
  for start in (3, n, n + 7):
    if not with_index:
      for f in (tmp_path / "stream_index").iterdir():
        f.unlink()
    st = {}
    resumed = take(pipeline.train_iterator(c, tok, batch_size=B, start_batch=start, stats=st),
                   2 * n - start)
    assert_same(full[start:], resumed)
    if with_index and start >= n:
      assert st["stream_windows_skipped_by_index"] > 0
      # Windows before the resume point were skipped unread.
      assert st["stream_documents_read"] < stats["stream_documents_read"] - WINDOW


def test_resume_on_second_host(env, tmp_path):
  c, tok, _ = env
  c = cfg(env, cache_dir=str(tmp_path))
  kw = dict(batch_size=B, process_index=1, process_count=2)
  full = take(pipeline.train_iterator(c, tok, **kw), 24)
  st = {}
  assert_same(full[13:], take(pipeline.train_iterator(c, tok, start_batch=13, stats=st, **kw), 11))
  assert st["stream_windows_skipped_by_index"] > 0


def test_stale_index_is_refused(env, tmp_path):
  c, tok, _ = env
  c = cfg(env, cache_dir=str(tmp_path))
  take(pipeline.train_iterator(c, tok, batch_size=B), 12)
  (path,) = (tmp_path / "stream_index").iterdir()
  text = path.read_text()
  idx = json.loads(text)
  idx["windows"][0]["rows"] += 1
  path.write_text(json.dumps(idx))
  with pytest.raises(ValueError, match="stale index"):
    next(pipeline.train_iterator(c, tok, batch_size=B, start_batch=1))


def test_host_shards_disjoint_covering_and_eval_rule(env):
  c, tok, _ = env
  memory = cfg(env, stream_window_docs=0)
  for split in ("train", "eval"):
    everything = set(pipeline.load_corpus(memory, tok, split, 0, 1).doc_ids.tolist())
    one = epoch_docs(c, tok, split, 0, 1)
    assert len(one) == len(set(one)) and set(one) == everything
    shards = [set(epoch_docs(c, tok, split, i, 2)) for i in range(2)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == everything
  assert not set(epoch_docs(c, tok, "train", 0, 1)) & set(epoch_docs(c, tok, "eval", 0, 1))
  b0 = next(pipeline.train_iterator(c, tok, batch_size=B, process_index=0, process_count=2))
  b1 = next(pipeline.train_iterator(c, tok, batch_size=B, process_index=1, process_count=2))
  assert (b0["input_ids"] != b1["input_ids"]).any()


def test_eval_stream_fixed_finite_and_not_train(env):
  c, tok, _ = env
  a = list(pipeline.eval_iterator(c, tok, batch_size=B, num_batches=3))
  assert len(a) == 3
  assert_same(a, list(pipeline.eval_iterator(c, tok, batch_size=B, num_batches=3)))
  t = next(pipeline.train_iterator(c, tok, batch_size=B))
  assert (t["input_ids"] != a[0]["input_ids"]).any()


def test_memory_bound_is_the_window(env, monkeypatch):
  """No more than stream_window_docs documents are held or handed to build_rows at once,
  while a stream covers the corpus several times over."""
  c, tok, _ = env
  seen = []
  real = inst_lib.build_rows

  def counting(corpus, **kw):
    seen.append(corpus.num_docs)
    return real(corpus, **kw)

  monkeypatch.setattr(stream.inst_lib, "build_rows", counting)
  stats = {}
  take(pipeline.train_iterator(c, tok, batch_size=B, stats=stats), 150)
  assert stats["stream_documents_read"] > 2 * len(epoch_docs(c, tok, "train", 0, 1))
  assert stats["stream_max_window_docs"] == WINDOW
  assert max(seen) == WINDOW and len(seen) > 10


def test_batch_contract_nsp_and_mask_statistics(env):
  c, tok, _ = env
  batches = take(pipeline.train_iterator(c, tok, batch_size=B), 60)
  for k, dt in KEYS.items():
    assert batches[0][k].dtype == dt, k
  labels = np.concatenate([b["next_sentence_labels"] for b in batches])
  assert len(labels) == 480
  assert abs(labels.mean() - 0.5) < 0.08, labels.mean()
  tokens = sum(int(b["input_mask"].sum()) - 3 * B for b in batches)
  masked = sum(float(b["masked_lm_weights"].sum()) for b in batches)
  assert 0.12 < masked / tokens < 0.16, masked / tokens
  assert all((b["input_ids"][:, 0] == tok.cls_id).all() for b in batches)


def test_packed_full_sentences_stream(env):
  c, tok, _ = env
  c = cfg(env, instances="full_sentences", pack_examples=True)
  batches = take(pipeline.train_iterator(c, tok, batch_size=B), 8)
  assert max(int(b["segment_ids"].max()) for b in batches) > 1
  assert all((b["next_sentence_labels"] == 0).all() for b in batches)


def test_bad_input(env, tmp_path):
  c, tok, tmp = env
  with pytest.raises(ValueError, match="matches no files"):
    pipeline.train_iterator(cfg(env, tfrecord_glob=str(tmp_path / "none-*")), tok, batch_size=B)
  with pytest.raises(ValueError, match=r"tfrecord_glob.*num_shards >= 5"):
    pipeline.train_iterator(c, tok, batch_size=B, process_index=0, process_count=5)
  with pytest.raises(ValueError, match="stream_window_docs"):
    pipeline.train_iterator(cfg(env, stream_window_docs=-1), tok, batch_size=B)
  with pytest.raises(ValueError, match="No train documents"):
    next(pipeline.train_iterator(cfg(env, eval_fraction=0.999), tok, batch_size=B))
  other = real_text_config(c.cache_dir)
  other.tokenizer.vocab_size = 700
  other.tokenizer.train_sentences = 2000
  tok2 = tokenizers.build_or_load(other, str(tmp_path / "wd2"), process_index=0)
  with pytest.raises(ValueError, match="another tokenizer"):
    pipeline.train_iterator(c, tok2, batch_size=B)


@pytest.mark.slow
def test_train_loop_resume_with_stream(env, tmp_path, monkeypatch):
  """Through the train loop: halt after n steps, re-run; the batches and the final state
  equal an uninterrupted run (the loop derives start_batch from the restored step)."""
  from test_checkpoint import _recording_inputs  # pylint: disable=g-import-not-at-top
  from train_testlib import tiny_config, tree_max_diff  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  c, tok, _ = env
  n = 3

  def config(cache):
    t = tiny_config("bert", steps=2 * n, seq=64, synthetic=False)
    t.data = cfg(env, cache_dir=str(cache), stream_window_docs=4)
    t.data.tokenizer.path = str(tok.path)
    t.model.vocab_size = tok.vocab_size
    t.checkpoint.every_steps = n
    t.eval.every_steps = 2 * n
    return t

  seen = []
  _recording_inputs(monkeypatch, seen)
  full = train.train_and_evaluate(config(tmp_path / "ca"), str(tmp_path / "a"))
  seen_a = list(seen)
  seen.clear()
  t = config(tmp_path / "cb")
  t.train.halt_after_steps = n
  assert train.train_and_evaluate(t, str(tmp_path / "b"))["status"] == "halted"
  t.train.halt_after_steps = 0
  second = train.train_and_evaluate(t, str(tmp_path / "b"))
  assert second["step"] == 2 * n and full["step"] == 2 * n
  assert seen == seen_a and len(set(seen_a)) == 2 * n
  assert tree_max_diff(full["state"]["params"], second["state"]["params"]) == 0.0
