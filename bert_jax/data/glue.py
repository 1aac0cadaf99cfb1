"""GLUE-style sequence classification / regression data: task registry, readers, features.

`TASKS` describes every GLUE task (labels, metrics, splits, TFDS features, the column layout
of the GLUE distribution .tsv files, the leaderboard's test-prediction file) plus `tsv`, a
generic single-sentence task (`text<TAB>label` lines, label names in labels.txt).

`read_examples` reads a split from GLUE .tsv files or from TFDS; `featurize` turns the
examples into fixed-length [CLS] A [SEP] (B [SEP]) rows. Splits use TFDS names everywhere:
train, validation, test (MNLI: validation_matched, validation_mismatched, test_matched,
test_mismatched). Class ids follow TFDS's label order, so both sources agree.

.tsv files are split on tabs with no quoting (as csv.QUOTE_NONE in TFDS and google-research/
bert). A file whose header has an `idx` column is read as an export of HF `datasets` (columns
named by the TFDS features, labels written as class ids, -1 for unlabeled rows), whatever the
task; otherwise the task's GLUE layout applies. TensorFlow (tf.io.gfile, so gs:// paths work)
and tensorflow_datasets are imported only when a split is read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from bert_jax.data import files

# split name -> file name in a GLUE task directory.
TSV_FILES = {
    "train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv",
    "validation_matched": "dev_matched.tsv", "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv",
}
LABELS_FILE = "labels.txt"  # label names of the generic tsv task, one per line


@dataclasses.dataclass(frozen=True)
class TsvLayout:
  """Where the fields of a .tsv file are: header names, or 0-based indices when headerless."""
  header: bool
  text_a: str | int
  text_b: str | int | None = None
  label: str | int | None = None  # None: unlabeled (test files)
  idx: str | int | None = None  # None: idx is the row number (as TFDS)
  num_columns: int | None = None  # headerless files: columns per line


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """One sequence classification (or regression) task."""
  name: str
  labels: tuple[str, ...] | None  # class names by class id; None: regression; (): labels.txt
  metrics: tuple[str, ...]  # names in bert_jax.metrics
  main_metric: str  # picks the best checkpoint (higher is better), on eval_splits[0]
  eval_splits: tuple[str, ...]
  test_splits: tuple[str, ...]
  tfds_name: str | None  # None: no TFDS dataset
  text_features: tuple[str, ...]  # TFDS (= HF) feature keys of text A (and B)
  tsv_dir: str  # directory name in the GLUE distribution
  tsv_labeled: TsvLayout  # train / dev files
  tsv_test: TsvLayout
  tsv_label_values: tuple[str, ...] | None  # how class id k is written in train/dev files
  submission_files: tuple[str, ...]  # leaderboard file per test split
  submission_labels: tuple[str, ...] | None  # how class id k is written there (None: float)

  @property
  def regression(self) -> bool:
    return self.labels is None

  @property
  def pair(self) -> bool:
    return len(self.text_features) == 2

  @property
  def splits(self) -> tuple[str, ...]:
    return ("train",) + self.eval_splits + self.test_splits


def _glue(name, labels, metrics, main, tfds_features, tsv_dir, labeled, test, label_values,
          submission_labels, mnli=False) -> TaskInfo:
  return TaskInfo(
      name=name, labels=labels, metrics=metrics, main_metric=main,
      eval_splits=("validation_matched", "validation_mismatched") if mnli else ("validation",),
      test_splits=("test_matched", "test_mismatched") if mnli else ("test",),
      tfds_name=f"glue/{name}", text_features=tfds_features, tsv_dir=tsv_dir,
      tsv_labeled=labeled, tsv_test=test, tsv_label_values=label_values,
      submission_files=("MNLI-m.tsv", "MNLI-mm.tsv") if mnli else (f"{tsv_dir}.tsv",),
      submission_labels=submission_labels)


_BINARY = ("0", "1")
_ACC, _ACC_F1 = ("accuracy",), ("accuracy", "f1")
_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("entailment", "neutral", "contradiction")
_PAIR12 = ("sentence1", "sentence2")


def _pair_layouts(a, b, label, test_idx="index"):
  return (TsvLayout(True, a, b, label=label), TsvLayout(True, a, b, idx=test_idx))


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    _glue("cola", ("unacceptable", "acceptable"), ("mcc",), "mcc", ("sentence",), "CoLA",
          # source, label, original mark, sentence; no header.
          TsvLayout(False, 3, label=1, num_columns=4), TsvLayout(True, "sentence", idx="index"),
          _BINARY, _BINARY),
    _glue("sst2", ("negative", "positive"), _ACC, "accuracy", ("sentence",), "SST-2",
          TsvLayout(True, "sentence", label="label"), TsvLayout(True, "sentence", idx="index"),
          _BINARY, _BINARY),
    _glue("mrpc", ("not_equivalent", "equivalent"), _ACC_F1, "f1", _PAIR12, "MRPC",
          *_pair_layouts("#1 String", "#2 String", "Quality"), _BINARY, _BINARY),
    _glue("stsb", None, ("pearson", "spearman"), "spearman", _PAIR12, "STS-B",
          *_pair_layouts("sentence1", "sentence2", "score"), None, None),
    _glue("qqp", ("not_duplicate", "duplicate"), _ACC_F1, "f1", ("question1", "question2"),
          "QQP", *_pair_layouts("question1", "question2", "is_duplicate", test_idx="id"),
          _BINARY, _BINARY),
    _glue("mnli", _NLI3, _ACC, "accuracy", ("premise", "hypothesis"), "MNLI",
          *_pair_layouts("sentence1", "sentence2", "gold_label"), _NLI3, _NLI3, mnli=True),
    _glue("qnli", _NLI2, _ACC, "accuracy", ("question", "sentence"), "QNLI",
          *_pair_layouts("question", "sentence", "label"), _NLI2, _NLI2),
    _glue("rte", _NLI2, _ACC, "accuracy", _PAIR12, "RTE",
          *_pair_layouts("sentence1", "sentence2", "label"), _NLI2, _NLI2),
    _glue("wnli", ("not_entailment", "entailment"), _ACC, "accuracy", _PAIR12, "WNLI",
          *_pair_layouts("sentence1", "sentence2", "label"), _BINARY, _BINARY),
    # Generic single-sentence task, as ChnSentiCorp: train/dev `text<TAB>label` with no header,
    # test with header `qid<TAB>text_a`; label names (as written) in labels.txt.
    TaskInfo(name="tsv", labels=(), metrics=_ACC, main_metric="accuracy",
             eval_splits=("validation",), test_splits=("test",), tfds_name=None,
             text_features=("sentence",), tsv_dir="",
             tsv_labeled=TsvLayout(False, 0, label=1, num_columns=2),
             tsv_test=TsvLayout(True, "text_a", idx="qid"), tsv_label_values=None,
             submission_files=("test_predictions.tsv",), submission_labels=None),
)}


def task_info(name: str) -> TaskInfo:
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; choose one of {sorted(TASKS)}.")
  return TASKS[name]


@dataclasses.dataclass
class Examples:
  """A split's examples, column-wise."""
  text_a: list[str]
  text_b: list[str] | None
  label: np.ndarray  # int32 class ids (-1: unlabeled), or float32 targets (nan: unlabeled)
  idx: np.ndarray  # int64 example ids (the GLUE index column for test files)

  def __len__(self) -> int:
    return len(self.text_a)


