"""bert_jax.metrics against scikit-learn and scipy on random and edge-case inputs."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from bert_jax import metrics

sk = pytest.importorskip("sklearn.metrics")


def _sk(fn, *args):
  with warnings.catch_warnings():  # undefined F1 / MCC warn in sklearn
    warnings.simplefilter("ignore")
    return float(fn(*args))


def _cases():
  rng = np.random.default_rng(0)
  out = []
  for n in (1, 2, 7, 100, 1000):
    out.append((rng.integers(0, 2, n), rng.integers(0, 2, n)))  # random binary
  labels = rng.integers(0, 2, 50)
  out += [
      (labels, labels), (1 - labels, labels),                      # perfect, inverted
      (np.zeros(20, int), np.zeros(20, int)),                      # all one class, agreeing
      (np.ones(20, int), np.ones(20, int)),
      (np.zeros(20, int), labels[:20]),                            # constant prediction
      (labels[:20], np.ones(20, int)),                             # constant labels
      (np.array([0, 1]), np.array([1, 0])),
  ]
  return out


@pytest.mark.parametrize("case", range(len(_cases())))
def test_binary_metrics_match_sklearn(case):
  pred, labels = _cases()[case]
  assert metrics.accuracy(pred, labels) == pytest.approx(_sk(sk.accuracy_score, labels, pred))
  assert metrics.f1(pred, labels) == pytest.approx(_sk(sk.f1_score, labels, pred))
  assert metrics.mcc(pred, labels) == pytest.approx(_sk(sk.matthews_corrcoef, labels, pred),
                                                    abs=1e-12)


def test_mcc_multiclass_matches_sklearn():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 500)
  pred = np.where(rng.random(500) < 0.6, labels, rng.integers(0, 3, 500))
  assert metrics.mcc(pred, labels) == pytest.approx(sk.matthews_corrcoef(labels, pred))
  assert metrics.mcc(labels, labels) == pytest.approx(1.0)
  # A class only in the predictions.
  assert metrics.mcc(pred + (pred == 2), labels) == pytest.approx(
      sk.matthews_corrcoef(labels, pred + (pred == 2)))


def test_correlations_match_scipy():
  rng = np.random.default_rng(2)
  x = rng.normal(size=300).astype(np.float32)
  y = (x + rng.normal(size=300)).astype(np.float32)
  y_ties = np.round(y)  # Spearman with ties (average ranks)
  for a, b in ((x, y), (x, y_ties), (x[:2], y[:2])):
    assert metrics.pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-6)
    assert metrics.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-6)
  assert math.isnan(metrics.pearson(np.ones(5), x[:5]))  # constant input: nan, as scipy
  assert math.isnan(metrics.spearman(x[:5], np.ones(5)))


def test_compute_and_errors():
  out = metrics.compute(("accuracy", "f1", "mcc"), [1, 0, 1, 1], [1, 0, 0, 1])
  assert out == pytest.approx(dict(accuracy=0.75, f1=0.8, mcc=sk.matthews_corrcoef(
      [1, 0, 0, 1], [1, 0, 1, 1])))
  assert list(out) == ["accuracy", "f1", "mcc"]
  with pytest.raises(ValueError, match=r"Unknown metrics \['auc'\]; known: .*accuracy"):
    metrics.compute(("auc",), [1], [1])
  with pytest.raises(ValueError, match="argmax"):
    metrics.accuracy(np.zeros((4, 2)), np.zeros(4))
  with pytest.raises(ValueError, match="no examples"):
    metrics.f1([], [])
  with pytest.raises(ValueError, match="at least 2"):
    metrics.pearson([1.0], [2.0])
