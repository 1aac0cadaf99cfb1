r"""Extractive question answering (SQuAD v1.1 / v2.0) on the task contract.

  python -m bert_jax.main --config=configs/finetune.py:squad --workdir=runs/squad \
      --config.init.hf_checkpoint=path/to/bert --config.finetune.data_dir=path/to/squad_json_dir

config.finetune.task: squad (v1.1) | squad_v2 (unanswerable questions). Sources
(config.finetune.source): `json` (the official files in config.finetune.data_dir:
train-v1.1.json / dev-v1.1.json, train-v2.0.json / dev-v2.0.json; or config.finetune.squad.
train_file / eval_file) or `tfds` (squad/v1.1, squad/v2.0; data_dir = a TFDS data_dir).
config.finetune.squad.train_articles / eval_articles ("a:b", Python slice of the file's
articles) take parts of a file, e.g. training on some dev articles and evaluating on the others.

The model is models.ForQuestionAnswering (start and end logits per piece); the loss is the mean
of the start and end cross-entropies (run_squad.py). Evaluation windows the eval contexts,
post-processes the logits into answers (bert_jax.data.squad.postprocess: n-best, max answer
length, v2.0 null score) and scores them with the official semantics (bert_jax.tasks.squad_eval):
exact and f1 (percent); v2.0 also best_exact / best_f1 at the null-score threshold that is best
on this split (best_f1_thresh: set config.finetune.squad.null_score_diff_threshold to it, as one
tunes run_squad.py's flag). Scoring the best checkpoint writes predictions.json,
nbest_predictions.json and (v2.0) null_odds.json, in the official scripts' formats.
"""

from __future__ import annotations

import functools
import json
import os

from etils import epath
import jax
import jax.numpy as jnp

from bert_jax import batch as batch_lib
from bert_jax import models
from bert_jax.data import squad
from bert_jax.interop import hf
from bert_jax.tasks import base
from bert_jax.tasks import finetuning
from bert_jax.tasks import squad_eval

VERSIONS = {"squad": "v1.1", "squad_v2": "v2.0"}
SOURCES = ("json", "tfds")
HEAD_KIND = "question_answering"


def _slice(spec: str, what: str) -> slice:
  """ "a:b" -> slice(a, b) ("" -> everything)."""
  if not spec:
    return slice(None)
  try:
    parts = [int(p) if p.strip() else None for p in spec.split(":")]
    if len(parts) != 2:
      raise ValueError
  except ValueError:
    raise ValueError(f"config.finetune.squad.{what}={spec!r}: use 'start:stop' (article indices, "
                     "either may be empty), e.g. '0:30'.") from None
  return slice(*parts)


@functools.lru_cache(maxsize=8)
def _read(version: str, source: str, data_dir: str, file: str, split: str, articles: str):
  """(examples, official-layout dataset list) of one split, restricted to `articles`."""
  what = "train_articles" if split == "train" else "eval_articles"
  if source == "json":
    path = file or os.path.join(data_dir, squad.SPLIT_FILES[version][split])
    _, data = squad.read_json(path, version)
  elif source == "tfds":
    _, data = squad.read_tfds(version, split, data_dir)
  else:
    raise ValueError(f"config.finetune.source={source!r} for SQuAD: use one of {SOURCES}.")
  sub = {"version": data.get("version", version.lstrip("v")), "data": data["data"][_slice(articles, what)]}
  if not sub["data"]:
    raise ValueError(f"config.finetune.squad.{what}={articles!r} leaves no article of the {split} file "
                     f"({len(data['data'])} articles).")
  return squad.from_json(sub), sub["data"]


@functools.lru_cache(maxsize=8)
def _featurize(key, tok_kind, tok_path, lower, max_len, stride, max_query, is_training, subset, subset_seed):
  from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top  # TensorFlow: only when data are read
  examples, data = _read(*key)
  keep = finetuning.subset(len(examples), subset, subset_seed)
  if keep is not None:
    examples = [examples[i] for i in keep]
  tok = tokenizers.load(tok_path, tok_kind, lower)
  feats = squad.featurize(examples, tok, max_len, stride, max_query, is_training=is_training)
  return examples, data, feats, tok


def _key(config, split: str) -> tuple:
  """_read's arguments for a split under this config."""
  f, q = config.finetune, config.finetune.squad
  is_train = split == "train"
  return (VERSIONS[f.task], f.source, f.data_dir, q.train_file if is_train else q.eval_file, split,
          q.train_articles if is_train else q.eval_articles)


def load(config, split: str):
  """(examples, dataset list, squad.Features, tokenizer) of a split under this config."""
  f, q, t = config.finetune, config.finetune.squad, config.data.tokenizer
  is_train = split == "train"
  out = _featurize(_key(config, split), t.kind, t.path, bool(t.lower_case), int(config.data.max_seq_length), int(q.doc_stride),
                   int(q.max_query_length), is_train, int(f.train_examples) if is_train else 0, int(f.subset_seed))
  finetuning.check_vocab(out[3].vocab_size, config)
  return out