# ----------------------------------------------------------------------------- reading

def _lines(text: str) -> list[tuple[int, str]]:
  """(1-based line number, line) of the non-empty lines; splits on \\n only."""
  lines = text.split("\n")
  return [(i + 1, l[:-1] if l.endswith("\r") else l) for i, l in enumerate(lines)
          if l not in ("", "\r")]


def load_labels(task: TaskInfo, path: str = "") -> tuple[str, ...] | None:
  """The task's label names; for the generic tsv task, the lines of <path>/labels.txt."""
  if task.labels != ():
    return task.labels
  file = os.path.join(path, LABELS_FILE)
  names = tuple(l.strip() for _, l in _lines(files.read_text(
      file, f"the label names of task {task.name!r}, one per line")))
  if len(names) < 2 or len(set(names)) != len(names):
    raise ValueError(f"{file} must list at least 2 distinct label names, one per line; "
                     f"got {names}.")
  return names


def _column(layout_value, header: list[str] | None, file: str, what: str) -> int | None:
  if layout_value is None or isinstance(layout_value, int):
    return layout_value
  if layout_value not in header:
    raise ValueError(f"{file} line 1: the header {header} has no column {layout_value!r} "
                     f"({what}); is this the right file for the task?")
  return header.index(layout_value)


def _read_tsv(task: TaskInfo, path: str, split: str, labels) -> Examples:
  file = os.path.join(path, TSV_FILES[split])
  split_files = ", ".join(TSV_FILES[s] for s in task.splits)
  where = (f"the {task.tsv_dir or task.name} file of split {split!r} (task {task.name!r}; the "
           f"directory should hold {split_files})")
  lines = _lines(files.read_text(file, where))
  test = split in task.test_splits
  layout = task.tsv_test if test else task.tsv_labeled
  written = task.tsv_label_values or labels
  header = None
  first = lines[0][1].split("\t") if lines else []
  if "idx" in first:  # An HF `datasets` export: feature-named columns, class ids.
    feats = task.text_features
    layout = TsvLayout(True, feats[0], feats[1] if task.pair else None, label="label",
                       idx="idx")
    written = None if labels is None else tuple(str(i) for i in range(len(labels)))
  if layout.header:
    if not lines:
      raise ValueError(f"{file} is empty; expected a header line and rows.")
    header, lines = first, lines[1:]
  if not lines:
    raise ValueError(f"{file} holds no examples{' after its header' if header else ''}; {where} needs rows.")
  num_columns = len(header) if header else layout.num_columns
  cols = [_column(getattr(layout, k), header, file, k)
          for k in ("text_a", "text_b", "label", "idx")]
  a_col, b_col, label_col, idx_col = cols
  text_a, text_b, label, idx = [], [] if task.pair else None, [], []
  index = {v: i for i, v in enumerate(written or ())}
  for row, (lineno, line) in enumerate(lines):
    fields = line.split("\t")
    if len(fields) != num_columns:
      raise ValueError(f"{file} line {lineno}: {len(fields)} tab-separated columns, expected "
                       f"{num_columns} ({'as the header' if header else 'the task layout'}); "
                       "fix or remove the line.")
    text_a.append(fields[a_col])
    if text_b is not None:
      text_b.append(fields[b_col])
    idx.append(row if idx_col is None else _int(fields[idx_col], file, lineno, "index"))
    value = None if label_col is None else fields[label_col].strip()
    if labels is None:  # regression
      if value is None or (test and value in ("-1", "-1.0")):
        label.append(np.nan)
      else:
        try:
          label.append(float(value))
        except ValueError:
          raise ValueError(f"{file} line {lineno}: target {value!r} is not a number.") from None
    elif value is None or (test and value == "-1"):
      label.append(-1)
    elif value in index:
      label.append(index[value])
    else:
      names = "" if tuple(index) == labels else f", written for {labels}"
      raise ValueError(f"{file} line {lineno}: label {value!r} is not one of {tuple(index)} "
                       f"(task {task.name!r}{names}); fix the line or the label names.")
  return Examples(text_a, text_b, _label_array(label, labels), np.asarray(idx, np.int64))


