"""Masking statistics on real text (wikitext-2 when ../shared has it, else the builtin corpus)."""

import os

import numpy as np
import pytest

from bert_jax.configs import common  # noqa: E402
from conftest import SHARED  # noqa: E402

from bert_jax.data import instances as inst_lib  # noqa: E402
from bert_jax.data import masking  # noqa: E402
from bert_jax.data import pipeline  # noqa: E402
from bert_jax.data import tokenizers  # noqa: E402

import tensorflow as tf  # noqa: E402


def real_text_config(cache_dir, **kw):
  c = common.data_config(**kw)
  c.cache_dir = str(cache_dir)
  wiki = SHARED / "data" / "wikitext-2-raw" / "wiki.valid.raw"
  if wiki.exists():
    c.source, c.text_glob, c.text_format = "text", str(wiki), "document_per_line"
  else:
    c.source = "builtin"
  c.tokenizer.vocab_size = 3000
  c.tokenizer.train_sentences = 8000
  c.eval_fraction = 0.0
  return c


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  cache = os.environ.get("BERT_JAX_CACHE") or tmp_path_factory.mktemp("cache")
  c = real_text_config(cache)
  tok = tokenizers.build_or_load(c, str(tmp_path_factory.mktemp("wd")), process_index=0)
  corpus = pipeline.load_corpus(c, tok, "train", 0, 1)
  return c, tok, corpus


def rows_for(env, L=128, kind="full_sentences", n_docs=600, pack=False):
  c, tok, corpus = env
  sub = corpus.select(np.arange(min(n_docs, corpus.num_docs)))
  sp = inst_lib.Specials(tok.cls_id, tok.sep_id, tok.pad_id)
  return inst_lib.build_rows(sub, kind=kind, max_seq_length=L, short_seq_prob=0.1, pack=pack,
                             specials=sp, seed=0, epoch=0)


def run_mask(env, rows, **overrides):
  c, tok, _ = env
  c = c.copy_and_resolve_references()
  c.update(overrides)
  c.max_seq_length = rows["input_ids"].shape[1]
  spec = masking.spec_from_config(c, tok)
  keys = masking.example_keys(1, 0, np.arange(len(rows["input_ids"])))
  b = {k: tf.constant(rows[k]) for k in ("input_ids", "input_mask")}
  out = masking.mask_batch(spec, b, tf.constant(keys))
  return spec, {k: v.numpy() for k, v in out.items()}


def check_contract(tok, rows, out):
  ids, mask = rows["input_ids"], rows["input_mask"]
  pos, w = out["masked_lm_positions"], out["masked_lm_weights"]
  length = mask.sum(1)
  real = w > 0
  assert (pos[real] < np.repeat(length, real.sum(1))).all(), "masked position beyond sequence"
  assert (pos[~real] == 0).all() and (out["masked_lm_ids"][~real] == 0).all()
  orig = np.take_along_axis(ids, pos, 1)
  assert (out["masked_lm_ids"][real] == orig[real]).all()
  assert not np.isin(orig[real], tok.special_ids).any(), "special token masked"
  # Positions are unique and increasing within a row.
  for p, r in zip(pos, real):
    assert (np.diff(p[r]) > 0).all()
  # Unmasked positions keep their ids.
  sel = np.zeros_like(ids, bool)
  np.put_along_axis(sel, pos, real, 1)
  sel[:, 0] &= real[:, 0] & (pos[:, 0] == 0)  # position 0 only when really selected
  assert (out["input_ids"][~sel] == ids[~sel]).all()
  return sel


def test_token_masking_rate_and_split(env):
  c, tok, _ = env
  rows = rows_for(env)
  spec, out = run_mask(env, rows, masking="token", mask_rate=0.15, max_predictions_per_seq=40)
  sel = check_contract(tok, rows, out)
  cand = (rows["input_mask"] > 0) & ~np.isin(rows["input_ids"], tok.special_ids)
  rate = sel.sum() / cand.sum()
  assert abs(rate - 0.15) < 0.005, rate
  new, old = out["input_ids"][sel], rows["input_ids"][sel]
  n = sel.sum()
  assert n > 5000
  frac_mask = (new == tok.mask_id).mean()
  frac_keep = (new == old).mean()
  frac_rand = 1 - frac_mask - frac_keep
  # A random replacement can draw the original id (1/vocab): negligible at 1 point.
  assert abs(frac_mask - 0.8) < 0.01 and abs(frac_keep - 0.1) < 0.01 and abs(frac_rand - 0.1) < 0.01
  assert not np.isin(new[(new != old) & (new != tok.mask_id)], tok.special_ids).any()


