"""GLUE data layer: readers (GLUE tsv, HF-style tsv, TFDS), features vs HF, errors."""

import re

import numpy as np
import pytest

from bert_jax.data import glue
from bert_jax.data import tokenizers
from conftest import shared_path

VOCAB = ("weights", "all-MiniLM-L6-v2", "vocab.txt")


def _glue_dir(name):
  return str(shared_path("data", "glue", name))


# ----------------------------------------------------------------------------- truncation

def _truncate_seq_pair(la, lb, budget):
  """google-research/bert run_classifier._truncate_seq_pair, on lengths."""
  while la + lb > budget:
    if la > lb:
      la -= 1
    else:
      lb -= 1
  return la, lb


def test_truncated_lengths_rules():
  for la in range(0, 30):
    for lb in range(0, 30):
      for budget in (1, 2, 9, 10, 21, 40):
        assert glue.truncated_lengths(la, lb, budget) == _truncate_seq_pair(la, lb, budget)
        fa, fb = glue.truncated_lengths(la, lb, budget, "hf_fast")
        assert fa + fb == min(la + lb, budget) and fa <= la and fb <= lb
  # They differ only on the odd token when both texts are cut: A keeps it / the longer does.
  assert glue.truncated_lengths(24, 25, 21) == (11, 10)
  assert glue.truncated_lengths(24, 25, 21, "hf_fast") == (10, 11)
  assert glue.truncated_lengths(25, 24, 21, "hf_fast") == (11, 10)
  assert glue.truncated_lengths(20, 20, 21, "hf_fast") == (10, 11)
  with pytest.raises(ValueError, match="use one of"):
    glue.truncated_lengths(3, 3, 4, "left")


# ----------------------------------------------------------------------------- features vs HF

@pytest.fixture(scope="module")
def wordpiece():
  return tokenizers.load(str(shared_path(*VOCAB)), "wordpiece", True)


@pytest.mark.parametrize("task,directory,max_len", [
    ("mrpc", "MRPC", 24), ("mrpc", "MRPC", 64), ("sst2", "SST-2", 24)])
@pytest.mark.parametrize("rule", glue.TRUNCATION_RULES)
def test_featurize_matches_hf_bert_tokenizer(wordpiece, task, directory, max_len, rule):
  transformers = pytest.importorskip("transformers")
  from transformers.models.bert import tokenization_bert_legacy
  examples = glue.read_examples(glue.TASKS[task], "tsv", _glue_dir(directory), "validation")
  examples = glue.Examples(examples.text_a[:200], examples.text_b and examples.text_b[:200],
                           examples.label[:200], examples.idx[:200])
  # transformers 5: BertTokenizer is the Rust `tokenizers` one, the Legacy one is Python.
  cls = (tokenization_bert_legacy.BertTokenizerLegacy if rule == "bert" else
         transformers.BertTokenizer)
  hf = cls(str(shared_path(*VOCAB)), do_lower_case=True)
  ref = hf(examples.text_a, examples.text_b, truncation="longest_first", max_length=max_len,
           padding="max_length", return_token_type_ids=True)
  ours = glue.featurize(examples, wordpiece, max_len, truncation=rule)
  assert ours["input_ids"].shape == (200, max_len) and ours["input_ids"].dtype == np.int32
  np.testing.assert_array_equal(ours["input_ids"], np.array(ref["input_ids"]))
  np.testing.assert_array_equal(ours["token_type_ids"], np.array(ref["token_type_ids"]))
  np.testing.assert_array_equal(ours["input_mask"], np.array(ref["attention_mask"]))
  assert ours["input_mask"].all(axis=1).sum() > 20  # many rows were truncated
  np.testing.assert_array_equal(ours["label"], examples.label)
  assert ours["idx"].dtype == np.int64 and ours["idx"].tolist() == list(range(200))


