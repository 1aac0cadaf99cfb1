"""SQuAD: the official evaluation semantics, featurization round trips, post-processing.

The reference for EM/F1 is a transcription of the official evaluate-v1.1.py and
evaluate-v2.0.py functions kept here (below, unchanged in logic); bert_jax.tasks.squad_eval must give
the same numbers on hand-made edge cases and on real dev questions with perturbed predictions.
Featurization: answers of real dev articles go to pieces and back to the original text through
windows with a small stride (logits that put all mass on the gold pieces give EM above 98%:
the rest are answers that are part of a piece, which the reference cannot express either).
"""

import collections
import json
import re
import string

import numpy as np
import pytest
from conftest import shared_path

from bert_jax.data import squad
from bert_jax.tasks import squad_eval


# ---------------------------------------------------------------------------------------------
# Transcription of the official evaluate-v1.1.py (SQuAD v1.1).
# ---------------------------------------------------------------------------------------------
def v1_normalize_answer(s):
  def remove_articles(text):
    return re.sub(r"\b(a|an|the)\b", " ", text)

  def white_space_fix(text):
    return " ".join(text.split())

  def remove_punc(text):
    exclude = set(string.punctuation)
    return "".join(ch for ch in text if ch not in exclude)

  def lower(text):
    return text.lower()

  return white_space_fix(remove_articles(remove_punc(lower(s))))


def v1_f1_score(prediction, ground_truth):
  prediction_tokens = v1_normalize_answer(prediction).split()
  ground_truth_tokens = v1_normalize_answer(ground_truth).split()
  common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0
  precision = 1.0 * num_same / len(prediction_tokens)
  recall = 1.0 * num_same / len(ground_truth_tokens)
  return (2 * precision * recall) / (precision + recall)


def v1_exact_match_score(prediction, ground_truth):
  return v1_normalize_answer(prediction) == v1_normalize_answer(ground_truth)


def v1_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
  return max(metric_fn(prediction, gt) for gt in ground_truths)


def v1_evaluate(dataset, predictions):
  f1 = exact_match = total = 0
  for article in dataset:
    for paragraph in article["paragraphs"]:
      for qa in paragraph["qas"]:
        total += 1
        if qa["id"] not in predictions:
          continue
        ground_truths = list(map(lambda x: x["text"], qa["answers"]))
        prediction = predictions[qa["id"]]
        exact_match += v1_metric_max_over_ground_truths(v1_exact_match_score, prediction, ground_truths)
        f1 += v1_metric_max_over_ground_truths(v1_f1_score, prediction, ground_truths)
  return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# ---------------------------------------------------------------------------------------------
# Transcription of the official evaluate-v2.0.py (SQuAD v2.0).
# ---------------------------------------------------------------------------------------------
def v2_make_qid_to_has_ans(dataset):
  qid_to_has_ans = {}
  for article in dataset:
    for p in article["paragraphs"]:
      for qa in p["qas"]:
        qid_to_has_ans[qa["id"]] = bool(qa["answers"])
  return qid_to_has_ans


def v2_normalize_answer(s):
  def remove_articles(text):
    regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
    return re.sub(regex, " ", text)

  def white_space_fix(text):
    return " ".join(text.split())

  def remove_punc(text):
    exclude = set(string.punctuation)
    return "".join(ch for ch in text if ch not in exclude)

  def lower(text):
    return text.lower()

  return white_space_fix(remove_articles(remove_punc(lower(s))))


def v2_get_tokens(s):
  if not s:
    return []
  return v2_normalize_answer(s).split()


def v2_compute_exact(a_gold, a_pred):
  return int(v2_normalize_answer(a_gold) == v2_normalize_answer(a_pred))


def v2_compute_f1(a_gold, a_pred):
  gold_toks = v2_get_tokens(a_gold)
  pred_toks = v2_get_tokens(a_pred)
  common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
  num_same = sum(common.values())
  if len(gold_toks) == 0 or len(pred_toks) == 0:
    return int(gold_toks == pred_toks)
  if num_same == 0:
    return 0
  precision = 1.0 * num_same / len(pred_toks)
  recall = 1.0 * num_same / len(gold_toks)
  return (2 * precision * recall) / (precision + recall)