def _int(value: str, file: str, lineno: int, what: str) -> int:
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{file} line {lineno}: {what} {value!r} is not an integer.") from None


def _label_array(label, labels) -> np.ndarray:
  return np.asarray(label, np.float32 if labels is None else np.int32)


def _read_tfds(task: TaskInfo, data_dir: str, split: str, labels) -> Examples:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    ds = tfds.load(task.tfds_name, split=split, data_dir=data_dir or None,
                   download=not data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"Cannot read TFDS {task.tfds_name!r} split {split!r} from data_dir "
        f"{data_dir or '(default)'}: {e}. Prepare it there first (tfds build) or fix the "
        "data_dir.") from e
  cols: dict[str, list] = {k: [] for k in task.text_features + ("label", "idx")}
  for batch in tfds.as_numpy(ds.batch(4096)):
    for k in task.text_features:
      cols[k].extend(s.decode("utf-8") for s in batch[k])
    cols["label"].append(batch["label"])
    cols["idx"].append(batch["idx"])
  idx = np.concatenate(cols["idx"]).astype(np.int64) if cols["idx"] else np.zeros(0, np.int64)
  order = np.argsort(idx, kind="stable")  # TFDS shuffles at write time: back to file order
  label = np.concatenate(cols["label"]) if cols["label"] else np.zeros(0)
  label = _label_array(label[order], labels)
  if labels is None and split in task.test_splits:
    label[:] = np.nan  # TFDS writes -1 for unlabeled STS-B rows
  texts = [[cols[k][i] for i in order] for k in task.text_features]
  return Examples(texts[0], texts[1] if task.pair else None, label, idx[order])


def read_examples(task: TaskInfo, source: str, path: str, split: str,
                  labels: tuple[str, ...] | None = None) -> Examples:
  """Reads one split of a task.

  source="tsv": path is the directory of train.tsv, dev.tsv, test.tsv (MNLI: dev_matched.tsv,
  ...). source="tfds": path is the TFDS data_dir ("" for the default; a given one is never
  downloaded into). labels: label names of the generic tsv task (default: its labels.txt).
  """
  if split not in task.splits:
    raise ValueError(f"Task {task.name!r} has no split {split!r}; choose one of {task.splits}.")
  if source == "tfds":
    if task.tfds_name is None:
      raise ValueError(f"Task {task.name!r} has no TFDS dataset; use source='tsv'.")
    return _read_tfds(task, path, split, task.labels)
  if source == "tsv":
    labels = load_labels(task, path) if task.labels != () or labels is None else tuple(labels)
    return _read_tsv(task, path, split, labels)
  raise ValueError(f"source={source!r}: use 'tsv' or 'tfds'.")