def test_featurize_layout(wordpiece):
  ex = glue.Examples(["hello world"], ["good bye"], np.array([1], np.int32), np.array([7]))
  f = glue.featurize(ex, wordpiece, 10)
  cls, sep, pad = wordpiece.cls_id, wordpiece.sep_id, wordpiece.pad_id
  a, b = wordpiece.encode("hello world"), wordpiece.encode("good bye")
  assert f["input_ids"][0].tolist() == [cls, *a, sep, *b, sep] + [pad] * (7 - len(a) - len(b))
  assert f["token_type_ids"][0].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (
      7 - len(a) - len(b))
  assert f["label"].tolist() == [1] and f["idx"].tolist() == [7]
  with pytest.raises(ValueError, match="max_seq_length=4 .* at least 5"):
    glue.featurize(ex, wordpiece, 4)


# ----------------------------------------------------------------------------- shared tsv files

# task, directory under ../shared/data, split, rows, per-class counts (None: unlabeled)
SHARED_TSV = [
    ("sst2", "glue/SST-2", "train", 67349, (29780, 37569)),
    ("sst2", "glue/SST-2", "validation", 872, (428, 444)),
    ("sst2", "glue/SST-2", "test", 1821, None),
    ("mrpc", "glue/MRPC", "train", 3668, (1194, 2474)),
    ("mrpc", "glue/MRPC", "validation", 408, (129, 279)),
    ("mrpc", "glue/MRPC", "test", 1725, None),
    ("cola", "glue/CoLA", "train", 8551, (2528, 6023)),
    ("cola", "glue/CoLA", "validation", 1043, (322, 721)),
    ("cola", "glue/CoLA", "test", 1063, None),
    ("rte", "glue/RTE", "train", 2490, (1249, 1241)),
    ("rte", "glue/RTE", "validation", 277, (146, 131)),
    ("rte", "glue/RTE", "test", 3000, None),
    ("tsv", "chinese/ChnSentiCorp", "train", 9600, (4801, 4799)),
    ("tsv", "chinese/ChnSentiCorp", "validation", 1200, (607, 593)),
    ("tsv", "chinese/ChnSentiCorp", "test", 1200, None),
]


@pytest.mark.parametrize("task,directory,split,rows,counts", SHARED_TSV)
def test_read_shared_tsv(task, directory, split, rows, counts):
  path = str(shared_path("data", *directory.split("/")))
  ex = glue.read_examples(glue.TASKS[task], "tsv", path, split)
  assert len(ex) == rows == len(ex.label) == len(ex.idx)
  assert (ex.text_b is not None) == glue.TASKS[task].pair
  assert ex.label.dtype == np.int32 and ex.idx.dtype == np.int64
  assert ex.idx.tolist() == list(range(rows))  # row numbers, or the test index column
  if counts is None:
    assert (ex.label == -1).all()
  else:
    assert tuple(np.bincount(ex.label, minlength=2)) == counts
  assert all(t.strip() for t in ex.text_a) and not any("\t" in t for t in ex.text_a)


def test_shared_tsv_rows():
  sst = glue.read_examples(glue.TASKS["sst2"], "tsv", _glue_dir("SST-2"), "validation")
  assert (sst.text_a[0], sst.label[0]) == ("it 's a charming and often affecting journey . ", 1)
  mrpc = glue.read_examples(glue.TASKS["mrpc"], "tsv", _glue_dir("MRPC"), "train")
  assert mrpc.text_a[0].startswith("Amrozi accused his brother")  # BOM header skipped
  assert mrpc.text_b[0].startswith("Referring to him as only") and mrpc.label[0] == 1
  cola = glue.read_examples(glue.TASKS["cola"], "tsv", _glue_dir("CoLA"), "validation")
  assert cola.text_a[-1] and cola.text_a[0] == "The sailors rode the breeze clear of the rocks."
  rte = glue.read_examples(glue.TASKS["rte"], "tsv", _glue_dir("RTE"), "validation")
  assert rte.text_b[0] == "Christopher Reeve had an accident." and rte.label[0] == 1
  assert glue.TASKS["rte"].labels[1] == "not_entailment"
  chn = shared_path("data", "chinese", "ChnSentiCorp")
  assert glue.load_labels(glue.TASKS["tsv"], str(chn)) == ("negative", "positive")
  test = glue.read_examples(glue.TASKS["tsv"], "tsv", str(chn), "test")
  assert test.text_a[0].startswith("这个宾馆比较陈旧了")
  # Label names given by the caller (here reversed) override labels.txt.
  dev = glue.read_examples(glue.TASKS["tsv"], "tsv", str(chn), "validation",
                           labels=("positive", "negative"))
  assert tuple(np.bincount(dev.label)) == (593, 607)


