"""Token classification data (NER, POS, chunking): CoNLL-format files and TFDS conll2003.

CoNLL files: one token per line with space- or tab-separated columns (CoNLL-2003:
`word POS chunk NER`), a blank line between sentences, `-DOCSTART-` lines skipped. Split files
in a directory: train (train.txt | eng.train), validation (valid.txt | dev.txt | eng.testa), test
(test.txt | eng.testb). TFDS `conll2003` has the features tokens, pos, chunks, ner (splits train,
dev, test). `featurize` gives every word its pieces and puts the word's label on its FIRST piece
(label_mask 1 there, 0 on the other pieces, [CLS], [SEP] and padding), as BERT's NER recipe; a
sentence longer than the row is cut, and `word_piece` (-1 for cut words) maps predictions back
to words. TensorFlow is imported only to read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from bert_jax.data import files

SPLIT_FILES = {"train": ("train.txt", "eng.train"), "validation": ("valid.txt", "dev.txt", "eng.testa"),
               "test": ("test.txt", "eng.testb")}
TFDS_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
TFDS_COLUMNS = ("pos", "chunks", "ner")
CONLL2003_COLUMNS = {"pos": 1, "chunks": 2, "ner": 3}  # column index of each label in CoNLL-2003 files


@dataclasses.dataclass
class Sentences:
  words: list[list[str]]
  tags: list[list[str]]

  def __len__(self) -> int:
    return len(self.words)


def split_file(data_dir: str, split: str) -> str:
  """The file of `split` in a CoNLL directory (the first of SPLIT_FILES[split] that exists)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if split not in SPLIT_FILES:
    raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLIT_FILES)}.")
  for name in SPLIT_FILES[split]:
    path = os.path.join(data_dir, name)
    if tf.io.gfile.exists(path):
      return path
  raise FileNotFoundError(f"No {split} file in {data_dir!r}: expected one of {SPLIT_FILES[split]} "
                          "(CoNLL format; set config.finetune.data_dir).")


def parse(text: str, label_column: int = -1, where: str = "the CoNLL text") -> Sentences:
  """Sentences of CoNLL-format text; the tag is column `label_column` (-1: the last)."""
  words, tags, cur_w, cur_t, width = [], [], [], [], None
  for lineno, line in enumerate(text.split("\n"), 1):
    line = line.strip()
    if not line or line.startswith("-DOCSTART-"):
      if cur_w:
        words.append(cur_w)
        tags.append(cur_t)
        cur_w, cur_t = [], []
      continue
    cols = line.split()
    width = width or len(cols)
    if len(cols) != width or len(cols) < 2:
      raise ValueError(f"{where} line {lineno}: {len(cols)} columns, expected {width} (at least a word and a "
                       "tag, space or tab separated); fix or remove the line.")
    if not -len(cols) <= label_column < len(cols) or label_column == 0:
      raise ValueError(f"{where}: config.finetune.tagging.label_column={label_column} is not a tag column of "
                       f"lines with {len(cols)} columns (the word is column 0).")
    cur_w.append(cols[0])
    cur_t.append(cols[label_column])
  if cur_w:
    words.append(cur_w)
    tags.append(cur_t)
  return Sentences(words, tags)


def read_file(path: str, label_column: int = -1) -> Sentences:
  return parse(files.read_text(path, "a CoNLL-format text file"), label_column, path)


def read_tfds(split: str, column: str = "ner", data_dir: str = "", name: str = "conll2003"
              ) -> tuple[Sentences, tuple[str, ...]]:
  """(sentences, the column's label names) of TFDS conll2003."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if column not in TFDS_COLUMNS:
    raise ValueError(f"config.finetune.tagging.label_column={column!r} for TFDS {name}: use one of {TFDS_COLUMNS}.")
  try:
    ds, info = tfds.load(name, split=TFDS_SPLITS.get(split, split), data_dir=data_dir or None,
                         download=not data_dir, with_info=True)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(f"Cannot read TFDS {name!r} split {split!r} from data_dir {data_dir or '(default)'}: "
                            f"{e}. Prepare it there first (tfds build) or fix the data_dir.") from e
  names = tuple(info.features[column].feature.names)
  return from_tfds_records(tfds.as_numpy(ds), column, names), names


def from_tfds_records(records, column: str, names: Sequence[str]) -> Sentences:
  """Sentences of TFDS conll2003 records (numpy: tokens as bytes, tags as class ids)."""
  words, tags = [], []
  for r in records:
    words.append([w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in r["tokens"]])
    tags.append([names[int(i)] for i in r[column]])
  return Sentences(words, tags)


def featurize(sentences: Sentences, tokenizer, labels: Sequence[str], max_seq_length: int) -> dict[str, np.ndarray]:
  """Rows [CLS] pieces [SEP]: input_ids, input_mask, token_type_ids, labels, label_mask ([N, L]),
  and word_piece ([N, W], the row position of each word's first piece, -1 when cut)."""
  index = {t: i for i, t in enumerate(labels)}
  n, L = len(sentences), max_seq_length
  max_words = max((len(w) for w in sentences.words), default=1)
  out = {"input_ids": np.full((n, L), tokenizer.pad_id, np.int32), "input_mask": np.zeros((n, L), np.int32),
         "token_type_ids": np.zeros((n, L), np.int32), "labels": np.zeros((n, L), np.int32),
         "label_mask": np.zeros((n, L), np.float32), "word_piece": np.full((n, max_words), -1, np.int32)}
  for i, (words, tags) in enumerate(zip(sentences.words, sentences.tags)):
    row = [tokenizer.cls_id]
    for w, (word, tag) in enumerate(zip(words, tags)):
      if tag not in index:
        raise ValueError(f"Sentence {i}, word {w} ({word!r}): tag {tag!r} is not one of the labels {tuple(labels)}; "
                         "set config.finetune.tagging.labels.")
      pieces = tokenizer.encode(word) or [tokenizer.unk_id]
      if len(row) + len(pieces) > L - 1:
        break
      out["word_piece"][i, w] = len(row)
      out["labels"][i, len(row)] = index[tag]
      out["label_mask"][i, len(row)] = 1.0
      row += pieces
    row.append(tokenizer.sep_id)
    out["input_ids"][i, :len(row)] = row
    out["input_mask"][i, :len(row)] = 1
  return out


def word_predictions(pred: np.ndarray, word_piece: np.ndarray, lengths: Sequence[int], labels: Sequence[str],
                     fallback: str) -> list[list[str]]:
  """Per-word tags from per-piece predicted ids [N, L]: the first piece's; `fallback` for cut words."""
  out = []
  for i, n in enumerate(lengths):
    pos = word_piece[i, :n]
    out.append([labels[int(pred[i, p])] if p >= 0 else fallback for p in pos])
  return out