# ----------------------------------------------------------------------------- features

TRUNCATION_RULES = ("bert", "hf_fast")


def truncated_lengths(len_a: int, len_b: int, budget: int, rule: str = "bert") -> tuple[int, int]:
  """Lengths of a text pair cut to fit `budget` tokens, the longer text first.

  Both rules cut the longer text down to the shorter one's length, then cut both evenly;
  they differ only in who keeps the odd token of an odd budget when both are cut:
  "bert": text A, as google-research/bert's _truncate_seq_pair (pop from the longer, from B on
  ties) and HF's Python tokenizers (BertTokenizerLegacy in transformers 5);
  "hf_fast": the originally longer text (B on ties), as HF `tokenizers` (BertTokenizer in
  transformers 5, BertTokenizerFast before).
  """
  if rule not in TRUNCATION_RULES:
    raise ValueError(f"truncation rule {rule!r}: use one of {TRUNCATION_RULES}.")
  if len_a + len_b <= budget:
    return len_a, len_b
  if 2 * min(len_a, len_b) <= budget:  # only the longer one is cut
    return (len_a, budget - len_a) if len_a <= len_b else (budget - len_b, len_b)
  half, odd = divmod(budget, 2)
  if rule == "bert" or len_a > len_b:
    return half + odd, half
  return half, half + odd


def featurize(examples: Examples, tokenizer, max_seq_length: int,
              truncation: str = "bert") -> dict[str, np.ndarray]:
  """[CLS] A [SEP] (B [SEP]) rows padded with pad_id to max_seq_length, longer text cut first.

  truncation: the rule for pairs (see truncated_lengths). Returns input_ids, input_mask,
  token_type_ids (int32 [N, L]; type 1 is B and its [SEP]), label ([N] int32 or float32) and
  idx ([N] int64).
  """
  if truncation not in TRUNCATION_RULES:
    raise ValueError(f"truncation={truncation!r}: use one of {TRUNCATION_RULES}.")
  pair = examples.text_b is not None
  budget = max_seq_length - (3 if pair else 2)
  if budget < (2 if pair else 1):
    raise ValueError(f"max_seq_length={max_seq_length} leaves no room for the text(s) beside "
                     f"[CLS] and [SEP]: use at least {5 if pair else 3} (typically 128).")
  ids_a = tokenizer.encode_batch(examples.text_a)
  ids_b = tokenizer.encode_batch(examples.text_b) if pair else None
  n, length = len(ids_a), max_seq_length
  input_ids = np.full((n, length), tokenizer.pad_id, np.int32)
  input_mask = np.zeros((n, length), np.int32)
  token_type_ids = np.zeros((n, length), np.int32)
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  for i, a in enumerate(ids_a):
    if pair:
      b = ids_b[i]
      na, nb = truncated_lengths(len(a), len(b), budget, truncation)
      row = [cls, *a[:na], sep, *b[:nb], sep]
      token_type_ids[i, na + 2:len(row)] = 1
    else:
      row = [cls, *a[:budget], sep]
    input_ids[i, :len(row)] = row
    input_mask[i, :len(row)] = 1
  return dict(input_ids=input_ids, input_mask=input_mask, token_type_ids=token_type_ids,
              label=np.asarray(examples.label), idx=np.asarray(examples.idx, np.int64))


# ----------------------------------------------------------------------------- submission

def submission_label(task: TaskInfo, value, labels: Sequence[str] | None = None) -> str:
  """How the GLUE leaderboard wants a prediction written (class id or float)."""
  if task.regression:
    return f"{float(value):.3f}"
  names = task.submission_labels or labels or task.labels
  if not names:
    raise ValueError(f"Task {task.name!r}: pass the label names (load_labels) to write "
                     "predictions.")
  return names[int(value)]


def write_predictions(task: TaskInfo, split: str, idx, pred, out_dir: str,
                      labels: Sequence[str] | None = None) -> str:
  """Writes <out_dir>/<leaderboard file> ("index<TAB>prediction" lines); returns its path."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if split not in task.test_splits:
    raise ValueError(f"Task {task.name!r}: predictions are written for {task.test_splits}, "
                     f"not {split!r}.")
  path = os.path.join(out_dir, task.submission_files[task.test_splits.index(split)])
  tf.io.gfile.makedirs(out_dir)
  lines = ["index\tprediction"] + [f"{int(i)}\t{submission_label(task, p, labels)}"
                                   for i, p in zip(idx, pred)]
  with tf.io.gfile.GFile(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path
