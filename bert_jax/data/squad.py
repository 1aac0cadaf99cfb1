"""SQuAD v1.1 / v2.0: reading, doc-stride featurization, and answers back to the original text.

Follows google-research/bert's run_squad.py: the context is split on whitespace into words
(char offsets kept), each word is tokenized on its own, and the answer's character span
becomes a word span, then a piece span (`improve_answer_span` tightens it to the answer's own
pieces). A context longer than the window is cut into windows of max_seq_length with a
document stride; each window is a row `[CLS] question [SEP] window [SEP]` (segment 1 from the
window on), labelled with the answer's start/end piece in the window, or 0 ([CLS]) when the
answer lies outside it or the question is unanswerable (v2.0). `postprocess` turns start/end
logits into answers: the n best (start, end) pairs of each window (a piece counts in the window
where it has the most context; the span is at most max_answer_length pieces), mapped to words,
then to the original text (`final_text`: only the predicted characters of the first/last words);
with v2.0 the null score ([CLS] start + end, lowest over windows) against the best non-null
score gives each question's score difference, and "" is predicted above
`null_score_diff_threshold` (chosen on dev: bert_jax.tasks.squad_eval's best_f1_thresh).

Sources: the official JSON files (`read_json`, local or gs://) and TFDS `squad/v1.1`,
`squad/v2.0` (`read_tfds`). TensorFlow is imported only to read.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from typing import Any, Sequence

import numpy as np

from bert_jax.data import files

SPLIT_FILES = {"v1.1": {"train": "train-v1.1.json", "validation": "dev-v1.1.json"},
               "v2.0": {"train": "train-v2.0.json", "validation": "dev-v2.0.json"}}


@dataclasses.dataclass
class Example:
  """One question on one context, split into whitespace words."""
  qas_id: str
  question: str
  context: str
  doc_tokens: list[str]  # whitespace-separated words of the context
  answers: list[str]  # every gold answer text ([] when unanswerable)
  start_word: int = -1  # word span of the first answer (-1: none / unanswerable)
  end_word: int = -1
  answer_text: str = ""
  is_impossible: bool = False
  title: str = ""


def _is_whitespace(c: str) -> bool:
  return c in " \t\r\n" or ord(c) == 0x202F


def split_words(context: str) -> tuple[list[str], list[int]]:
  """(words, word index of every character) as run_squad.py's read_squad_examples."""
  words, char_to_word, prev_ws = [], [], True
  for c in context:
    if _is_whitespace(c):
      prev_ws = True
    else:
      if prev_ws:
        words.append(c)
      else:
        words[-1] += c
      prev_ws = False
    char_to_word.append(len(words) - 1)
  return words, char_to_word


def make_example(qas_id: str, question: str, context: str, answers: Sequence[dict], is_impossible: bool = False,
                 title: str = "", words=None) -> Example:
  """An Example with the word span of the first answer (answers: {text, answer_start} dicts).

  An answer whose span does not hold its text (after whitespace cleanup) keeps no span: such
  training questions are skipped by `featurize`, as run_squad.py does."""
  doc_tokens, char_to_word = words or split_words(context)
  ex = Example(qas_id, question, context, doc_tokens, [a["text"] for a in answers], is_impossible=is_impossible,
               title=title)
  if is_impossible or not answers:
    ex.is_impossible = ex.is_impossible or not answers
    return ex
  first = answers[0]
  text, start = first["text"], int(first["answer_start"])
  end = start + len(text) - 1
  if not text or start < 0 or end >= len(context):
    return ex
  s, e = char_to_word[start], char_to_word[end]
  if s < 0 or " ".join(doc_tokens[s:e + 1]).find(" ".join(text.split())) == -1:
    return ex
  ex.start_word, ex.end_word, ex.answer_text = s, e, text
  return ex


# ----------------------------------------------------------------------------- reading