# ----------------------------------------------------------------------------- GLUE layouts

def _write(path, name, lines):
  path.mkdir(exist_ok=True)
  (path / name).write_text("".join(l + "\n" for l in lines), encoding="utf-8")


def test_rte_glue_format_equals_hf_format(tmp_path):
  """The GLUE zip's RTE (index first, label strings) reads like our HF-style copy."""
  hf = glue.read_examples(glue.TASKS["rte"], "tsv", _glue_dir("RTE"), "validation")
  rows = [f"{i}\t{a}\t{b}\t{glue.TASKS['rte'].labels[l]}"
          for i, (a, b, l) in enumerate(zip(hf.text_a, hf.text_b, hf.label))]
  _write(tmp_path, "dev.tsv", ["index\tsentence1\tsentence2\tlabel"] + rows)
  ours = glue.read_examples(glue.TASKS["rte"], "tsv", str(tmp_path), "validation")
  assert (ours.text_a, ours.text_b) == (hf.text_a, hf.text_b)
  np.testing.assert_array_equal(ours.label, hf.label)
  np.testing.assert_array_equal(ours.idx, hf.idx)


_MNLI = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
         "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")
_MNLI_ROW = "{}\t1\t1n\tfiction\t(x)\t(y)\t(X)\t(Y)\tA man.\tA guy."
# task, labeled file (header, row), test file (header, row), expected label
GLUE_LAYOUTS = [
    ("stsb", "validation",
     ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
      "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA guy.\t4.250"),
     ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2",
      "5\tmain-news\theadlines\t2016\t0000\tnone\tnone\tA man.\tA guy."), 4.25),
    ("qqp", "train", ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                      "133273\t213221\t213222\tA man.\tA guy.\t1"),
     ("id\tquestion1\tquestion2", "5\tA man.\tA guy."), 1),
    ("mnli", "validation_mismatched",
     (_MNLI + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
      _MNLI_ROW.format(0) + "\tneutral" * 6), (_MNLI, _MNLI_ROW.format(5)), 1),
    ("mnli", "train", (_MNLI + "\tlabel1\tgold_label",
                       _MNLI_ROW.format(0) + "\tneutral\tcontradiction"), None, 2),
    ("qnli", "validation",
     ("index\tquestion\tsentence\tlabel", "0\tA man.\tA guy.\tnot_entailment"),
     ("index\tquestion\tsentence", "5\tA man.\tA guy."), 1),
    ("wnli", "train", ("index\tsentence1\tsentence2\tlabel", "0\tA man.\tA guy.\t1"),
     ("index\tsentence1\tsentence2", "5\tA man.\tA guy."), 1),
]


