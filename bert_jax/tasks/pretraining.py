"""Pretraining tasks: BERT/ALBERT's masked LM (+ NSP or SOP) and ELECTRA's replaced-token detection.

config.objective.name (bert_jax.tasks.registry):
  mlm      BERT/ALBERT: masked-LM (+ NSP or SOP sentence loss, config.objective.sentence_loss)
  electra  generator MLM + discriminator replaced-token detection, both in one step
Normalisation follows the reference repos: MLM = sum(w * xent) / (sum(w) + 1e-5); the sentence
loss is a batch mean; ELECTRA's discriminator loss = sum(mask * bce) / (sum(mask) + 1e-6).
Both read the data contract of bert_jax.data.pipeline (bert_jax.batch.pretraining).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import models
from bert_jax import starts
from bert_jax.data import checks
from bert_jax.data import synthetic
from bert_jax.tasks import base

SENTENCE_LOSSES = ("nsp", "sop", "none")
AUC_BINS = 100  # histogram resolution of the eval-time discriminator AUC
# Continued pretraining: the largest share of [UNK] the checkpoint's tokenizer may give the corpus
# (config.data.max_unk_share when the config has it); above it the run is refused.
MAX_UNK_SHARE = 0.5
UNK_SAMPLE_SENTENCES = 2000  # sentences of the corpus the share is measured on


def validate(objective_config, model_config, data_config=None) -> None:
  """Raises ValueError naming the key; with `data_config`, config.data too (bert_jax.data.checks:
  no TensorFlow, no tokenizer, no corpus)."""
  name = objective_config.name
  if objective_config.sentence_loss not in SENTENCE_LOSSES:
    raise ValueError(f"Unknown config.objective.sentence_loss={objective_config.sentence_loss!r}; "
                     f"choose one of {SENTENCE_LOSSES}.")
  if (name == "electra") != (model_config.family == "electra"):
    raise ValueError(f"config.objective.name={name!r} does not fit config.model.family="
                     f"{model_config.family!r}: use 'electra' exactly for the electra family.")
  if name == "electra" and objective_config.sentence_loss != "none":
    raise ValueError("config.objective.sentence_loss must be 'none' for ELECTRA.")
  if data_config is not None:
    checks.validate(data_config)


def mlm_loss(logits, ids, weights) -> tuple[jax.Array, base.Metrics]:
  """Weighted softmax cross-entropy over the masked positions; logits [B,P,V] in any dtype."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  xent = -jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]
  w = weights.astype(jnp.float32)
  loss = jnp.sum(w * xent) / (jnp.sum(w) + 1e-5)
  correct = (jnp.argmax(logits, -1) == ids).astype(jnp.float32)
  return loss, {"mlm_loss": base.pair(w * xent, w), "mlm_accuracy": base.pair(w * correct, w)}


def sentence_loss(logits, labels, name: str) -> tuple[jax.Array, base.Metrics]:
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  xent = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  ones = jnp.ones_like(xent)
  return jnp.mean(xent), {f"{name}_loss": base.pair(xent, ones), f"{name}_accuracy": base.pair(correct, ones)}


def make_mlm(model, objective_config) -> Callable:
  """BERT/ALBERT: MLM (+ NSP/SOP)."""
  sent = objective_config.sentence_loss

  def loss_fn(params, batch, rng, deterministic: bool = False):
    out = model.apply({"params": params}, **models.model_inputs(model, batch), deterministic=deterministic,
                      rngs=None if deterministic else {"dropout": rng})
    loss, metrics = mlm_loss(out["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"])
    if sent != "none":
      s_loss, s_metrics = sentence_loss(out["sentence_logits"], batch["next_sentence_labels"], sent)
      loss = loss + s_loss
      metrics.update(s_metrics)
    metrics["loss"] = base.pair(loss, 1.0)
    return loss, metrics

  return loss_fn


def gumbel_sample(rng, logits, temperature: float):
  """argmax(logits / T + Gumbel noise) == a sample from softmax(logits / T)."""
  u = jax.random.uniform(rng, logits.shape, jnp.float32)
  gumbel = -jnp.log(-jnp.log(u + 1e-9) + 1e-9)
  return jnp.argmax(logits.astype(jnp.float32) / temperature + gumbel, axis=-1).astype(jnp.int32)


def electra_fake_inputs(batch, sampled):
  """Disc inputs with sampled tokens at the (real) masked positions, and replaced-token labels.

  A sampled token equal to the original counts as real (label 0), as in the reference.
  """
  ids, pos, w = (jnp.asarray(batch[k]) for k in ("input_ids", "masked_lm_positions",
                                                  "masked_lm_weights"))
  rows = jnp.arange(ids.shape[0])[:, None]
  real = w > 0
  # Padding predictions point at position 0 ([CLS]); route them out of bounds so they drop.
  safe_pos = jnp.where(real, pos, ids.shape[1])
  fake_ids = ids.at[rows, safe_pos].set(sampled, mode="drop")
  original = ids.at[rows, safe_pos].set(batch["masked_lm_ids"], mode="drop")
  labels = (fake_ids != original).astype(jnp.int32)
  return fake_ids, labels