def from_json(data: dict[str, Any], where: str = "the SQuAD JSON", version: str = "") -> list[Example]:
  """Examples of a parsed official SQuAD file ({"version", "data": [articles]}). With `version`
  ("v1.1" / "v2.0"), every question must have its answers: v1.1 questions all have one; a v2.0
  question has one or is marked is_impossible."""
  if not isinstance(data, dict) or "data" not in data:
    raise ValueError(f"{where}: not a SQuAD file (no top-level 'data' list of articles).")
  out = []
  for a, article in enumerate(data["data"]):
    for p, paragraph in enumerate(article.get("paragraphs", [])):
      if "context" not in paragraph or "qas" not in paragraph:
        raise ValueError(f"{where}: data[{a}].paragraphs[{p}] lacks 'context' or 'qas'.")
      words = split_words(paragraph["context"])
      for qa in paragraph["qas"]:
        if "id" not in qa or "question" not in qa:
          raise ValueError(f"{where}: a question of data[{a}].paragraphs[{p}] lacks 'id' or 'question'.")
        if version and not qa.get("answers") and not (version == "v2.0" and qa.get("is_impossible")):
          raise ValueError(
              f"{where}: question {qa['id']!r} (data[{a}].paragraphs[{p}]) has no 'answers'; "
              + ("every SQuAD v1.1 question has one (a file with unanswerable questions is v2.0: "
                 "config.finetune.task=squad_v2)." if version == "v1.1" else
                 "a SQuAD v2.0 question has answers or is marked \"is_impossible\": true."))
        out.append(make_example(qa["id"], qa["question"], paragraph["context"], qa.get("answers", []),
                                bool(qa.get("is_impossible", False)), article.get("title", ""), words))
  return out


def read_json(path: str, version: str = "") -> tuple[list[Example], dict[str, Any]]:
  """(examples, the parsed file) of an official SQuAD JSON file (local or gs://); `version`: see
  from_json."""
  text = files.read_text(path, "an official SQuAD JSON file (train-v1.1.json, dev-v2.0.json, ...)")
  try:
    data = json.loads(text)
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON: {e}.") from None
  return from_json(data, path, version), data