@pytest.mark.parametrize("task,split,labeled,test,label", GLUE_LAYOUTS)
def test_glue_layouts(tmp_path, task, split, labeled, test, label):
  info = glue.TASKS[task]
  _write(tmp_path, glue.TSV_FILES[split], labeled)
  ex = glue.read_examples(info, "tsv", str(tmp_path), split)
  assert (ex.text_a, ex.text_b, ex.label.tolist(), ex.idx.tolist()) == (
      ["A man."], ["A guy."], [label], [0])
  if test:
    test_split = info.test_splits[-1]
    _write(tmp_path, glue.TSV_FILES[test_split], test)
    ex = glue.read_examples(info, "tsv", str(tmp_path), test_split)
    assert (ex.text_a, ex.text_b, ex.idx.tolist()) == (["A man."], ["A guy."], [5])
    assert np.isnan(ex.label[0]) if info.regression else ex.label[0] == -1
    assert ex.label.dtype == (np.float32 if info.regression else np.int32)


def test_task_registry():
  assert set(glue.TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte",
                             "wnli", "tsv"}
  for t in glue.TASKS.values():
    assert t.main_metric in t.metrics and len(t.submission_files) == len(t.test_splits)
    assert set(t.metrics) <= {"accuracy", "f1", "mcc", "pearson", "spearman"}
  assert glue.TASKS["mnli"].submission_files == ("MNLI-m.tsv", "MNLI-mm.tsv")
  assert glue.TASKS["stsb"].regression and glue.TASKS["cola"].metrics == ("mcc",)
  with pytest.raises(ValueError, match="Unknown task 'sts'"):
    glue.task_info("sts")


def test_write_predictions(tmp_path):
  path = glue.write_predictions(glue.TASKS["rte"], "test", [0, 1], [1, 0], str(tmp_path))
  assert path.endswith("RTE.tsv")
  assert open(path).read() == "index\tprediction\n0\tnot_entailment\n1\tentailment\n"
  path = glue.write_predictions(glue.TASKS["mnli"], "test_mismatched", [3], [2], str(tmp_path))
  assert path.endswith("MNLI-mm.tsv") and open(path).read().endswith("3\tcontradiction\n")
  path = glue.write_predictions(glue.TASKS["sst2"], "test", [0], [1], str(tmp_path))
  assert open(path).read().endswith("0\t1\n")
  path = glue.write_predictions(glue.TASKS["stsb"], "test", [0], [3.14159], str(tmp_path))
  assert open(path).read().endswith("0\t3.142\n")
  path = glue.write_predictions(glue.TASKS["tsv"], "test", [0], [1], str(tmp_path),
                                labels=("negative", "positive"))
  assert path.endswith("test_predictions.tsv") and open(path).read().endswith("0\tpositive\n")
  with pytest.raises(ValueError, match="pass the label names"):
    glue.write_predictions(glue.TASKS["tsv"], "test", [0], [1], str(tmp_path))
  with pytest.raises(ValueError, match="not 'validation'"):
    glue.write_predictions(glue.TASKS["sst2"], "validation", [0], [1], str(tmp_path))


# ----------------------------------------------------------------------------- TFDS

@pytest.mark.parametrize("task,directory,split", [
    ("sst2", "SST-2", "validation"), ("sst2", "SST-2", "test"), ("cola", "CoLA", "train"),
    ("cola", "CoLA", "validation"), ("cola", "CoLA", "test")])
def test_tfds_equals_tsv(task, directory, split):
  pytest.importorskip("tensorflow_datasets")
  data_dir = str(shared_path("tfds", "glue", task).parents[1])
  tfds_ex = glue.read_examples(glue.TASKS[task], "tfds", data_dir, split)
  tsv_ex = glue.read_examples(glue.TASKS[task], "tsv", _glue_dir(directory), split)
  assert tfds_ex.text_a == tsv_ex.text_a and tfds_ex.text_b is None
  np.testing.assert_array_equal(tfds_ex.label, tsv_ex.label)
  np.testing.assert_array_equal(tfds_ex.idx, tsv_ex.idx)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_tfds_mrpc_matches_tsv(split):
  """TFDS builds MRPC from the raw MSR files: same rows, order and labels; the raw text is
  tokenized ("doesn 't"), so texts agree once whitespace is removed."""
  pytest.importorskip("tensorflow_datasets")
  data_dir = str(shared_path("tfds", "glue", "mrpc").parents[1])
  tfds_ex = glue.read_examples(glue.TASKS["mrpc"], "tfds", data_dir, split)
  tsv_ex = glue.read_examples(glue.TASKS["mrpc"], "tsv", _glue_dir("MRPC"), split)
  squash = lambda texts: [re.sub(r"\s+", "", t) for t in texts]
  assert squash(tfds_ex.text_a) == squash(tsv_ex.text_a)
  assert squash(tfds_ex.text_b) == squash(tsv_ex.text_b)
  np.testing.assert_array_equal(tfds_ex.label, tsv_ex.label)
  if split == "test":
    np.testing.assert_array_equal(tfds_ex.idx, tsv_ex.idx)