def make_electra(model, objective_config, eval_auc: bool = False) -> Callable:
  """Generator MLM + discriminator RTD with Gumbel sampling (stop-gradient) in one function."""
  gen_w, disc_w = float(objective_config.gen_weight), float(objective_config.disc_weight)
  temperature = float(objective_config.sampling_temperature)

  def loss_fn(params, batch, rng, deterministic: bool = False):
    r_gen, r_sample, r_disc = jax.random.split(rng, 3)
    inputs = models.model_inputs(model.discriminator, batch)
    gen_logits = model.apply({"params": params}, **models.model_inputs(model.generator, batch),
                             deterministic=deterministic, method=model.generator,
                             rngs=None if deterministic else {"dropout": r_gen})
    g_loss, metrics = mlm_loss(gen_logits, batch["masked_lm_ids"], batch["masked_lm_weights"])
    metrics = {"gen_" + k[len("mlm_"):]: v for k, v in metrics.items()}
    sampled = gumbel_sample(r_sample, jax.lax.stop_gradient(gen_logits), temperature)
    fake_ids, labels = electra_fake_inputs(batch, sampled)
    disc_inputs = dict(inputs, input_ids=fake_ids)
    d_logits = model.apply({"params": params}, **disc_inputs, deterministic=deterministic,
                           method=model.discriminator, rngs=None if deterministic else {"dropout": r_disc})
    d_logits = d_logits.astype(jnp.float32)
    mask = batch["input_mask"].astype(jnp.float32)
    y = labels.astype(jnp.float32)
    bce = jnp.maximum(d_logits, 0) - d_logits * y + jnp.log1p(jnp.exp(-jnp.abs(d_logits)))
    d_loss = jnp.sum(mask * bce) / (jnp.sum(mask) + 1e-6)
    loss = gen_w * g_loss + disc_w * d_loss
    pred = (d_logits > 0).astype(jnp.float32)
    metrics.update({
        "disc_loss": base.pair(mask * bce, mask),
        "disc_accuracy": base.pair(mask * (pred == y), mask),
        "disc_precision": base.pair(mask * pred * y, mask * pred),
        "disc_recall": base.pair(mask * pred * y, mask * y),
        "disc_replaced_fraction": base.pair(mask * y, mask),
        "loss": base.pair(loss, 1.0),
    })
    if eval_auc:
      prob = jax.nn.sigmoid(d_logits)
      bins = jnp.clip((prob * AUC_BINS).astype(jnp.int32), 0, AUC_BINS - 1)
      hist = lambda wts: jnp.zeros(AUC_BINS, jnp.float32).at[bins.reshape(-1)].add(wts.reshape(-1))
      metrics["disc_pos_hist"] = hist(mask * y)
      metrics["disc_neg_hist"] = hist(mask * (1 - y))
    return loss, metrics

  return loss_fn


def build(config, model, eval_auc: bool = False) -> Callable:
  """loss(params, batch, rng, deterministic=False) -> (scalar loss, metrics) for config.objective."""
  validate(config.objective, config.model)
  if config.objective.name == "electra":
    return make_electra(model, config.objective, eval_auc=eval_auc)
  return make_mlm(model, config.objective)