def read_tfds(version: str, split: str, data_dir: str = "") -> tuple[list[Example], dict[str, Any]]:
  """(examples, the split rebuilt in the official JSON layout) of TFDS squad/v1.1 or squad/v2.0."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = f"squad/{version}"
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir or None, download=not data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(f"Cannot read TFDS {name!r} split {split!r} from data_dir {data_dir or '(default)'}: "
                            f"{e}. Prepare it there first (tfds build) or fix the data_dir.") from e
  return from_tfds_records(tfds.as_numpy(ds), version)


def from_tfds_records(records, version: str) -> tuple[list[Example], dict[str, Any]]:
  """Examples (and the official JSON layout) from TFDS squad records (numpy, bytes strings)."""
  dec = lambda x: x.decode("utf-8") if isinstance(x, bytes) else str(x)  # noqa: E731
  paragraphs: dict[tuple[str, str], list] = collections.OrderedDict()
  for r in records:
    answers = [{"text": dec(t), "answer_start": int(s)}
               for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])]
    qa = {"id": dec(r["id"]), "question": dec(r["question"]), "answers": answers}
    if version == "v2.0":
      qa["is_impossible"] = bool(r["is_impossible"])
    paragraphs.setdefault((dec(r["title"]), dec(r["context"])), []).append(qa)
  articles: dict[str, list] = collections.OrderedDict()
  for (title, context), qas in paragraphs.items():
    articles.setdefault(title, []).append({"context": context, "qas": qas})
  data = {"version": version.lstrip("v"), "data": [{"title": t, "paragraphs": p} for t, p in articles.items()]}
  return from_json(data, f"TFDS squad/{version}"), data


# ----------------------------------------------------------------------------- features

def improve_answer_span(doc_ids: Sequence[int], start: int, end: int, answer_ids: Sequence[int]) -> tuple[int, int]:
  """The smallest piece span inside [start, end] that is exactly the answer's own pieces
  (e.g. "1895" inside the word "(1895-1943)."), else the word span (run_squad.py)."""
  answer = list(answer_ids)
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if list(doc_ids[new_start:new_end + 1]) == answer:
        return new_start, new_end
  return start, end


def doc_windows(num_pieces: int, max_pieces: int, stride: int) -> list[tuple[int, int]]:
  """(start, length) of the windows over a context of num_pieces pieces (run_squad.py)."""
  out, start = [], 0
  while start < num_pieces:
    length = min(num_pieces - start, max_pieces)
    out.append((start, length))
    if start + length == num_pieces:
      break
    start += min(length, stride)
  return out or [(0, 0)]


def _max_context(windows: list[tuple[int, int]], w: int, position: int) -> bool:
  """Whether window w gives the piece at `position` the most context (min of left and right
  context, + 0.01 * window length; run_squad.py _check_is_max_context)."""
  best_score, best = None, None
  for i, (start, length) in enumerate(windows):
    end = start + length - 1
    if position < start or position > end:
      continue
    score = min(position - start, end - position) + 0.01 * length
    if best_score is None or score > best_score:
      best_score, best = score, i
  return best == w


@dataclasses.dataclass
class Features:
  """Model rows (arrays) and what maps them back to the examples (host side)."""
  arrays: dict[str, np.ndarray]  # input_ids, input_mask, token_type_ids, start_positions, end_positions
  example_index: np.ndarray  # [N] row -> example
  word_index: np.ndarray  # [N, L] piece -> context word (-1: not a context piece)
  max_context: np.ndarray  # [N, L] bool: this row gives the piece the most context
  skipped: int = 0  # training questions dropped (answer text not at its offset)

  def __len__(self) -> int:
    return len(self.example_index)


def featurize(examples: Sequence[Example], tokenizer, max_seq_length: int = 384, doc_stride: int = 128,
              max_query_length: int = 64, is_training: bool = False) -> Features:
  """Rows of every window of every example (see the module docstring).

  is_training: questions with an answer span that does not match the text are dropped (as the
  reference does); windows without the answer get start = end = 0."""
  if max_seq_length < max_query_length + 4:
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for a context beside a "
                     f"question of max_query_length={max_query_length} pieces; raise it (384 is usual).")
  if doc_stride < 1:
    raise ValueError(f"doc_stride={doc_stride} must be >= 1 (128 is usual).")
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  rows: dict[str, list] = {k: [] for k in ("input_ids", "input_mask", "token_type_ids", "start_positions",
                                           "end_positions")}
  example_index, word_index, max_context = [], [], []
  skipped = 0
  docs: dict[str, tuple[list[int], list[int], list[int]]] = {}
  for e, ex in enumerate(examples):
    if is_training and not ex.is_impossible and ex.start_word < 0:
      skipped += 1
      continue
    query = tokenizer.encode(ex.question)[:max_query_length]
    if ex.context not in docs:
      piece_word, word_first, doc_ids = [], [], []
      for w, word in enumerate(ex.doc_tokens):
        word_first.append(len(doc_ids))
        pieces = tokenizer.encode(word)
        doc_ids.extend(pieces)
        piece_word.extend([w] * len(pieces))
      docs = {ex.context: (doc_ids, piece_word, word_first)}  # consecutive questions share a context
    doc_ids, piece_word, word_first = docs[ex.context]
    tok_start = tok_end = -1
    if is_training and not ex.is_impossible:
      tok_start = word_first[ex.start_word]
      tok_end = (word_first[ex.end_word + 1] - 1) if ex.end_word + 1 < len(ex.doc_tokens) else len(doc_ids) - 1
      tok_start, tok_end = improve_answer_span(doc_ids, tok_start, tok_end, tokenizer.encode(ex.answer_text))
    budget = max_seq_length - len(query) - 3
    windows = doc_windows(len(doc_ids), budget, doc_stride)
    offset = len(query) + 2
    for w, (start, length) in enumerate(windows):
      ids = [cls, *query, sep, *doc_ids[start:start + length], sep]
      types = [0] * offset + [1] * (length + 1)
      words = np.full(max_seq_length, -1, np.int32)
      words[offset:offset + length] = piece_word[start:start + length]
      best = np.zeros(max_seq_length, bool)
      best[offset:offset + length] = [_max_context(windows, w, start + i) for i in range(length)]
      s_pos = e_pos = 0
      if tok_start >= 0 and start <= tok_start and tok_end <= start + length - 1:
        s_pos, e_pos = tok_start - start + offset, tok_end - start + offset
      pad = max_seq_length - len(ids)
      rows["input_ids"].append(ids + [tokenizer.pad_id] * pad)
      rows["input_mask"].append([1] * len(ids) + [0] * pad)
      rows["token_type_ids"].append(types + [0] * pad)
      rows["start_positions"].append(s_pos)
      rows["end_positions"].append(e_pos)
      example_index.append(e)
      word_index.append(words)
      max_context.append(best)
  L = max_seq_length
  arrays = {k: np.asarray(v, np.int32).reshape((-1,) if k.endswith("positions") else (-1, L))
            for k, v in rows.items()}
  return Features(arrays, np.asarray(example_index, np.int64), np.asarray(word_index, np.int32).reshape(-1, L),
                  np.asarray(max_context, bool).reshape(-1, L), skipped)


# ----------------------------------------------------------------------------- answers

def _strip_spaces(text: str) -> tuple[str, dict[int, int]]:
  chars, ns_to_s = [], {}
  for i, c in enumerate(text):
    if c == " ":
      continue
    ns_to_s[len(chars)] = i
    chars.append(c)
  return "".join(chars), ns_to_s


def final_text(pred_text: str, orig_text: str, normalize) -> str:
  """The part of orig_text (the original words of the predicted span) that pred_text (the
  detokenized pieces) covers; orig_text when they cannot be aligned (run_squad.py
  get_final_text). normalize(text) -> the tokenizer's view of text, words joined by spaces."""
  tok_text = normalize(orig_text)
  start = tok_text.find(pred_text)
  if start == -1:
    return orig_text
  end = start + len(pred_text) - 1
  orig_ns, orig_ns_to_s = _strip_spaces(orig_text)
  tok_ns, tok_ns_to_s = _strip_spaces(tok_text)
  if len(orig_ns) != len(tok_ns):
    return orig_text
  tok_s_to_ns = {v: k for k, v in tok_ns_to_s.items()}
  o_start = orig_ns_to_s.get(tok_s_to_ns.get(start, -1))
  o_end = orig_ns_to_s.get(tok_s_to_ns.get(end, -1))
  if o_start is None or o_end is None:
    return orig_text
  return orig_text[o_start:o_end + 1]