def v2_get_raw_scores(dataset, preds):
  exact_scores, f1_scores = {}, {}
  for article in dataset:
    for p in article["paragraphs"]:
      for qa in p["qas"]:
        qid = qa["id"]
        gold_answers = [a["text"] for a in qa["answers"] if v2_normalize_answer(a["text"])]
        if not gold_answers:
          gold_answers = [""]
        if qid not in preds:
          continue
        a_pred = preds[qid]
        exact_scores[qid] = max(v2_compute_exact(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(v2_compute_f1(a, a_pred) for a in gold_answers)
  return exact_scores, f1_scores


def v2_apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
  new_scores = {}
  for qid, s in scores.items():
    pred_na = na_probs[qid] > na_prob_thresh
    new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
  return new_scores


def v2_make_eval_dict(exact_scores, f1_scores, qid_list=None):
  if not qid_list:
    total = len(exact_scores)
    return collections.OrderedDict([("exact", 100.0 * sum(exact_scores.values()) / total),
                                    ("f1", 100.0 * sum(f1_scores.values()) / total), ("total", total)])
  total = len(qid_list)
  return collections.OrderedDict([("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
                                  ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total), ("total", total)])


def v2_merge_eval(main_eval, new_eval, prefix):
  for k in new_eval:
    main_eval["%s_%s" % (prefix, k)] = new_eval[k]


def v2_find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
  num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
  cur_score = num_no_ans
  best_score = cur_score
  best_thresh = 0.0
  qid_list = sorted(na_probs, key=lambda k: na_probs[k])
  for qid in qid_list:
    if qid not in scores:
      continue
    if qid_to_has_ans[qid]:
      diff = scores[qid]
    else:
      diff = -1 if preds[qid] else 0
    cur_score += diff
    if cur_score > best_score:
      best_score = cur_score
      best_thresh = na_probs[qid]
  return 100.0 * best_score / len(scores), best_thresh


def v2_evaluate(dataset, preds, na_probs=None, na_prob_thresh=1.0):
  """main() of evaluate-v2.0.py, returning out_eval."""
  has_na_file = na_probs is not None
  if na_probs is None:
    na_probs = {k: 0.0 for k in preds}
  qid_to_has_ans = v2_make_qid_to_has_ans(dataset)
  has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
  no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
  exact_raw, f1_raw = v2_get_raw_scores(dataset, preds)
  exact_thresh = v2_apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
  f1_thresh = v2_apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
  out_eval = v2_make_eval_dict(exact_thresh, f1_thresh)
  if has_ans_qids:
    v2_merge_eval(out_eval, v2_make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
  if no_ans_qids:
    v2_merge_eval(out_eval, v2_make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
  if has_na_file:
    best_exact, exact_thresh_v = v2_find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh_v = v2_find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    out_eval.update(best_exact=best_exact, best_exact_thresh=exact_thresh_v, best_f1=best_f1,
                    best_f1_thresh=f1_thresh_v)
  return dict(out_eval)


# ---------------------------------------------------------------------------------------------
# Edge cases.
# ---------------------------------------------------------------------------------------------
def _qa(qid, *answers):
  return {"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]}


EDGE = [{"title": "t", "paragraphs": [{"context": "c", "qas": [
    _qa("articles", "the Eiffel Tower"),              # articles, case, punctuation, whitespace
    _qa("multi", "Denver Broncos", "Broncos", "the Denver Broncos"),  # max over gold answers
    _qa("repeat", "cat"),                             # repeated tokens count once per gold occurrence
    _qa("only_article", "The"),                       # gold normalizes to nothing
    _qa("empty_pred", "Paris"),
    _qa("unicode", "1850\u20131860"),                  # non-ASCII punctuation is kept
    _qa("inner_article", "theatre"),                  # "the" inside a word stays
    _qa("partial", "the quick brown fox"),
    _qa("missing", "never predicted"),
    _qa("no_answer"),                                 # unanswerable (v2.0)
    _qa("no_answer_wrong"),
]}]}]
PREDS = {"articles": "  eiffel   tower!! ", "multi": "broncos.", "repeat": "cat cat cat",
         "only_article": "", "empty_pred": "", "unicode": "1850-1860", "inner_article": "atre",
         "partial": "a brown fox jumps", "no_answer": "", "no_answer_wrong": "something"}


def test_v1_edge_cases_equal_official():
  data = json.loads(json.dumps(EDGE))
  data[0]["paragraphs"][0]["qas"] = [qa for qa in data[0]["paragraphs"][0]["qas"] if qa["answers"]]
  want = v1_evaluate(data, PREDS)
  got = squad_eval.evaluate(data, PREDS, "v1.1")
  assert got == pytest.approx(want, abs=1e-9)
  # Per question, too (the aggregate could hide compensating errors).
  for qid, qa in squad_eval.questions(data):
    golds = [a["text"] for a in qa["answers"]]
    if qid in PREDS and golds:
      assert squad_eval.f1_score(PREDS[qid], golds[0], "v1.1") == pytest.approx(v1_f1_score(PREDS[qid], golds[0]))
  assert squad_eval.normalize_answer(" The  Eiffel,  tower! ") == "eiffel tower"
  with pytest.raises(ValueError, match="'no_answer' has no answers"):
    squad_eval.evaluate(EDGE, PREDS, "v1.1")


def test_v2_edge_cases_and_thresholds_equal_official():
  preds = dict(PREDS, missing="x")
  want = v2_evaluate(EDGE, preds)
  assert squad_eval.evaluate(EDGE, preds, "v2.0") == pytest.approx(want, abs=1e-9)
  rng = np.random.default_rng(0)
  na = {k: float(rng.uniform()) for k in preds}
  for thresh in (1.0, 0.5, 0.1):
    want = v2_evaluate(EDGE, preds, na, thresh)
    assert squad_eval.evaluate(EDGE, preds, "v2.0", na, thresh) == pytest.approx(want, abs=1e-9)
  with pytest.raises(ValueError, match="No prediction for question 'missing'"):
    squad_eval.evaluate(EDGE, PREDS, "v2.0")


def _perturbed_predictions(examples, rng):
  """Gold answers with the kinds of mistakes models make: cut, extended, case, punctuation."""
  preds = {}
  for ex in examples:
    gold = ex.answers[0] if ex.answers else ""
    kind = rng.integers(6)
    words = ex.context.split()
    if kind == 0:
      preds[ex.qas_id] = gold
    elif kind == 1:
      preds[ex.qas_id] = " ".join(gold.split()[:-1])
    elif kind == 2:
      preds[ex.qas_id] = "The " + gold.upper() + " " + words[int(rng.integers(len(words)))]
    elif kind == 3:
      preds[ex.qas_id] = gold.replace(" ", ", ")
    elif kind == 4:
      start = int(rng.integers(len(words)))
      preds[ex.qas_id] = " ".join(words[start:start + int(rng.integers(1, 6))])
    else:
      preds[ex.qas_id] = ""
  return preds


def test_real_dev_questions_equal_official_v1_and_v2():
  path = shared_path("data", "squad-v1.1", "dev-v1.1.json")
  data = json.loads(path.read_text())["data"][:4]
  examples = squad.from_json({"data": data})
  preds = _perturbed_predictions(examples, np.random.default_rng(1))
  assert squad_eval.evaluate(data, preds, "v1.1") == pytest.approx(v1_evaluate(data, preds), abs=1e-9)
  # A v2.0 set from it: every third question loses its answers.
  v2 = json.loads(json.dumps(data))
  for i, (_, qa) in enumerate(squad_eval.questions(v2)):
    if i % 3 == 0:
      qa["answers"], qa["is_impossible"] = [], True
  na = {k: float(v) for k, v in zip(preds, np.random.default_rng(2).normal(size=len(preds)))}
  got = squad_eval.evaluate(v2, preds, "v2.0", na, 0.3)
  assert got == pytest.approx(v2_evaluate(v2, preds, na, 0.3), abs=1e-9)
  assert got["best_f1"] >= got["f1"] - 1e-9


# ---------------------------------------------------------------------------------------------
# Featurization and post-processing.
# ---------------------------------------------------------------------------------------------
class CharTokenizer:
  """A WordPiece-like tokenizer over a fixed vocabulary: words split at punctuation, lower case,
  pieces of at most 3 characters ("##" continuations): many pieces per word, no vocab file."""

  kind = "wordpiece"
  lower_case = True
  pad_id, unk_id, cls_id, sep_id, mask_id = 0, 1, 2, 3, 4

  def __init__(self):
    self.pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    self.ids = {}

  @property
  def vocab_size(self):
    return len(self.pieces)

  def _id(self, piece):
    if piece not in self.ids:
      self.ids[piece] = len(self.pieces)
      self.pieces.append(piece)
    return self.ids[piece]

  def encode(self, text):
    from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
    out = []
    for word in tokenizers.basic_tokenize(text, True):
      out += [self._id(word[i:i + 3] if i == 0 else "##" + word[i:i + 3]) for i in range(0, len(word), 3)]
    return out

  def decode(self, ids):
    return " ".join(self.pieces[int(i)] for i in ids).replace(" ##", "")


CONTEXT = ("In 1895, the physicist Wilhelm Röntgen (1845-1923) discovered X-rays, while "
           "studying cathode rays. His discovery earned him the first Nobel Prize in Physics in 1901. "
           "The rays were called \"X\" because their nature was unknown.")


def _example(qid, question, answer, occurrence=0):
  start = -1
  for _ in range(occurrence + 1):
    start = CONTEXT.index(answer, start + 1)
  return squad.make_example(qid, question, CONTEXT, [{"text": answer, "answer_start": start}])


def _oracle_logits(feats):
  n, length = feats.arrays["input_ids"].shape
  start, end = np.full((n, length), -10.0), np.full((n, length), -10.0)
  rows = np.arange(n)
  start[rows, feats.arrays["start_positions"]] = 10.0
  end[rows, feats.arrays["end_positions"]] = 10.0
  start[:, 0] = end[:, 0] = -10.0
  return start, end


@pytest.mark.parametrize("max_len,stride", [(128, 128), (40, 8), (32, 5)])
def test_answers_round_trip_through_windows(max_len, stride):
  tok = CharTokenizer()
  examples = [_example("year", "When?", "1895"),              # inside "1895," (punctuation split)
              _example("name", "Who?", "Wilhelm Röntgen"),     # accent
              _example("inner", "Born?", "1845"),               # inside "(1845-1923)"
              _example("quote", "Called?", "X"),                # inside "\"X\""
              _example("late", "Prize?", "first Nobel Prize in Physics"),
              _example("last", "Nature?", "unknown")]
  feats = squad.featurize(examples, tok, max_len, stride, 8, is_training=True)
  per_example = np.bincount(feats.example_index, minlength=len(examples))
  assert (per_example >= 1).all() and (per_example > 1).any() == (max_len < 128)
  # Every context piece has exactly one window where it has the most context.
  for e in range(len(examples)):
    rows = np.flatnonzero(feats.example_index == e)
    counts = collections.Counter(int(w) for r in rows for w in feats.word_index[r][feats.max_context[r]])
    assert set(counts) == set(range(len(examples[e].doc_tokens)))
    assert sum(counts.values()) == sum(len(tok.encode(w)) for w in examples[e].doc_tokens)
  # The labelled pieces decode to the answer; post-processing recovers the original text.
  start, end = _oracle_logits(feats)
  preds, nbest, null = squad.postprocess(examples, feats, start, end, tok, n_best_size=5, max_answer_length=30)
  assert null == {}
  assert preds == {ex.qas_id: ex.answers[0] for ex in examples}
  assert all(len(v) >= 1 and abs(sum(n["probability"] for n in v) - 1) < 1e-6 for v in nbest.values())


def test_max_answer_length_and_v2_null_answer():
  tok = CharTokenizer()
  ex = _example("long", "Prize?", "first Nobel Prize in Physics")
  feats = squad.featurize([ex], tok, 128, 128, 8)
  start, end = _oracle_logits(squad.featurize([ex], tok, 128, 128, 8, is_training=True))
  # The gold span is 9 pieces; a limit of 8 forbids it.
  preds, _, _ = squad.postprocess([ex], feats, start, end, tok, max_answer_length=8)
  assert preds["long"] != ex.answers[0]
  # v2.0: a strong [CLS] score predicts "" above the threshold, the span below it.
  start[:, 0] = end[:, 0] = 12.0
  preds, nbest, null = squad.postprocess([ex], feats, start, end, tok, version_2=True)
  assert null["long"] == pytest.approx(24.0 - 20.0) and preds["long"] == ""
  assert {n["text"] for n in nbest["long"]} >= {"", ex.answers[0]}
  preds, _, _ = squad.postprocess([ex], feats, start, end, tok, version_2=True, null_score_diff_threshold=5.0)
  assert preds["long"] == ex.answers[0]


def test_training_labels_outside_window_and_unanswerable():
  tok = CharTokenizer()
  ex = _example("last", "Nature?", "unknown")
  impossible = squad.make_example("none", "Why?", CONTEXT, [], is_impossible=True)
  misaligned = squad.make_example("bad", "What?", CONTEXT, [{"text": "physicist", "answer_start": 0}])
  feats = squad.featurize([ex, impossible, misaligned], tok, 32, 8, 8, is_training=True)
  assert feats.skipped == 1 and set(feats.example_index) == {0, 1}
  rows = feats.example_index == 0
  pos = feats.arrays["start_positions"][rows]
  assert (pos > 0).sum() >= 1 and (pos == 0).sum() >= 1  # windows without the answer point at [CLS]
  assert (feats.arrays["start_positions"][feats.example_index == 1] == 0).all()
  ids = feats.arrays["input_ids"][rows][pos > 0][0]
  s, e = feats.arrays["start_positions"][rows][pos > 0][0], feats.arrays["end_positions"][rows][pos > 0][0]
  assert tok.decode(ids[s:e + 1]) == "unknown"
  with pytest.raises(ValueError, match="max_query_length"):
    squad.featurize([ex], tok, 40, 8, 64)


def test_json_and_tfds_records_agree(tmp_path):
  path = shared_path("data", "squad-v1.1", "dev-v1.1.json")
  data = json.loads(path.read_text())
  data["data"] = data["data"][:2]
  small = tmp_path / "dev.json"
  small.write_text(json.dumps(data))
  examples, _ = squad.read_json(str(small))
  # TFDS squad/v1.1 records (as the builder yields them, one per question).
  records = [{"id": ex.qas_id.encode(), "title": ex.title.encode(), "context": ex.context.encode(),
              "question": ex.question.encode(),
              "answers": {"text": [a["text"].encode() for a in qa["answers"]],
                          "answer_start": np.asarray([a["answer_start"] for a in qa["answers"]], np.int32)}}
             for ex, (_, qa) in zip(examples, squad_eval.questions(data["data"]))]
  from_tfds, rebuilt = squad.from_tfds_records(records, "v1.1")
  assert [(e.qas_id, e.start_word, e.end_word, e.answers) for e in from_tfds] == [
      (e.qas_id, e.start_word, e.end_word, e.answers) for e in examples]
  assert rebuilt["data"] == [{"title": a["title"], "paragraphs": [
      {"context": p["context"], "qas": [{"id": q["id"], "question": q["question"], "answers": q["answers"]}
                                         for q in p["qas"]]} for p in a["paragraphs"]]} for a in data["data"]]
  with pytest.raises(FileNotFoundError, match="official SQuAD JSON"):
    squad.read_json(str(tmp_path / "absent.json"))
  (tmp_path / "bad.json").write_text(json.dumps({"version": "1.1"}))
  with pytest.raises(ValueError, match="no top-level 'data'"):
    squad.read_json(str(tmp_path / "bad.json"))


def test_real_dev_articles_round_trip_with_wordpiece():
  """Real contexts, the MiniLM vocabulary, windows of 128 with stride 48: EM > 98%."""
  from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
  path = shared_path("data", "squad-v1.1", "dev-v1.1.json")
  vocab = shared_path("weights", "all-MiniLM-L6-v2", "vocab.txt")
  data = json.loads(path.read_text())["data"][:2]
  examples = squad.from_json({"data": data})
  tok = tokenizers.load(str(vocab), "wordpiece", True)
  feats = squad.featurize(examples, tok, 128, 48, 64, is_training=True)
  assert len(feats) > len(examples)  # some contexts need several windows
  start, end = _oracle_logits(feats)
  preds, _, _ = squad.postprocess(examples, feats, start, end, tok)
  scores = squad_eval.evaluate(data, preds, "v1.1")
  assert scores["exact_match"] > 98.0 and scores["f1"] > 98.0
  baseline = squad_eval.evaluate(data, squad.first_sentence_predictions(examples), "v1.1")
  assert baseline["f1"] < 20.0
