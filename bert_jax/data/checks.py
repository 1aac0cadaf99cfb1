"""Checks of config.data that need neither TensorFlow nor a tokenizer nor the corpus.

`validate(data_config)` runs in the loop's validation (bert_jax.state.validate, through the
pretraining tasks' `validate`), before a mesh is used, a model
traced or compiled, or a tokenizer trained: a bad key costs the time of a Python import, not
a TensorFlow import plus a compilation. The pipeline runs the same checks where it resolves
the keys with the tokenizer (bert_jax.data.pipeline.validate, bert_jax.data.masking.
spec_from_config call `instances` and `masking`), so they live here once; this module must
run first, so it imports nothing heavy (no TensorFlow, no JAX).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from bert_jax.data import instances as inst_lib

# Masking strategies (config.data.masking); bert_jax.data.masking implements them.
MASKING_STRATEGIES = ("token", "whole_word", "ngram", "span", "electra")
SOURCES = ("builtin", "text", "tfds", "tfrecord", "synthetic")
TOKENIZER_KINDS = ("sentencepiece", "wordpiece", "tokenizer_json")  # the last: an HF tokenizer.json
MIN_SEQ_LENGTH = 8  # [CLS] A [SEP] B [SEP] with room for a few tokens on each side
_MIN_VOCAB = 105  # the 5 special tokens + 100 pieces


def _local(path: str) -> bool:
  return "://" not in path


def _glob_files(pattern: str) -> list[str]:
  return sorted(f for g in pattern.split(",") if g.strip() for f in glob.glob(g.strip()))


def tfds_dataset_dir(name: str, data_dir: str = "") -> str:
  """Where TFDS keeps a prepared dataset `name` (e.g. wikipedia/20230601.en, mnist:3.0.1)."""
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR", "") or os.path.join(
      os.path.expanduser("~"), "tensorflow_datasets")
  return os.path.join(data_dir, name.split(":")[0])


def source(c) -> None:
  """config.data.source and the keys naming its files or dataset."""
  if c.source not in SOURCES:
    raise ValueError(f"config.data.source={c.source!r}: use one of {SOURCES[:4]} (or synthetic for "
                     "random batches).")
  if c.source == "text":
    if not c.text_glob:
      raise ValueError("config.data.source='text' needs config.data.text_glob (a local or gs:// glob "
                       "of text files).")
    if _local(c.text_glob) and not _glob_files(c.text_glob):
      raise ValueError(f"config.data.text_glob={c.text_glob!r} matches no file: missing corpus. "
                       "Point it at your text files or use config.data.source=builtin.")
    eval_glob = c.get("text_eval_glob", "")
    if eval_glob and _local(eval_glob) and not _glob_files(eval_glob):
      raise ValueError(f"config.data.text_eval_glob={eval_glob!r} matches no file: point it at the eval "
                       "text files, or leave it empty to hold out config.data.eval_fraction of text_glob.")
    if not 0.0 <= c.get("max_bad_line_fraction", 0.01) <= 1.0:
      raise ValueError(f"config.data.max_bad_line_fraction={c.max_bad_line_fraction} must be in [0, 1].")
    if c.text_format not in ("sentence_per_line", "document_per_line"):
      raise ValueError(f"config.data.text_format={c.text_format!r}; use sentence_per_line or "
                       "document_per_line.")
  elif c.source == "tfrecord":
    if not c.tfrecord_glob or (_local(c.tfrecord_glob) and not _glob_files(c.tfrecord_glob)):
      raise ValueError(f"config.data.tfrecord_glob={c.tfrecord_glob!r} matches no file: missing "
                       "corpus (the output of `python -m bert_jax.data.preprocess`).")
  elif c.source == "tfds":
    if not c.tfds_name:
      raise ValueError("config.data.source='tfds' needs config.data.tfds_name.")
    data_dir = c.tfds_data_dir or os.environ.get("TFDS_DATA_DIR", "")
    if _local(data_dir or "~") and not os.path.isdir(tfds_dataset_dir(c.tfds_name, c.tfds_data_dir)):
      raise ValueError(f"TFDS dataset config.data.tfds_name={c.tfds_name!r} is not prepared in "
                       f"{os.path.dirname(tfds_dataset_dir(c.tfds_name, c.tfds_data_dir))} "
                       "(config.data.tfds_data_dir, or $TFDS_DATA_DIR): nothing is downloaded here; "
                       "prepare it first (tfds build) or fix the name or the data_dir.")


def separate_eval(c) -> bool:
  """Whether the eval documents come from a source of their own (config.data.tfds_eval_split,
  text_eval_glob) instead of the eval_fraction held out of the train documents."""
  return bool((c.source == "tfds" and c.tfds_eval_split) or (c.source == "text" and c.get("text_eval_glob", "")))


def tokenizer(c) -> None:
  """config.data.tokenizer: kind, a given file that exists, or settings to train one."""
  tc = c.tokenizer
  if tc.kind not in TOKENIZER_KINDS:
    raise ValueError(f"config.data.tokenizer.kind={tc.kind!r}: use one of {TOKENIZER_KINDS}.")
  if tc.path:
    if _local(tc.path) and not os.path.isfile(tc.path):
      raise ValueError(f"config.data.tokenizer.path={tc.path!r} does not exist (a sentencepiece .model "
                       "or a WordPiece vocab.txt); leave it empty to train a sentencepiece model.")
    return
  if tc.kind != "sentencepiece":
    raise ValueError("config.data.tokenizer.path is empty: only a sentencepiece tokenizer can be "
                     f"trained (config.data.tokenizer.kind={tc.kind!r}); set the path of your vocab.txt.")
  if tc.model_type not in ("unigram", "bpe"):
    raise ValueError(f"config.data.tokenizer.model_type={tc.model_type!r}: use unigram or bpe.")
  if tc.vocab_size < _MIN_VOCAB:
    raise ValueError(f"config.data.tokenizer.vocab_size={tc.vocab_size} is too small (>= {_MIN_VOCAB}).")
  if tc.train_sentences < 1:
    raise ValueError(f"config.data.tokenizer.train_sentences={tc.train_sentences} must be >= 1 "
                     "(sentences sampled from the corpus to train sentencepiece).")


def instances(c) -> None:
  """Row building: kind, length, packing, shares."""
  if c.instances not in inst_lib.INSTANCE_KINDS:
    raise ValueError(f"config.data.instances={c.instances!r}; choose one of {inst_lib.INSTANCE_KINDS}.")
  if c.max_seq_length < MIN_SEQ_LENGTH:
    raise ValueError(f"config.data.max_seq_length={c.max_seq_length} must be >= {MIN_SEQ_LENGTH} "
                     f"(instances={c.instances!r} needs [CLS] and [SEP] around its segments).")
  if c.pack_examples and c.instances in ("nsp", "sop"):
    raise ValueError("config.data.pack_examples=True needs one sentence label per row; use "
                     "instances=full_sentences or segments, or pack_examples=False.")
  if not 0.0 <= c.short_seq_prob <= 1.0:
    raise ValueError(f"config.data.short_seq_prob={c.short_seq_prob} must be in [0, 1].")
  if not 0.0 <= c.eval_fraction < 1.0:
    raise ValueError(f"config.data.eval_fraction={c.eval_fraction} must be in [0, 1).")


def length_probs(c) -> tuple[float, ...]:
  """p(n words) of a masked unit, n = 1..: config.data.ngram_weights (default 1/n up to
  ngram_max) for ngram, Geometric(span_p) truncated at span_max for span, (1.0,) otherwise."""
  if c.masking == "ngram":
    if c.ngram_weights:
      try:
        w = [float(x) for x in c.ngram_weights.split(",") if x.strip()]
      except ValueError as e:
        raise ValueError(f"config.data.ngram_weights={c.ngram_weights!r} must be comma separated numbers.") from e
    else:
      w = [1.0 / n for n in range(1, c.ngram_max + 1)]
    if not w or any(x < 0 for x in w) or sum(w) <= 0:
      raise ValueError(f"config.data.ngram_weights={c.ngram_weights!r}: weights must be >= 0 with a positive sum.")
  elif c.masking == "span":
    w = c.span_p * (1 - c.span_p) ** (np.arange(1, c.span_max + 1) - 1)
    return tuple((w / w.sum()).tolist())
  else:
    return (1.0,)
  return tuple(x / sum(w) for x in w)


def masking(c) -> None:
  """The masking keys: strategy, rates, prediction slots, replacement split, span/n-gram shape."""
  for key in ("masking", "eval_masking"):
    name = c.get(key, "")
    if (name or key == "masking") and name not in MASKING_STRATEGIES:
      raise ValueError(f"config.data.{key}={name!r}; choose one of {MASKING_STRATEGIES}.")
  if not 0.0 < c.mask_rate <= 1.0:
    raise ValueError(f"config.data.mask_rate={c.mask_rate} must be in (0, 1].")
  for key, what in (("corrupt_rate", "mask_rate"), ("eval_mask_rate", "the training mask_rate")):
    if not 0.0 <= float(c.get(key, 0.0) or 0.0) <= 1.0:
      raise ValueError(f"config.data.{key}={c.get(key)} must be in [0, 1] (0: {what}).")
  if not 1 <= c.max_predictions_per_seq <= c.max_seq_length:
    raise ValueError(f"config.data.max_predictions_per_seq={c.max_predictions_per_seq} must be in "
                     f"[1, max_seq_length={c.max_seq_length}].")
  split = (c.mask_token_prob, c.random_token_prob, c.keep_token_prob)
  if c.masking != "electra" and (min(split) < 0 or abs(sum(split) - 1.0) > 1e-6):
    raise ValueError("config.data.mask_token_prob + random_token_prob + keep_token_prob must sum to 1 "
                     f"with each >= 0; got {split[0]}, {split[1]}, {split[2]}.")
  if c.random_token_range not in ("non_special", "all"):
    raise ValueError(f"config.data.random_token_range={c.random_token_range!r}; use non_special or all.")
  if c.masking == "ngram":
    if c.ngram_max < 1:
      raise ValueError(f"config.data.ngram_max={c.ngram_max} must be >= 1.")
    if c.ngram_weights and len(length_probs(c)) != c.ngram_max:
      raise ValueError(f"config.data.ngram_weights has {len(length_probs(c))} entries but "
                       f"config.data.ngram_max={c.ngram_max}.")
  elif c.masking == "span":
    if not 0.0 < c.span_p <= 1.0:
      raise ValueError(f"config.data.span_p={c.span_p} must be in (0, 1].")
    if c.span_max < 1:
      raise ValueError(f"config.data.span_max={c.span_max} must be >= 1.")
    if c.span_max > c.max_seq_length - 2:
      raise ValueError(f"config.data.span_max={c.span_max} cannot exceed max_seq_length - 2 "
                       f"= {c.max_seq_length - 2}.")
  length_probs(c)


def validate(data_config) -> None:
  """Every check of config.data that needs no tokenizer and no corpus; raises ValueError naming
  the key (and the fix). Synthetic batches use the shapes only."""
  c = data_config
  source(c)
  if c.max_seq_length < MIN_SEQ_LENGTH:
    raise ValueError(f"config.data.max_seq_length={c.max_seq_length} must be >= {MIN_SEQ_LENGTH}.")
  if not 1 <= c.max_predictions_per_seq <= c.max_seq_length:
    raise ValueError(f"config.data.max_predictions_per_seq={c.max_predictions_per_seq} must be in "
                     f"[1, max_seq_length={c.max_seq_length}].")
  if c.source == "synthetic":
    return
  tokenizer(c)
  instances(c)
  masking(c)
