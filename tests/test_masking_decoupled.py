"""Decoupled corruption and prediction rates (Wettig et al. 2022) and the fixed eval masking.

config.data.mask_rate is the share of maskable tokens predicted, config.data.corrupt_rate the
share corrupted; the smaller set is nested in the larger. Measured on real text (the rows of
tests/test_masking.py) with every corrupted token replaced by [MASK] (mask_token_prob=1), so
the corrupted set is visible in the output.
"""

import numpy as np
import pytest

from bert_jax.configs import common
from bert_jax.data import pipeline
from test_masking import env, rows_for, run_mask  # noqa: F401  # the module-scoped corpus fixture

SPLIT = dict(mask_token_prob=1.0, random_token_prob=0.0, keep_token_prob=0.0)


def shares(env, rows, **overrides):  # noqa: F811
  """(corrupted, predicted) boolean [B, L] arrays and the maskable-token mask."""
  _, tok, _ = env
  _, out = run_mask(env, rows, **SPLIT, **overrides)
  ids, mask = rows["input_ids"], rows["input_mask"]
  cand = (mask > 0) & ~np.isin(ids, tok.special_ids)
  corrupted = (out["input_ids"] == tok.mask_id) & cand
  predicted = np.zeros_like(cand)
  real = out["masked_lm_weights"] > 0
  np.put_along_axis(predicted, out["masked_lm_positions"], real, 1)
  predicted[:, 0] &= real[:, 0] & (out["masked_lm_positions"][:, 0] == 0)
  assert (out["input_ids"][~corrupted] == ids[~corrupted]).all(), "a token outside the corrupted set changed"
  return corrupted, predicted, cand


def budget(cand, rate, cap):
  n = cand.sum(1)
  return np.where(n > 0, np.minimum(cap, np.maximum(1, np.round(n * rate))), 0)


@pytest.mark.parametrize("strategy", ["token", "whole_word", "span"])
@pytest.mark.parametrize("corrupt,predict", [(0.4, 0.2), (0.2, 0.4)])
def test_corrupted_and_predicted_shares_as_configured(env, strategy, corrupt, predict):  # noqa: F811
  rows = rows_for(env, L=128, n_docs=300)
  P = 64
  corrupted, predicted, cand = shares(env, rows, masking=strategy, mask_rate=predict, corrupt_rate=corrupt,
                                      max_predictions_per_seq=P)
  n = cand.sum()
  want_c = budget(cand, corrupt, int(np.ceil(P * corrupt / predict))).sum() / n
  want_p = budget(cand, predict, P).sum() / n
  got_c, got_p = corrupted.sum() / n, predicted.sum() / n
  if strategy == "token":  # exact budgets
    assert got_c == pytest.approx(want_c, abs=1e-9) and got_p == pytest.approx(want_p, abs=1e-9)
  else:  # whole words / spans fill the larger budget up to a word; the smaller is exact within it
    assert abs(got_c - corrupt) < 0.03 and abs(got_p - predict) < 0.03, (got_c, got_p)
  # The smaller set is a subset of the larger, and its share is the configured one.
  small, large = (predicted, corrupted) if predict < corrupt else (corrupted, predicted)
  assert (small <= large).all()
  assert small.sum() / n == pytest.approx(min(want_c, want_p), abs=0.005 if strategy == "token" else 0.03)
  # Both sets are spread over the rows: every row with candidates has both.
  has = cand.sum(1) > 0
  assert (corrupted.sum(1)[has] > 0).all() and (predicted.sum(1)[has] > 0).all()


def test_equal_rates_are_todays_masking(env):  # noqa: F811
  """corrupt_rate = mask_rate (or 0, the default) gives exactly the coupled masking."""
  rows = rows_for(env, L=64, n_docs=100)
  _, a = run_mask(env, rows, mask_rate=0.3, max_predictions_per_seq=32)
  _, b = run_mask(env, rows, mask_rate=0.3, corrupt_rate=0.3, max_predictions_per_seq=32)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_bad_corrupt_rate(env):  # noqa: F811
  rows = rows_for(env, L=64, n_docs=20)
  with pytest.raises(ValueError, match="config.data.corrupt_rate"):
    run_mask(env, rows, corrupt_rate=1.5)


def test_fixed_eval_masking_config():
  """eval_masking / eval_mask_rate replace the training masking of the eval stream only."""
  c = common.data_config(masking="span", mask_rate=0.4, corrupt_rate=0.6)
  assert pipeline.eval_data_config(c) is c  # not set: the training masking
  c.eval_masking, c.eval_mask_rate = "token", 0.15
  e = pipeline.eval_data_config(c)
  assert (e.masking, e.mask_rate, e.corrupt_rate) == ("token", 0.15, 0.0)
  assert (c.masking, c.mask_rate, c.corrupt_rate) == ("span", 0.4, 0.6)


@pytest.mark.slow  # an XLA compile of the span loop
def test_decoupled_span_masking_under_xla_is_identical(env):  # noqa: F811
  """The pipeline compiles span masking with XLA: the decoupled path gives the same masks."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from bert_jax.data import masking  # pylint: disable=g-import-not-at-top
  c, tok, _ = env
  rows = rows_for(env, n_docs=60)
  c = c.copy_and_resolve_references()
  c.update(masking="span", max_seq_length=128, mask_rate=0.2, corrupt_rate=0.4, max_predictions_per_seq=32)
  spec = masking.spec_from_config(c, tok)
  b = {k: tf.constant(rows[k]) for k in ("input_ids", "input_mask")}
  keys = tf.constant(masking.example_keys(3, 0, np.arange(len(rows["input_ids"]))))
  eager = masking.mask_batch(spec, b, keys)
  xla = tf.function(lambda b, k: masking.mask_batch(spec, b, k), jit_compile=True)(b, keys)
  for k in ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
    np.testing.assert_array_equal(eager[k].numpy(), xla[k].numpy())