class QuestionAnswering(finetuning.FinetuneTask):
  """SQuAD: start/end logits over the pieces, EM / F1 after post-processing."""

  best_metric = "eval/f1"
  head_kind = HEAD_KIND
  num_labels = 2  # start and end logits (HF's qa_outputs)

  def __init__(self, config):
    super().__init__(config)
    if config.get("finetune") is None or config.finetune.get("squad") is None:
      raise ValueError("config.finetune.squad is missing: use --config=configs/finetune.py:squad (or squad_v2).")
    if config.finetune.task not in VERSIONS:
      raise ValueError(f"QuestionAnswering: config.finetune.task={config.finetune.task!r}; use one of {sorted(VERSIONS)}.")
    self.version = VERSIONS[config.finetune.task]
    self.model = models.ForQuestionAnswering(models.validate(config.model))
    L = config.data.max_seq_length
    tok = batch_lib.Feature((L,), "int32", ("length",))
    self.features = {"input_ids": tok, "input_mask": tok, "token_type_ids": tok,
                     "start_positions": batch_lib.Feature((), "int32"),
                     "end_positions": batch_lib.Feature((), "int32"), "weight": batch_lib.Feature((), "float32")}
    self._outputs = None

  def arrays(self, split):
    return load(self.config, split)[2].arrays

  # --- the seed driver's questions ------------------------------------------------------------
  @classmethod
  def metric_names(cls, config):
    return ("exact", "f1") + (("best_f1", "best_f1_thresh") if VERSIONS[config.finetune.task] == "v2.0" else ())

  @classmethod
  def check_data(cls, config) -> None:
    if config.finetune.source == "json":
      for split in ("train", cls.eval_splits(config)[0]):
        _read(*_key(config, split))

  @classmethod
  def prepare_data(cls, config) -> int:
    """Reads and featurizes train and eval before anything is compiled; the train size."""
    if config.finetune.source not in SOURCES:
      raise ValueError(f"config.finetune.source={config.finetune.source!r} for SQuAD: use one of {SOURCES}.")
    examples, _, feats, _ = load(config, "train")
    if not len(feats):
      raise ValueError("No training question has a usable answer span; check config.finetune.data_dir.")
    load(config, cls.eval_splits(config)[0])
    cls.check_start_head(config, cls.num_labels)
    return len(examples) - feats.skipped

  def write_outputs(self, split, out_dir):
    """predictions.json, nbest_predictions.json (and null_odds.json) of the last evaluation, in
    <out_dir>/<split>."""
    if self._outputs is None or jax.process_index() != 0:
      return {}
    path = epath.Path(out_dir) / split
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for name, value in zip(("predictions.json", "nbest_predictions.json", "null_odds.json"), self._outputs):
      if value:
        (path / name).write_text(json.dumps(value, indent=2))
        written.append(str(path / name))
    return {"predictions": written}

  def export(self, params, hf_dir: str) -> str:
    return hf.export_head(self.config.model, params, hf_dir, HEAD_KIND)

  # --- the contract -----------------------------------------------------------------------
  def loss(self, params, batch, rng, deterministic=False, frozen=None):
    del frozen
    start, end = self.logits(params, batch, rng, deterministic)
    w = batch["weight"]
    # Padding pieces never hold an answer: out of the softmax.
    neg = jnp.where(batch["input_mask"] > 0, 0.0, -1e9)

    def xent(logits, target):
      logp = jax.nn.log_softmax(logits + neg, -1)
      return -jnp.take_along_axis(logp, target[:, None], -1)[:, 0]

    per = 0.5 * (xent(start, batch["start_positions"]) + xent(end, batch["end_positions"]))
    loss = jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1e-6)
    exact = ((jnp.argmax(start + neg, -1) == batch["start_positions"]) &
             (jnp.argmax(end + neg, -1) == batch["end_positions"])).astype(jnp.float32)
    return loss, {"loss": base.pair(w * per, w),
                  "span_accuracy": base.pair(w * exact, w)}

  def eval_step(self, params, batch, rng, frozen=None):
    del rng, frozen
    start, end = self.logits(params, batch)
    return {}, {"start_logits": start, "end_logits": end, "weight": batch["weight"]}

  def host_metrics(self, outputs):
    q = self.config.finetune.squad
    examples, data, feats, tok = load(self.config, self._eval_split)
    real = outputs["weight"] > 0
    start, end = outputs["start_logits"][real], outputs["end_logits"][real]
    if len(start) != len(feats):
      raise ValueError(f"Eval produced {len(start)} rows for {len(feats)} SQuAD windows.")
    v2 = self.version == "v2.0"
    preds, nbest, null = squad.postprocess(examples, feats, start, end, tok, int(q.n_best_size),
                                           int(q.max_answer_length), v2, float(q.null_score_diff_threshold))
    self._outputs = (preds, nbest, null)
    scores = squad_eval.evaluate(data, preds, self.version, null if v2 else None)
    if not v2:
      return {"exact": scores["exact_match"], "f1": scores["f1"]}
    return {k: float(v) for k, v in scores.items() if not k.endswith("total")}

  def train_line(self, values):
    return f"loss {values['loss']:.4f} | span accuracy {values['span_accuracy']:.3f}"

  def eval_line(self, values):
    line = f"exact {values['exact']:.2f} | f1 {values['f1']:.2f}"
    if "best_f1" in values:
      line += f" | best f1 {values['best_f1']:.2f} at null threshold {values['best_f1_thresh']:.3f}"
    return line
