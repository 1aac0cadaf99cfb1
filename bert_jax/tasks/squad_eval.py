r"""SQuAD v1.1 / v2.0 evaluation with the official scripts' semantics.

  python -m bert_jax.tasks.squad_eval dev-v2.0.json predictions.json [--na_prob_file null_odds.json]
  python -m bert_jax.tasks.squad_eval dev-v1.1.json --first_sentence_baseline --articles 46:48

Answers are compared after the official normalization (lower case, punctuation removed, the
articles a/an/the removed, whitespace collapsed); EM and F1 are the maximum over the gold
answers, and averaged over questions as percentages. v1.1 (evaluate-v1.1.py): every question
has answers; a question without a prediction scores 0. v2.0 (evaluate-v2.0.py): an
unanswerable question's gold answer is "" (so only the empty prediction scores 1); with no-answer
probabilities (`na_probs`, e.g. the null-score differences of bert_jax.data.squad) it also
reports the best threshold for abstaining (`best_exact_thresh`, `best_f1_thresh`): the value
the reference run_squad's `null_score_diff_threshold` is set to after a dev run.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import string
from typing import Any, Mapping

from bert_jax.data import squad

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
  """Lower case, drop punctuation, articles and extra whitespace (both official scripts)."""
  s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
  return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, version: str = "v2.0") -> float:
  """Token-level F1 of the normalized answers. v2.0: an empty answer scores 1 against an empty
  one and 0 otherwise; v1.1: no overlap (empty answers included) scores 0."""
  pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if version == "v2.0" and (not pred or not ref):
    return float(pred == ref)
  common = collections.Counter(pred) & collections.Counter(ref)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred), same / len(ref)
  return 2 * precision * recall / (precision + recall)


def gold_answers(qa: Mapping[str, Any], version: str = "v2.0") -> list[str]:
  """The gold texts a prediction is scored against (the max over them). v2.0 drops answers that
  normalize to nothing and uses [""] when none is left (an unanswerable question); v1.1 all."""
  texts = [a["text"] for a in qa.get("answers", [])]
  if version == "v1.1":
    return texts
  return [t for t in texts if normalize_answer(t)] or [""]


def questions(dataset: list[Mapping[str, Any]]):
  """(qas_id, qa dict) of every question of the JSON's `data` list."""
  for article in dataset:
    for paragraph in article["paragraphs"]:
      for qa in paragraph["qas"]:
        yield qa["id"], qa


def _best_threshold(preds, scores, na_probs, has_answer) -> tuple[float, float]:
  """evaluate-v2.0.py find_best_thresh: abstain when na_prob > t; the best score and its t."""
  num_no_ans = sum(not h for h in has_answer.values())
  cur = best = float(num_no_ans)
  best_thresh = 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if qid not in scores:
      continue
    if has_answer[qid]:
      diff = scores[qid]
    else:
      diff = -1.0 if preds[qid] else 0.0
    cur += diff
    if cur > best:
      best, best_thresh = cur, na_probs[qid]
  return 100.0 * best / len(scores), best_thresh


def _mean(scores: Mapping[str, float], ids) -> float:
  return 100.0 * sum(scores[q] for q in ids) / len(ids)


def evaluate(dataset: list[Mapping[str, Any]], predictions: Mapping[str, str], version: str = "v2.0",
             na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict[str, float]:
  """EM / F1 (percentages) of `predictions` (qas_id -> text) on the JSON's `data` list.

  version "v1.1": evaluate-v1.1.py ({exact_match, f1}; an unanswered question counts 0).
  version "v2.0": evaluate-v2.0.py ({exact, f1, total, HasAns_*, NoAns_*}; a question is
  answerable when its `answers` list is non-empty; a question answered "" where
  na_probs[qid] > na_prob_thresh; with na_probs given, best_exact / best_f1 and their
  thresholds too). v2.0 needs a prediction for every question.
  """
  if version not in ("v1.1", "v2.0"):
    raise ValueError(f"version={version!r}: use 'v1.1' or 'v2.0'.")
  exact, f1, has_answer = {}, {}, {}
  for qid, qa in questions(dataset):
    has_answer[qid] = bool(qa.get("answers"))
    if qid not in predictions:
      if version == "v2.0":
        raise ValueError(f"No prediction for question {qid!r}: SQuAD v2.0 scores every question "
                         "(predict '' to abstain).")
      exact[qid] = f1[qid] = 0.0
      continue
    pred, golds = predictions[qid], gold_answers(qa, version)
    if not golds:
      raise ValueError(f"Question {qid!r} has no answers: an unanswerable (v2.0) question; evaluate with "
                       "version='v2.0'.")
    exact[qid] = max(exact_match(pred, g) for g in golds)
    f1[qid] = max(f1_score(pred, g, version) for g in golds)
  if not exact:
    raise ValueError("The dataset has no questions.")
  if version == "v1.1":
    return {"exact_match": _mean(exact, exact), "f1": _mean(f1, f1)}
  probs = na_probs if na_probs is not None else {k: 0.0 for k in predictions}
  abstain = lambda scores: {q: float(not has_answer[q]) if probs[q] > na_prob_thresh else s  # noqa: E731
                            for q, s in scores.items()}
  exact_t, f1_t = abstain(exact), abstain(f1)
  out = {"exact": _mean(exact_t, exact_t), "f1": _mean(f1_t, f1_t), "total": len(exact_t)}
  for name, keep in (("HasAns", True), ("NoAns", False)):
    ids = [q for q in exact if has_answer[q] == keep]
    if ids:
      out.update({f"{name}_exact": _mean(exact_t, ids), f"{name}_f1": _mean(f1_t, ids), f"{name}_total": len(ids)})
  if na_probs is not None:
    out["best_exact"], out["best_exact_thresh"] = _best_threshold(predictions, exact, na_probs, has_answer)
    out["best_f1"], out["best_f1_thresh"] = _best_threshold(predictions, f1, na_probs, has_answer)
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("data_file")
  parser.add_argument("pred_file", nargs="?", default="", help="predictions.json (qas_id -> text)")
  parser.add_argument("--na_prob_file", default=None)
  parser.add_argument("--na_prob_thresh", type=float, default=1.0)
  parser.add_argument("--version", default="", help="v1.1 | v2.0 (default: the file's version)")
  parser.add_argument("--articles", default="", help="a:b: score only these articles of the file")
  parser.add_argument("--first_sentence_baseline", action="store_true",
                      help="score the baseline that answers with the context's first sentence")
  args = parser.parse_args(argv)
  with open(args.data_file, encoding="utf-8") as f:
    data = json.load(f)
  dataset = data["data"]
  if args.articles:
    start, stop = (int(x) if x else None for x in args.articles.split(":"))
    dataset = dataset[start:stop]
  if args.first_sentence_baseline:
    preds = squad.first_sentence_predictions(squad.from_json({"data": dataset}))
  elif args.pred_file:
    with open(args.pred_file, encoding="utf-8") as f:
      preds = json.load(f)
  else:
    parser.error("give pred_file or --first_sentence_baseline")
  na_probs = None
  if args.na_prob_file:
    with open(args.na_prob_file, encoding="utf-8") as f:
      na_probs = json.load(f)
  version = args.version or ("v1.1" if str(data.get("version")) == "1.1" else "v2.0")
  print(json.dumps(evaluate(dataset, preds, version, na_probs, args.na_prob_thresh), indent=2))


if __name__ == "__main__":
  main()
