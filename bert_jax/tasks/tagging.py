r"""Token classification (NER, POS, chunking) on the task contract.

  python -m bert_jax.main --config=configs/finetune.py:conll --workdir=runs/ner \
      --config.init.hf_checkpoint=path/to/bert --config.finetune.data_dir=path/to/conll_dir
  python -m bert_jax.main --config=configs/finetune.py:conll2003 --workdir=runs/ner \
      --config.init.hf_checkpoint=path/to/bert --config.finetune.data_dir=path/to/tfds_data_dir

config.finetune.task: conll (CoNLL-format files in config.finetune.data_dir, source "conll") or
conll2003 (TFDS, source "tfds"); config.finetune.tagging: label_column (TFDS: ner | pos |
chunks; files: ner / pos / chunks as in CoNLL-2003, or a column index, -1 the last), labels
(default: TFDS's names, or the train file's tags sorted with O first), entities (entity-level
precision / recall / F1 with seqeval's semantics, bert_jax.metrics.entity_scores; else token
accuracy only). Labels go on each word's first piece (bert_jax.data.conll); the model is
models.ForTokenClassification; the loss is the cross-entropy over first pieces. Eval scores
words: the first piece's prediction, "O" (or label 0) for words cut off by max_seq_length.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bert_jax import batch as batch_lib
from bert_jax import metrics as metrics_lib
from bert_jax import models
from bert_jax.data import conll
from bert_jax.interop import hf
from bert_jax.tasks import base
from bert_jax.tasks import finetuning

SOURCES = ("conll", "tfds")
HEAD_KIND = "token_classification"


def _column(config) -> int | str:
  col, source = config.finetune.tagging.label_column, config.finetune.source
  if source == "tfds":
    return col
  if col in conll.CONLL2003_COLUMNS:
    return conll.CONLL2003_COLUMNS[col] if col != "ner" else -1
  try:
    return int(col)
  except ValueError:
    raise ValueError(f"config.finetune.tagging.label_column={col!r}: use ner, pos, chunks or a column index "
                     "of the CoNLL files (-1: the last).") from None


@functools.lru_cache(maxsize=8)
def _read(source: str, data_dir: str, split: str, column):
  if source == "tfds":
    return conll.read_tfds(split, column, data_dir)
  if source == "conll":
    return conll.read_file(conll.split_file(data_dir, split), column), None
  raise ValueError(f"config.finetune.source={source!r} for token classification: use one of {SOURCES}.")


def label_names(config) -> tuple[str, ...]:
  f = config.finetune
  if f.tagging.labels:
    return tuple(s.strip() for s in f.tagging.labels.split(","))
  sentences, names = _read(f.source, f.data_dir, "train", _column(config))
  if names:
    return names
  tags = sorted({t for s in sentences.tags for t in s})
  return tuple(["O"] + [t for t in tags if t != "O"]) if "O" in tags else tuple(tags)


@functools.lru_cache(maxsize=8)
def _featurize(source, data_dir, split, column, labels, tok_kind, tok_path, lower, max_len, subset, subset_seed):
  from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top  # TensorFlow: only when data are read
  sentences, _ = _read(source, data_dir, split, column)
  keep = finetuning.subset(len(sentences), subset, subset_seed)
  if keep is not None:
    sentences = conll.Sentences([sentences.words[i] for i in keep], [sentences.tags[i] for i in keep])
  tok = tokenizers.load(tok_path, tok_kind, lower)
  return sentences, conll.featurize(sentences, tok, labels, max_len), tok.vocab_size


def load(config, split: str):
  """(sentences, feature arrays) of a split under this config."""
  f, t = config.finetune, config.data.tokenizer
  is_train = split == "train"
  sentences, feats, vocab = _featurize(f.source, f.data_dir, split, _column(config), label_names(config), t.kind,
                                       t.path, bool(t.lower_case), int(config.data.max_seq_length),
                                       int(f.train_examples) if is_train else 0, int(f.subset_seed))
  finetuning.check_vocab(vocab, config)
  return sentences, feats


class TokenClassification(finetuning.FinetuneTask):
  """A label per word (on its first piece); entity-level F1 (or token accuracy)."""

  head_kind = HEAD_KIND

  def __init__(self, config):
    super().__init__(config)
    if config.get("finetune") is None or config.finetune.get("tagging") is None:
      raise ValueError("config.finetune.tagging is missing: use --config=configs/finetune.py:conll (or conll2003).")
    self.labels = label_names(config)
    self.num_labels = len(self.labels)
    self.model = models.ForTokenClassification(models.validate(config.model), self.num_labels)
    L = config.data.max_seq_length
    tok = batch_lib.Feature((L,), "int32", ("length",))
    self.features = {"input_ids": tok, "input_mask": tok, "token_type_ids": tok, "labels": tok,
                     "label_mask": batch_lib.Feature((L,), "float32", ("length",)),
                     "weight": batch_lib.Feature((), "float32")}
    self.best_metric = "eval/f1" if config.finetune.tagging.entities else "eval/accuracy"

  def arrays(self, split):
    return load(self.config, split)[1]

  # --- the seed driver's questions ------------------------------------------------------------
  @classmethod
  def metric_names(cls, config):
    return ("precision", "recall", "f1", "accuracy") if config.finetune.tagging.entities else ("accuracy",)

  @classmethod
  def check_data(cls, config) -> None:
    if config.finetune.source == "conll":
      label_names(config)  # reads the train file
      _read(config.finetune.source, config.finetune.data_dir, cls.eval_splits(config)[0], _column(config))

  @classmethod
  def prepare_data(cls, config) -> int:
    if config.finetune.source not in SOURCES:
      raise ValueError(f"config.finetune.source={config.finetune.source!r} for token classification: "
                       f"use one of {SOURCES}.")
    labels = label_names(config)
    if len(labels) < 2:
      raise ValueError(f"Token classification needs at least 2 labels, got {labels}.")
    sentences, _ = load(config, "train")
    load(config, cls.eval_splits(config)[0])
    cls.check_start_head(config, len(labels))
    return len(sentences)

  def export(self, params, hf_dir: str) -> str:
    return hf.export_head(self.config.model, params, hf_dir, HEAD_KIND, id2label=dict(enumerate(self.labels)))

  # --- the contract -----------------------------------------------------------------------
  def loss(self, params, batch, rng, deterministic=False, frozen=None):
    del frozen
    logits = self.logits(params, batch, rng, deterministic)
    w = batch["label_mask"] * batch["weight"][:, None]
    logp = jax.nn.log_softmax(logits, -1)
    per = -jnp.take_along_axis(logp, batch["labels"][..., None], -1)[..., 0]
    correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)
    loss = jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1e-6)
    return loss, {"loss": base.pair(w * per, w),
                  "token_accuracy": base.pair(w * correct, w)}

  def eval_step(self, params, batch, rng, frozen=None):
    metrics = self.loss(params, batch, rng, deterministic=True, frozen=frozen)[1]
    pred = jnp.argmax(self.logits(params, batch), -1).astype(jnp.int32)
    return metrics, {"pred": pred, "weight": batch["weight"]}

  def host_metrics(self, outputs):
    sentences, feats = load(self.config, self._eval_split)
    pred = outputs["pred"][outputs["weight"] > 0]
    if len(pred) != len(sentences):
      raise ValueError(f"Eval produced {len(pred)} rows for {len(sentences)} sentences.")
    fallback = "O" if "O" in self.labels else self.labels[0]
    words = conll.word_predictions(pred, feats["word_piece"], [len(w) for w in sentences.words], self.labels,
                                   fallback)
    scores = metrics_lib.entity_scores(sentences.tags, words)
    if not self.config.finetune.tagging.entities:
      return {"accuracy": scores["accuracy"]}
    majority = max(set(self.labels), key=lambda t: sum(s.count(t) for s in sentences.tags))
    scores["majority_accuracy"] = metrics_lib.entity_scores(sentences.tags, [[majority] * len(s) for s in
                                                                         sentences.tags])["accuracy"]
    return scores

  def train_line(self, values):
    return f"loss {values['loss']:.4f} | token accuracy {values['token_accuracy']:.3f}"

  def eval_line(self, values):
    keys = [k for k in ("precision", "recall", "f1", "accuracy") if k in values]
    line = " | ".join(f"{k} {values[k]:.4f}" for k in keys)
    if "majority_accuracy" in values:
      line += f" (majority-label accuracy {values['majority_accuracy']:.4f})"
    return line