def test_electra_preset_split(env):
  _, tok, _ = env
  rows = rows_for(env)
  _, out = run_mask(env, rows, masking="electra", mask_rate=0.15, max_predictions_per_seq=40)
  sel = check_contract(tok, rows, out)
  new, old = out["input_ids"][sel], rows["input_ids"][sel]
  assert abs((new == tok.mask_id).mean() - 0.85) < 0.01
  assert ((new == tok.mask_id) | (new == old)).all()  # no random tokens


def words_of(tok, ids, mask):
  """Token-level word index per row, -1 at specials/padding (same rule as masking)."""
  cand = (mask > 0) & ~np.isin(ids, tok.special_ids)
  prev = np.pad(cand[:, :-1], [[0, 0], [1, 0]])
  start = cand & (tok.is_word_start[ids] | ~prev)
  return np.where(cand, np.cumsum(start, 1) - 1, -1)


def test_whole_word_never_splits(env):
  _, tok, _ = env
  rows = rows_for(env)
  _, out = run_mask(env, rows, masking="whole_word", mask_rate=0.15, max_predictions_per_seq=40)
  sel = check_contract(tok, rows, out)
  wid = words_of(tok, rows["input_ids"], rows["input_mask"])
  multi = 0
  for r in range(len(sel)):
    for w in np.unique(wid[r][sel[r]]):
      pieces = sel[r][wid[r] == w]
      assert pieces.all(), "a word was split"
      multi += len(pieces) > 1
  assert multi > 100  # multi-piece words are really exercised
  cand = (rows["input_mask"] > 0) & ~np.isin(rows["input_ids"], tok.special_ids)
  assert abs(sel.sum() / cand.sum() - 0.15) < 0.01


def long_rows(rows, frac=0.9):
  """Rows filled to >= frac of the length: a hard budget in short rows cuts long spans."""
  keep = rows["input_mask"].sum(1) >= frac * rows["input_mask"].shape[1]
  return {k: v[keep] for k, v in rows.items()}


def test_ngram_length_distribution(env):
  _, tok, _ = env
  rows = long_rows(rows_for(env, L=512, n_docs=3000, pack=True))
  _, out = run_mask(env, rows, masking="ngram", ngram_max=3, mask_rate=0.15,
                    max_predictions_per_seq=80)
  check_contract(tok, rows, out)
  hist = out["span_length_hist"] / out["span_length_hist"].sum()
  assert out["span_length_hist"].sum() > 1000
  # Under the hard budget the last spans of a row must be short, which shifts a little
  # mass to n=1 (measured on wikitext-2 valid: 0.565 / 0.260 / 0.175).
  np.testing.assert_allclose(hist, [6 / 11, 3 / 11, 2 / 11], atol=0.03)


def test_span_mean_length(env):
  _, tok, _ = env
  rows = long_rows(rows_for(env, L=512, n_docs=3000, pack=True))
  _, out = run_mask(env, rows, masking="span", span_p=0.2, span_max=10, mask_rate=0.15,
                    max_predictions_per_seq=80)
  check_contract(tok, rows, out)
  h = out["span_length_hist"]
  mean = (h * np.arange(1, 11)).sum() / h.sum()
  # Truncated geometric(0.2) on 1..10 has mean 3.79; short spans filling the end of each
  # row's budget pull the realized mean down (measured 3.52 on wikitext-2 valid).
  assert h.sum() > 500 and abs(mean - 3.8) < 0.4, (mean, h)
  assert h[0] < h[1] * 1.6 and (np.diff(h[:5].astype(float)) < 0).all(), h  # geometric shape


def test_masks_keyed_by_example(env):
  rows = rows_for(env, n_docs=100)
  _, a = run_mask(env, rows, masking="span")
  # The same examples in another order/batch get the same masks (keys travel with rows).
  c, tok, _ = env
  c = c.copy_and_resolve_references()
  c.update(masking="span")
  spec = masking.spec_from_config(c, tok)
  keys = masking.example_keys(1, 0, np.arange(len(rows["input_ids"])))
  perm = np.random.default_rng(0).permutation(len(keys))[:17]
  b = {k: tf.constant(rows[k][perm]) for k in ("input_ids", "input_mask")}
  out = masking.mask_batch(spec, b, tf.constant(keys[perm]))
  np.testing.assert_array_equal(out["masked_lm_positions"].numpy(), a["masked_lm_positions"][perm])
  # Another epoch (or seed) masks differently.
  keys2 = masking.example_keys(1, 1, np.arange(len(keys)))
  out2 = masking.mask_batch(spec, {k: tf.constant(rows[k]) for k in ("input_ids", "input_mask")},
                            tf.constant(keys2))
  assert (out2["masked_lm_positions"].numpy() != a["masked_lm_positions"]).any()


