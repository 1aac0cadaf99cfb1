"""Pretraining objectives: `loss(params, batch, rng) -> (loss, metrics)`; the loop knows nothing else.

Metrics are a dict name -> float32[2] (sum, weight) so micro-batches, devices and eval batches
aggregate exactly; `reduce_metrics` turns them into means on the host.

  mlm      BERT/ALBERT: masked-LM (+ NSP or SOP sentence loss, config.objective.sentence_loss)
  electra  generator MLM + discriminator replaced-token detection, both in one step
Normalisation follows the reference repos: MLM = sum(w * xent) / (sum(w) + 1e-5); the sentence
loss is a batch mean; ELECTRA's discriminator loss = sum(mask * bce) / (sum(mask) + 1e-6).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

OBJECTIVES = ("mlm", "electra")
SENTENCE_LOSSES = ("nsp", "sop", "none")
AUC_BINS = 100  # histogram resolution of the eval-time discriminator AUC

Metrics = dict[str, jax.Array]


def validate(objective_config, model_config) -> None:
  name = objective_config.name
  if name not in OBJECTIVES:
    raise ValueError(f"Unknown config.objective.name={name!r}; choose one of {OBJECTIVES}.")
  if objective_config.sentence_loss not in SENTENCE_LOSSES:
    raise ValueError(f"Unknown config.objective.sentence_loss={objective_config.sentence_loss!r}; "
                     f"choose one of {SENTENCE_LOSSES}.")
  if (name == "electra") != (model_config.family == "electra"):
    raise ValueError(f"config.objective.name={name!r} does not fit config.model.family="
                     f"{model_config.family!r}: use 'electra' exactly for the electra family.")
  if name == "electra" and objective_config.sentence_loss != "none":
    raise ValueError("config.objective.sentence_loss must be 'none' for ELECTRA.")


def _pair(total, weight) -> jax.Array:
  return jnp.stack([jnp.asarray(total, jnp.float32).sum(), jnp.asarray(weight, jnp.float32).sum()])


def reduce_metrics(metrics: dict[str, Any]) -> dict[str, float]:
  """Host-side: (sum, weight) pairs -> means; AUC histograms -> AUC."""
  metrics = jax.device_get(metrics)
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v, np.float64)
    if k.endswith("_hist"):
      continue
    out[k] = float(v[0] / v[1]) if v[1] > 0 else float("nan")
  if "disc_pos_hist" in metrics:
    out["disc_auc"] = histogram_auc(np.asarray(metrics["disc_pos_hist"]), np.asarray(metrics["disc_neg_hist"]))
  return out


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float:
  """ROC AUC from score histograms (ties inside a bin count one half)."""
  pos, neg = pos.astype(np.float64), neg.astype(np.float64)
  if pos.sum() == 0 or neg.sum() == 0:
    return float("nan")
  neg_below = np.cumsum(neg) - neg
  return float((pos * (neg_below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def mlm_loss(logits, ids, weights) -> tuple[jax.Array, Metrics]:
  """Weighted softmax cross-entropy over the masked positions; logits [B,P,V] in any dtype."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  xent = -jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]
  w = weights.astype(jnp.float32)
  loss = jnp.sum(w * xent) / (jnp.sum(w) + 1e-5)
  correct = (jnp.argmax(logits, -1) == ids).astype(jnp.float32)
  return loss, {"mlm_loss": _pair(w * xent, w), "mlm_accuracy": _pair(w * correct, w)}


def sentence_loss(logits, labels, name: str) -> tuple[jax.Array, Metrics]:
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  xent = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  ones = jnp.ones_like(xent)
  return jnp.mean(xent), {f"{name}_loss": _pair(xent, ones), f"{name}_accuracy": _pair(correct, ones)}


def _model_inputs(batch) -> dict[str, Any]:
  return {k: batch[k] for k in ("input_ids", "input_mask", "token_type_ids", "segment_ids", "position_ids")
          if k in batch}


def make_mlm(model, objective_config) -> Callable:
  """BERT/ALBERT: MLM (+ NSP/SOP)."""
  sent = objective_config.sentence_loss

  def loss_fn(params, batch, rng, deterministic: bool = False):
    out = model.apply({"params": params}, **_model_inputs(batch),
                      masked_lm_positions=batch["masked_lm_positions"], deterministic=deterministic,
                      rngs=None if deterministic else {"dropout": rng})
    loss, metrics = mlm_loss(out["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"])
    if sent != "none":
      s_loss, s_metrics = sentence_loss(out["sentence_logits"], batch["next_sentence_labels"], sent)
      loss = loss + s_loss
      metrics.update(s_metrics)
    metrics["loss"] = _pair(loss, 1.0)
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
    inputs = _model_inputs(batch)
    gen_logits = model.apply({"params": params}, **inputs, masked_lm_positions=batch["masked_lm_positions"],
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
        "disc_loss": _pair(mask * bce, mask),
        "disc_accuracy": _pair(mask * (pred == y), mask),
        "disc_precision": _pair(mask * pred * y, mask * pred),
        "disc_recall": _pair(mask * pred * y, mask * y),
        "disc_replaced_fraction": _pair(mask * y, mask),
        "loss": _pair(loss, 1.0),
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


def sum_metrics(a: Metrics, b: Metrics) -> Metrics:
  return jax.tree.map(jnp.add, a, b)