class Pretraining(base.Task):
  """MLM(+NSP/SOP) for BERT/ALBERT; the data contract of bert_jax.data.pipeline."""

  best_metric = "eval/mlm_loss"
  accuracy_key = "mlm_accuracy"
  fresh_heads: tuple[str, ...] = ()  # heads of this task that no checkpoint holds (named at a warm start)

  def __init__(self, config):
    super().__init__(config)
    validate(config.objective, config.model)
    self.model = models.build(config.model)
    self.features = batch_lib.pretraining(config.data.max_seq_length, config.data.max_predictions_per_seq)
    self._loss = build(config, self.model)
    self._eval_loss = build(config, self.model, eval_auc=True)

  @classmethod
  def configure(cls, config) -> None:
    """Before anything is built (bert_jax.train calls it before the checks): with
    config.init.hf_checkpoint, config.model's architecture and config.data.tokenizer from the
    checkpoint (bert_jax.starts.resolve_pretraining_start); without one, nothing changes."""
    starts.resolve_pretraining_start(config, starts.COMMAND_LINE_KEYS, cls.fresh_heads)

  @classmethod
  def validate(cls, config) -> None:
    validate(config.objective, config.model, config.data)

  def loss(self, params, batch, rng, deterministic: bool = False, frozen=None):
    del frozen
    return self._loss(params, batch, rng, deterministic=deterministic)

  def eval_step(self, params, batch, rng, frozen=None):
    del frozen
    metrics = self._eval_loss(params, batch, rng, deterministic=True)[1]
    return metrics, {"masked_lm_ids": batch["masked_lm_ids"], "masked_lm_weights": batch["masked_lm_weights"]}

  def host_metrics(self, outputs):
    """The best constant guess: accuracy of the most frequent masked token of the eval batches."""
    ids, w = outputs["masked_lm_ids"].ravel(), outputs["masked_lm_weights"].ravel()
    counts = np.unique(ids[w > 0], return_counts=True)[1]
    return {"most_frequent_token_accuracy": counts.max() / counts.sum() if counts.size else float("nan")}

  def train_line(self, values):
    return f"loss {values['loss']:.4f} | {self.accuracy_key} {values[self.accuracy_key]:.3f}"

  def eval_line(self, values):
    return (f"{self.accuracy_key.replace('_', ' ')} {values[self.accuracy_key]:.4f} vs most-frequent-token "
            f"baseline {values['most_frequent_token_accuracy']:.4f}")

  def inputs(self, workdir, start_batch):
    """(train iterator at `start_batch`, eval-iterator factory) of per-host numpy batches."""
    config = self.config
    if config.data.source == "synthetic":
      return synthetic.inputs(config, start_batch)
    # TensorFlow loads only when a corpus is read (not for synthetic batches nor fine-tuning).
    from bert_jax.data import pipeline, tokenizers  # pylint: disable=g-import-not-at-top,g-multiple-import
    pi, pc = jax.process_index(), jax.process_count()
    bs, ebs = config.train.batch_size, config.eval.batch_size or config.train.batch_size
    tok = tokenizers.build_or_load(config.data, workdir)
    if tok.vocab_size > config.model.vocab_size:
      raise ValueError(f"The tokenizer has {tok.vocab_size} ids but config.model.vocab_size="
                       f"{config.model.vocab_size}; raise config.model.vocab_size to >= {tok.vocab_size}.")
    if config.init.hf_checkpoint and config.data.source in ("builtin", "text", "tfds") and not config.data.get(
        "rows_path", ""):  # the corpus's text (preprocessed records and rows hold ids)
      check_unk_share(config, tok)
    train_it = pipeline.train_iterator(config.data, tok, batch_size=bs // pc, process_index=pi,
                                       process_count=pc, start_batch=start_batch, seed=config.data.seed)
    eval_fn = lambda: pipeline.eval_iterator(config.data, tok, batch_size=ebs // pc, process_index=pi,  # noqa: E731
                                             process_count=pc, num_batches=config.eval.num_batches,
                                             seed=config.data.seed)
    return train_it, eval_fn

  def warm_start(self, params):
    if not self.config.init.hf_checkpoint:
      return params
    return starts.from_hf(self.config, params)


def unk_share(data_config, tok, max_sentences: int = UNK_SAMPLE_SENTENCES) -> tuple[float, int]:
  """(share of [UNK] among the tokens, tokens counted) of the corpus's first `max_sentences`
  training sentences under `tok`."""
  from bert_jax.data import corpora  # pylint: disable=g-import-not-at-top  # TensorFlow: only with a corpus
  sentences = []
  for doc in corpora.source_documents(data_config, "train", {}):
    sentences += [s for s in doc if s.strip()]
    if len(sentences) >= max_sentences:
      break
  ids = [i for row in tok.encode_batch(sentences[:max_sentences]) for i in row]
  return (sum(i == tok.unk_id for i in ids) / len(ids) if ids else 0.0), len(ids)


def check_unk_share(config, tok) -> None:
  """Refuses a corpus the checkpoint's tokenizer does not cover (e.g. Chinese text under an English
  vocabulary): more [UNK] than config.data.max_unk_share (MAX_UNK_SHARE when the config has no such
  key) of the tokens of the first sentences."""
  limit = float(config.data.get("max_unk_share", MAX_UNK_SHARE))
  share, n = unk_share(config.data, tok)
  if n and share > limit:
    raise ValueError(f"The tokenizer of config.init.hf_checkpoint={config.init.hf_checkpoint!r} ({tok.path}) reads "
                     f"{share:.1%} of the corpus's tokens as [UNK] (first {n} tokens), above "
                     f"config.data.max_unk_share={limit}: the corpus is not in the checkpoint's language or "
                     "script; use a checkpoint whose vocabulary covers it, or raise config.data.max_unk_share "
                     "to train anyway.")
  if n and share > 0.05 and jax.process_index() == 0:
    print(f"Note: the checkpoint's tokenizer reads {share:.1%} of the corpus's tokens as [UNK].", flush=True)


class Electra(Pretraining):
  """Generator MLM + discriminator RTD; same data contract as MLM."""

  best_metric = "eval/disc_loss"
  accuracy_key = "gen_accuracy"

  def train_line(self, values):
    return super().train_line(values) + f" disc_acc {values['disc_accuracy']:.3f}"

  def eval_line(self, values):
    return super().eval_line(values) + (
        f" | disc acc {values['disc_accuracy']:.4f} vs all-real baseline "
        f"{1 - values['disc_replaced_fraction']:.4f} | disc AUC {values.get('disc_auc', float('nan')):.4f}")
