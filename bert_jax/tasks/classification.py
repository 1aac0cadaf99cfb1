r"""Sequence classification and regression: GLUE tasks and any label<TAB>text task.

  python -m bert_jax.main --config=configs/finetune.py:sst2 --workdir=runs/sst2 \
      --config.init.hf_checkpoint=path/to/hf_or_converted_dir --config.finetune.seeds=5

config.finetune.task: a GLUE task (bert_jax.data.glue: sst2, mrpc, cola, rte, stsb, ...) or tsv
(labels from config.finetune.labels or the data's labels file). The model is
models.ForSequenceClassification; the loss is softmax cross-entropy (regression: MSE on one
output); eval metrics are the task's (scikit-learn / scipy, bert_jax.metrics); scoring the best
checkpoint writes GLUE test predictions in the benchmark's submission format.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import metrics as metrics_lib
from bert_jax import models
from bert_jax.data import glue
from bert_jax.interop import hf
from bert_jax.tasks import base
from bert_jax.tasks import finetuning


@functools.lru_cache(maxsize=16)
def _load(task_name, source, path, split, labels, tok_kind, tok_path, lower, max_len, truncation,
          subset, subset_seed):
  from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top  # TensorFlow: only when data are read
  info = glue.task_info(task_name)
  ex = glue.read_examples(info, source, path, split, labels=labels or None)
  keep = finetuning.subset(len(ex), subset, subset_seed)
  if keep is not None:
    ex = glue.Examples([ex.text_a[i] for i in keep], None if ex.text_b is None else [ex.text_b[i] for i in keep],
                       ex.label[keep], ex.idx[keep])
  tok = tokenizers.load(tok_path, tok_kind, lower)
  return glue.featurize(ex, tok, max_len, truncation=truncation), tok.vocab_size


def task_info(config):
  return glue.task_info(config.finetune.task)


def label_names(config) -> tuple[str, ...] | None:
  info = task_info(config)
  if config.finetune.labels:
    return tuple(s.strip() for s in config.finetune.labels.split(","))
  return glue.load_labels(info, config.finetune.data_dir) if info.labels is not None else None


def load_split(config, split: str) -> dict[str, np.ndarray]:
  f, t = config.finetune, config.data.tokenizer
  is_train = split == "train"
  feats, vocab = _load(f.task, f.source, f.data_dir, split, label_names(config) if f.task == "tsv" else None,
                       t.kind, t.path, bool(t.lower_case), int(config.data.max_seq_length), f.truncation,
                       int(f.train_examples) if is_train else 0, int(f.subset_seed))
  finetuning.check_vocab(vocab, config)
  return feats


class Classification(finetuning.FinetuneTask):
  """Sequence classification (softmax cross-entropy) or regression (MSE, one output)."""

  def __init__(self, config):
    super().__init__(config)
    self.info = task_info(config)
    self.labels = label_names(config)
    self.regression = self.labels is None
    self.num_labels = 1 if self.regression else len(self.labels)
    self.model = models.ForSequenceClassification(models.validate(config.model), self.num_labels)
    L = config.data.max_seq_length
    tok = batch_lib.Feature((L,), "int32", ("length",))
    self.features = {"input_ids": tok, "input_mask": tok, "token_type_ids": tok,
                     "label": batch_lib.Feature((), "float32" if self.regression else "int32"),
                     "weight": batch_lib.Feature((), "float32")}
    self.best_metric = f"eval/{self.info.main_metric}"

  # --- the seed driver's questions ------------------------------------------------------------
  @classmethod
  def prepare_data(cls, config) -> int:
    labels = label_names(config)
    cls.check_start_head(config, 1 if labels is None else len(labels))  # before anything is compiled
    n = len(load_split(config, "train")["label"])
    for split in cls.eval_splits(config):
      load_split(config, split)
    return n

  @classmethod
  def check_data(cls, config) -> None:
    if config.finetune.source != "tsv":
      return  # TFDS: read when the runs start
    info, labels = task_info(config), label_names(config)
    for split in ("train", *cls.eval_splits(config)):
      glue.read_examples(info, "tsv", config.finetune.data_dir, split,
                         labels if config.finetune.task == "tsv" else None)

  @classmethod
  def eval_splits(cls, config):
    return (config.finetune.eval_split,) if config.finetune.eval_split else tuple(task_info(config).eval_splits)

  @classmethod
  def metric_names(cls, config):
    return tuple(task_info(config).metrics)

  def arrays(self, split):
    return load_split(self.config, split)

  def write_test_predictions(self, predict, out_dir):
    """GLUE test predictions (the benchmark's submission files) of the test splits that exist."""
    ebs = self.config.eval.batch_size or self.config.train.batch_size
    written = []
    for split in self.info.test_splits:
      try:
        feats = load_split(self.config, split)
      except FileNotFoundError:
        continue
      pred = predict(finetuning.padded_batches(feats, ebs))["pred"][:len(feats["label"])]
      if jax.process_index() == 0:
        written.append(glue.write_predictions(self.info, split, feats["idx"], pred, out_dir, labels=self.labels))
    return {"test_predictions": written} if written else {}

  def export(self, params, hf_dir):
    problem = "regression" if self.regression else "single_label_classification"
    id2label = None if self.regression else dict(enumerate(self.labels))
    return hf.export_classifier(self.config.model, params, self.num_labels, hf_dir, problem_type=problem,
                                id2label=id2label)

  # --- the contract -----------------------------------------------------------------------------
  def loss(self, params, batch, rng, deterministic=False, frozen=None):
    del frozen
    logits = self.logits(params, batch, rng, deterministic)
    w = batch["weight"]
    if self.regression:
      per = jnp.square(logits[:, 0] - batch["label"])
      metrics = {}
    else:
      logp = jax.nn.log_softmax(logits, -1)
      per = -jnp.take_along_axis(logp, batch["label"][:, None], -1)[:, 0]
      correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
      metrics = {"accuracy": base.pair(w * correct, w)}
    loss = jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1e-6)
    metrics["loss"] = base.pair(w * per, w)
    return loss, metrics

  def eval_step(self, params, batch, rng, frozen=None):
    metrics = self.loss(params, batch, rng, deterministic=True, frozen=frozen)[1]
    logits = self.logits(params, batch)
    pred = logits[:, 0] if self.regression else jnp.argmax(logits, -1)
    return metrics, {"pred": pred, "label": batch["label"], "weight": batch["weight"]}

  def host_metrics(self, outputs):
    real = outputs["weight"] > 0
    return metrics_lib.compute(self.info.metrics, outputs["pred"][real], outputs["label"][real])

  def train_line(self, values):
    return f"loss {values['loss']:.4f}" + (f" | accuracy {values['accuracy']:.3f}" if "accuracy" in values else "")

  def eval_line(self, values):
    return " | ".join(f"{k} {values[k]:.4f}" for k in (*self.info.metrics, "loss"))