def text_normalizer(tokenizer):
  """normalize(text) for final_text: the pieces' text as the tokenizer decodes it."""
  if tokenizer.kind == "wordpiece":
    # Here, not at the top: tokenizers imports TensorFlow, which this module loads only to read.
    from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
    return lambda text: " ".join(tokenizers.basic_tokenize(text, tokenizer.lower_case))
  return lambda text: " ".join((text.lower() if tokenizer.lower_case else text).split())


def _softmax(scores: list[float]) -> list[float]:
  m = max(scores)
  exp = [math.exp(s - m) for s in scores]
  return [x / sum(exp) for x in exp]


def postprocess(examples: Sequence[Example], features: Features, start_logits: np.ndarray, end_logits: np.ndarray,
                tokenizer, n_best_size: int = 20, max_answer_length: int = 30, version_2: bool = False,
                null_score_diff_threshold: float = 0.0):
  """(predictions {qas_id: text}, n-best {qas_id: [{text, probability, start_logit, end_logit}]},
  null score differences {qas_id: float} (v2.0; empty for v1.1)) from the rows' logits [N, L].

  As run_squad.py write_predictions: the n_best_size best starts and ends of every row, spans
  of at most max_answer_length pieces inside the context, starting at a piece the row gives
  the most context; v2.0 adds the null answer (lowest [CLS] score over the rows) and predicts ""
  when null score - best non-null score > null_score_diff_threshold."""
  rows_of = collections.defaultdict(list)
  for r, e in enumerate(features.example_index):
    rows_of[int(e)].append(r)
  normalize = text_normalizer(tokenizer)
  predictions, nbest_out, null_diff = {}, {}, {}
  ids = features.arrays["input_ids"]
  for e, ex in enumerate(examples):
    prelim = []  # (score, row, start, end)
    null_score, null_row = None, None
    for r in rows_of.get(e, []):
      s_log, e_log = start_logits[r], end_logits[r]
      starts = np.argsort(-s_log, kind="stable")[:n_best_size]
      ends = np.argsort(-e_log, kind="stable")[:n_best_size]
      if version_2:
        score = float(s_log[0] + e_log[0])
        if null_score is None or score < null_score:
          null_score, null_row = score, r
      words, best = features.word_index[r], features.max_context[r]
      for s in starts:
        for t in ends:
          if words[s] < 0 or words[t] < 0 or not best[s] or t < s or t - s + 1 > max_answer_length:
            continue
          prelim.append((float(s_log[s] + e_log[t]), r, int(s), int(t)))
    if version_2 and null_row is not None:
      prelim.append((null_score, null_row, 0, 0))
    prelim.sort(key=lambda p: p[0], reverse=True)
    nbest, seen = [], set()
    for score, r, s, t in prelim:
      if len(nbest) >= n_best_size:
        break
      if s > 0:
        words = features.word_index[r]
        pred_text = " ".join(tokenizer.decode(ids[r, s:t + 1]).replace(" ##", "").replace("##", "").split())
        orig_text = " ".join(ex.doc_tokens[words[s]:words[t] + 1])
        text = final_text(pred_text, orig_text, normalize)
      else:
        text = ""
      if text in seen:
        continue
      seen.add(text)
      nbest.append({"text": text, "start_logit": float(start_logits[r, s]), "end_logit": float(end_logits[r, t])})
    if version_2:
      if "" not in seen and null_row is not None:
        nbest.append({"text": "", "start_logit": float(start_logits[null_row, 0]),
                      "end_logit": float(end_logits[null_row, 0])})
      if len(nbest) == 1:
        nbest.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0})
    if not nbest:
      nbest.append({"text": "empty", "start_logit": 0.0, "end_logit": 0.0})
    for entry, p in zip(nbest, _softmax([n["start_logit"] + n["end_logit"] for n in nbest])):
      entry["probability"] = p
    nbest_out[ex.qas_id] = nbest
    best_non_null = next((n for n in nbest if n["text"]), nbest[0])
    if not version_2:
      predictions[ex.qas_id] = nbest[0]["text"]
    else:
      diff = (null_score if null_score is not None else 0.0) - best_non_null["start_logit"] - best_non_null["end_logit"]
      null_diff[ex.qas_id] = diff
      predictions[ex.qas_id] = "" if diff > null_score_diff_threshold else best_non_null["text"]
  return predictions, nbest_out, null_diff


def first_sentence_predictions(examples: Sequence[Example]) -> dict[str, str]:
  """A baseline: the first sentence of the context (up to the first '.', '!' or '?' word end)."""
  out = {}
  for ex in examples:
    words = []
    for w in ex.doc_tokens:
      words.append(w)
      if w.rstrip("\"')]").endswith((".", "!", "?")):
        break
    out[ex.qas_id] = " ".join(words)
  return out
