"""Host-side evaluation metrics on predictions (numpy + scipy): the GLUE set.

Classification metrics take predicted and gold class ids; `f1` is binary with class 1 as
the positive class. `mcc` and `f1` return 0.0 where they are undefined, as scikit-learn
does; `pearson` and `spearman` return nan for a constant input, as scipy does. All
metrics are "higher is better".
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats


def _pair(pred, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
  pred, labels = np.asarray(pred), np.asarray(labels)
  if pred.ndim != 1 or pred.shape != labels.shape:
    raise ValueError(f"{name}: predictions {pred.shape} and labels {labels.shape} must be "
                     "1-D arrays of one length (take the argmax of logits first).")
  if not len(pred):
    raise ValueError(f"{name}: no examples to score.")
  return pred, labels


def accuracy(pred, labels) -> float:
  """The fraction of predictions equal to the labels."""
  pred, labels = _pair(pred, labels, "accuracy")
  return float(np.mean(pred == labels))


def f1(pred, labels) -> float:
  """Binary F1 of class 1: 2 TP / (2 TP + FP + FN); 0.0 with no positives at all."""
  pred, labels = _pair(pred, labels, "f1")
  p, t = pred == 1, labels == 1
  tp = np.sum(p & t)
  denom = 2 * tp + np.sum(p & ~t) + np.sum(~p & t)
  return float(2 * tp / denom) if denom else 0.0


def mcc(pred, labels) -> float:
  """Matthews correlation coefficient (multiclass form); 0.0 where undefined."""
  pred, labels = _pair(pred, labels, "mcc")
  classes, inv = np.unique(np.concatenate([labels, pred]), return_inverse=True)
  k, n = len(classes), len(pred)
  confusion = np.zeros((k, k), np.float64)
  np.add.at(confusion, (inv[:n], inv[n:]), 1.0)
  t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
  cov_tp = np.trace(confusion) * n - t_sum @ p_sum
  cov_pp = float(n) ** 2 - p_sum @ p_sum
  cov_tt = float(n) ** 2 - t_sum @ t_sum
  if cov_pp * cov_tt == 0:
    return 0.0
  return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def _correlation(fn, x, y, name: str) -> float:
  x, y = _pair(x, y, name)
  if len(x) < 2:
    raise ValueError(f"{name}: needs at least 2 examples, got {len(x)}.")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", stats.ConstantInputWarning)
    return float(fn(x.astype(np.float64), y.astype(np.float64))[0])


def pearson(x, y) -> float:
  """Pearson correlation (scipy.stats.pearsonr); nan when either input is constant."""
  return _correlation(stats.pearsonr, x, y, "pearson")


def spearman(x, y) -> float:
  """Spearman rank correlation (scipy.stats.spearmanr); nan when either input is constant."""
  return _correlation(stats.spearmanr, x, y, "spearman")


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = dict(
    accuracy=accuracy, f1=f1, mcc=mcc, pearson=pearson, spearman=spearman)


def compute(names: Sequence[str], pred, labels) -> dict[str, float]:
  """{name: metric(pred, labels)} for the metric names given (keys of METRICS)."""
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise ValueError(f"Unknown metrics {unknown}; known: {sorted(METRICS)}.")
  return {n: METRICS[n](pred, labels) for n in names}