@pytest.mark.parametrize("strategy", ["span"])
def test_xla_compiled_masking_is_identical(env, strategy):
  c, tok, _ = env
  rows = rows_for(env, n_docs=60)
  c = c.copy_and_resolve_references()
  c.update(masking=strategy, max_seq_length=128)
  spec = masking.spec_from_config(c, tok)
  n = len(rows["input_ids"])
  b = {k: tf.constant(rows[k]) for k in ("input_ids", "input_mask")}
  keys = tf.constant(masking.example_keys(3, 0, np.arange(n)))
  eager = masking.mask_batch(spec, b, keys)
  xla = tf.function(lambda b, k: masking.mask_batch(spec, b, k), jit_compile=True)(b, keys)
  for k in ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
    np.testing.assert_array_equal(eager[k].numpy(), xla[k].numpy())


@pytest.mark.parametrize("xla", [False, True])
def test_first_positions(xla):
  """Selected columns in increasing order, L past the last (both search methods)."""
  rng = np.random.default_rng(0)
  sel = rng.random((64, 100)) < rng.random((64, 1)) * 0.3
  sel &= np.cumsum(sel, 1) <= 12  # at most P selected, as masking guarantees
  fn = tf.function(lambda s: masking._first_positions(s, 12, xla=xla), jit_compile=xla)  # pylint: disable=protected-access
  got = fn(tf.constant(sel)).numpy()
  for row, g in zip(sel, got):
    cols = np.nonzero(row)[0]
    np.testing.assert_array_equal(g, np.concatenate([cols, np.full(12 - len(cols), 100)]))


@pytest.mark.parametrize("token_range", ["non_special", "all"])
def test_random_ids_by_shifting_equal_the_table(env, token_range):
  c, tok, _ = env
  c = c.copy_and_resolve_references()
  c.random_token_range = token_range
  spec = masking.spec_from_config(c, tok)
  i = tf.range(len(spec.random_ids))
  got = masking._take_random_ids(spec.random_ids, tok.vocab_size, i)  # pylint: disable=protected-access
  np.testing.assert_array_equal(got.numpy(), spec.random_ids)


@pytest.mark.parametrize("overrides,key", [
    (dict(mask_rate=0.0), "mask_rate"),
    (dict(mask_rate=1.5), "mask_rate"),
    (dict(masking="bogus"), "masking"),
    (dict(mask_token_prob=0.5), "mask_token_prob"),
    (dict(masking="span", span_p=0.0), "span_p"),
    (dict(masking="span", span_max=0), "span_max"),
    (dict(masking="span", span_max=500), "span_max"),
    (dict(masking="ngram", ngram_weights="1,x"), "ngram_weights"),
    (dict(masking="ngram", ngram_weights="0,0,0"), "ngram_weights"),
    (dict(masking="ngram", ngram_weights="1,1"), "ngram_weights"),
    (dict(max_predictions_per_seq=0), "max_predictions_per_seq"),
    (dict(random_token_range="some"), "random_token_range"),
])
def test_bad_masking_config(env, overrides, key):
  c, tok, _ = env
  c = c.copy_and_resolve_references()
  c.update(overrides)
  with pytest.raises(ValueError, match=key):
    masking.spec_from_config(c, tok)


def test_whole_word_buckets_equal_one_sort(env):
  """Rows sorted in buckets by word count get the masks of one sort over all columns."""
  # pylint: disable=protected-access
  c, tok, _ = env
  rows = rows_for(env, L=256, kind="nsp")
  c = c.copy_and_resolve_references()
  c.update(masking="whole_word", max_seq_length=256, max_predictions_per_seq=40)
  spec = masking.spec_from_config(c, tok)
  ids, mask = tf.constant(rows["input_ids"]), tf.constant(rows["input_mask"])
  cand = (mask > 0) & ~masking._is_any(ids, spec.special_ids, tok.vocab_size)
  wid = masking._word_ids(spec, ids, cand)
  budget = masking._budget(spec, tf.reduce_sum(tf.cast(cand, tf.int32), axis=1))
  keys = tf.constant(masking.example_keys(2, 0, np.arange(len(rows["input_ids"]))))
  n_words = wid.numpy().max(1) + 1
  assert (n_words <= 16).any() and (n_words > 128).any()  # first and last bucket used
  one, buckets = (masking._select_whole_words(spec, keys, cand, wid, budget, min_width=w).numpy()
                  for w in (256, 16))
  np.testing.assert_array_equal(one, buckets)
  assert one.any()
