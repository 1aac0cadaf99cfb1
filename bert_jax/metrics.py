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


# ----------------------------------------------------------------------------------------------
# Sequence labelling (NER, chunking): entity-level scores with seqeval's default semantics.
# ----------------------------------------------------------------------------------------------
def _tag_parts(tag: str) -> tuple[str, str]:
  """("B" | "I" | "E" | "S" | "O" | ..., type) of a tag like B-PER (a bare I or B has type "_")."""
  return tag[:1], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _ends(prev_tag, tag, prev_type, type_) -> bool:
  if prev_tag in ("E", "S"):
    return True
  if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
    return True
  return prev_tag not in ("O", ".") and prev_type != type_


def _starts(prev_tag, tag, prev_type, type_) -> bool:
  if tag in ("B", "S"):
    return True
  if tag in ("E", "I") and prev_tag in ("E", "S", "O"):
    return True
  return tag not in ("O", ".") and prev_type != type_


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
  """(type, first, last) chunks of one tag sequence, as conlleval and seqeval (IOB1, IOB2,
  IOBES): a chunk starts at B/S, at I/E after O, E or S, or where the type changes."""
  out, prev_tag, prev_type, begin = [], "O", "", 0
  for i, tag in enumerate(list(tags) + ["O"]):
    t, type_ = _tag_parts(tag)
    if _ends(prev_tag, t, prev_type, type_):
      out.append((prev_type, begin, i - 1))
    if _starts(prev_tag, t, prev_type, type_):
      begin = i
    prev_tag, prev_type = t, type_
  return out


def entity_scores(true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]]) -> dict[str, float]:
  """Micro precision / recall / F1 over entities (exact type and span) and token accuracy, over
  sentences of tags; 0.0 where a ratio is undefined (seqeval's default)."""
  if len(true_seqs) != len(pred_seqs) or any(len(t) != len(p) for t, p in zip(true_seqs, pred_seqs)):
    raise ValueError("entity_scores: true and predicted tag sequences must have the same lengths.")
  gold, pred = set(), set()
  correct_tokens = total_tokens = 0
  for i, (t, p) in enumerate(zip(true_seqs, pred_seqs)):
    gold.update((i,) + e for e in entities(t))
    pred.update((i,) + e for e in entities(p))
    correct_tokens += sum(a == b for a, b in zip(t, p))
    total_tokens += len(t)
  tp = len(gold & pred)
  precision = tp / len(pred) if pred else 0.0
  recall = tp / len(gold) if gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1,
          "accuracy": correct_tokens / total_tokens if total_tokens else float("nan")}