def test_tfds_errors(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(FileNotFoundError, match=r"glue/sst2.*split 'validation'.*tfds build"):
    glue.read_examples(glue.TASKS["sst2"], "tfds", str(tmp_path / "none"), "validation")
  with pytest.raises(ValueError, match="no TFDS dataset"):
    glue.read_examples(glue.TASKS["tsv"], "tfds", "", "train")


# ----------------------------------------------------------------------------- bad input

def test_bad_input(tmp_path):
  good = ["sentence\tlabel", "a fine film \t1", "a bad film \t0"]
  _write(tmp_path, "dev.tsv", good + ["an odd film \t2"])
  with pytest.raises(ValueError, match=r"dev.tsv line 4: label '2' is not one of \('0', '1'\) "
                     r"\(task 'sst2', written for \('negative', 'positive'\)\)"):
    glue.read_examples(glue.TASKS["sst2"], "tsv", str(tmp_path), "validation")
  _write(tmp_path, "dev.tsv", good + ["", "a short line"])  # blank lines are skipped
  with pytest.raises(ValueError, match="dev.tsv line 5: 1 tab-separated columns, expected 2"):
    glue.read_examples(glue.TASKS["sst2"], "tsv", str(tmp_path), "validation")
  _write(tmp_path, "train.tsv", ["gj04\t1\t\tfine.", "gj04\t1\tfine."])  # CoLA: no header
  with pytest.raises(ValueError, match="train.tsv line 2: 3 tab-separated columns, expected 4"):
    glue.read_examples(glue.TASKS["cola"], "tsv", str(tmp_path), "train")
  _write(tmp_path, "test.tsv", ["id\tsentence", "0\tfine"])
  with pytest.raises(ValueError, match=r"test.tsv line 1: the header .* has no column 'index'"):
    glue.read_examples(glue.TASKS["sst2"], "tsv", str(tmp_path), "test")
  _write(tmp_path, "train.tsv", ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
                                 "sentence1\tsentence2\tscore", "0\t-\t-\t-\t-\t-\t-\ta\tb\thigh"])
  with pytest.raises(ValueError, match="train.tsv line 2: target 'high' is not a number"):
    glue.read_examples(glue.TASKS["stsb"], "tsv", str(tmp_path), "train")
  missing = tmp_path / "no_such_dir"
  with pytest.raises(FileNotFoundError, match=r"no_such_dir/dev.tsv does not exist; expected "
                     r"the SST-2 file of split 'validation'.*train.tsv, dev.tsv, test.tsv"):
    glue.read_examples(glue.TASKS["sst2"], "tsv", str(missing), "validation")
  with pytest.raises(FileNotFoundError, match="no_such_dir/labels.txt does not exist"):
    glue.read_examples(glue.TASKS["tsv"], "tsv", str(missing), "train")
  with pytest.raises(ValueError, match=r"no split 'validation_matched'; choose one of"):
    glue.read_examples(glue.TASKS["sst2"], "tsv", str(tmp_path), "validation_matched")
  with pytest.raises(ValueError, match="source='hf'"):
    glue.read_examples(glue.TASKS["sst2"], "hf", str(tmp_path), "train")
