"""Sources: preprocessing CLI to sharded TFRecords, the tfrecord and TFDS sources."""

import itertools

import numpy as np
import pytest

from conftest import shared_path  # noqa: E402
from test_data_pipeline import KEYS, small_text_setup  # noqa: E402
from test_masking import real_text_config  # noqa: E402

from bert_jax.data import pipeline  # noqa: E402
from bert_jax.data import preprocess  # noqa: E402
from bert_jax.data import row_source  # noqa: E402
from bert_jax.data import tokenizers  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  c, tok, tmp = small_text_setup(tmp_path_factory, "pp", n_docs=60)
  summary = preprocess.run(c, tok, str(tmp / "out" / "docs"), num_shards=3, num_workers=2,
                           chunk_docs=7, max_pending=2)
  return c, tok, tmp, summary


def test_preprocess_records_match_direct_tokenization(env):
  c, tok, tmp, summary = env
  assert summary["documents"] == 60 and summary["num_shards"] == 3
  direct = row_source._all_documents(c, tok, "train", {})  # pylint: disable=protected-access
  corpus, sharded = preprocess.read_corpus(str(tmp / "out" / "docs-*"), {}, tok)
  assert not sharded
  np.testing.assert_array_equal(corpus.tokens, direct.tokens)
  np.testing.assert_array_equal(corpus.sent_offsets, direct.sent_offsets)
  np.testing.assert_array_equal(corpus.doc_ids, np.arange(60))
  assert summary["tokens"] == len(direct.tokens)


def test_preprocess_deterministic_across_worker_counts(env):
  c, tok, tmp, _ = env
  preprocess.run(c, tok, str(tmp / "again" / "docs"), num_shards=3, num_workers=1,
                 chunk_docs=13)
  for i in range(3):
    name = f"docs-{i:05d}-of-00003"
    assert (tmp / "again" / name).read_bytes() == (tmp / "out" / name).read_bytes()


def test_tfrecord_source_gives_the_text_stream(env):
  c, tok, tmp, _ = env
  rc = c.copy_and_resolve_references()
  # stream_window_docs=0: the in-memory path (the streaming one is tests/test_stream.py).
  rc.update(source="tfrecord", tfrecord_glob=str(tmp / "out" / "docs-*"), stream_window_docs=0)
  a = list(itertools.islice(pipeline.train_iterator(c, tok, batch_size=8), 3))
  b = list(itertools.islice(pipeline.train_iterator(rc, tok, batch_size=8), 3))
  for x, y in zip(a, b):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k])
  # Two hosts read disjoint files that together cover the train documents.
  ids = [set(pipeline.load_corpus(rc, tok, "train", i, 2).doc_ids.tolist()) for i in range(2)]
  assert not ids[0] & ids[1]
  assert ids[0] | ids[1] == set(pipeline.load_corpus(rc, tok, "train", 0, 1).doc_ids.tolist())


def test_tfrecord_source_rejects_other_tokenizer(env, tmp_path):
  c, _, tmp, _ = env
  other = real_text_config(c.cache_dir)
  other.tokenizer.vocab_size = 700
  other.tokenizer.train_sentences = 2000
  tok2 = tokenizers.build_or_load(other, str(tmp_path), process_index=0)
  rc = c.copy_and_resolve_references()
  rc.update(source="tfrecord", tfrecord_glob=str(tmp / "out" / "docs-*"))
  with pytest.raises(ValueError, match="another tokenizer"):
    next(pipeline.train_iterator(rc, tok2, batch_size=8))


def test_tfds_tiny_shakespeare(env):
  data_dir = shared_path("tfds")
  shared_path("tfds", "tiny_shakespeare")
  c, tok, _, _ = env
  tc = c.copy_and_resolve_references()
  tc.update(source="tfds", tfds_name="tiny_shakespeare", tfds_split="train",
            tfds_eval_split="validation", tfds_data_dir=str(data_dir), instances="sop")
  stats = {}
  b = next(pipeline.train_iterator(tc, tok, batch_size=8, stats=stats))
  assert stats["documents"] > 1000  # the single record is split at blank lines
  assert b["input_ids"].shape == (8, 64)
  text = tok.decode(b["input_ids"][0][b["input_mask"][0] > 0])
  assert text.strip()
  ev = next(pipeline.eval_iterator(tc, tok, batch_size=8, num_batches=1))
  assert (ev["input_ids"] != b["input_ids"]).any()


def test_tfds_missing_dataset_is_a_clear_error(env, tmp_path):
  c = env[0].copy_and_resolve_references()
  c.update(source="tfds", tfds_name="tiny_shakespeare", tfds_data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="tfds_name"):
    next(pipeline.train_iterator(c, env[1], batch_size=8))


def test_text_eval_glob_gives_the_eval_documents_files_of_their_own(env, tmp_path):
  from bert_jax.data import checks  # pylint: disable=g-import-not-at-top
  c, tok, _, _ = env
  eval_file = tmp_path / "eval.txt"
  eval_file.write_text("The river runs north.\nIt is cold there.\n\nA second text.\nIt is short.\n\n"
                       "The third text.\nIt ends here.\n")
  everything = c.copy_and_resolve_references()
  everything.eval_fraction = 0.0
  all_docs = pipeline.load_corpus(everything, tok, "train", 0, 1).num_docs
  held_out = pipeline.load_corpus(c, tok, "train", 0, 1).num_docs  # eval_fraction of the file held out
  own = c.copy_and_resolve_references()
  own.text_eval_glob = str(eval_file)
  train, ev = (pipeline.load_corpus(own, tok, split, 0, 1) for split in ("train", "eval"))
  assert held_out < train.num_docs == all_docs  # every document of text_glob trains
  assert ev.num_docs == 3
  assert tok.decode(ev.tokens[:ev.sent_offsets[1]]).lower().startswith("the river runs north")
  assert checks.separate_eval(own) and not checks.separate_eval(c)
  own.text_eval_glob = str(tmp_path / "missing*.txt")
  with pytest.raises(ValueError, match=r"config.data.text_eval_glob=.*matches no file"):
    checks.source(own)
