"""Loss normalisation, ELECTRA replaced-token labels, Gumbel sampling, stop-gradient, AUC."""

import conftest  # noqa: F401
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.data import synthetic
from bert_jax import models
from bert_jax.tasks import base
from bert_jax.tasks import pretraining
from bert_jax.tasks import registry
from train_testlib import tiny_config


def test_mlm_loss_normalisation_matches_numpy():
  rs = np.random.RandomState(0)
  logits = rs.randn(3, 4, 7).astype(np.float32)
  ids = rs.randint(0, 7, (3, 4)).astype(np.int32)
  w = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], np.float32)
  loss, m = pretraining.mlm_loss(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(w))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  xent = -np.take_along_axis(logp, ids[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(loss), (w * xent).sum() / (w.sum() + 1e-5), rtol=1e-6)
  acc = ((logits.argmax(-1) == ids) * w).sum() / w.sum()
  np.testing.assert_allclose(base.reduce_metrics(m)["mlm_accuracy"], acc, rtol=1e-6)


def test_electra_fake_inputs_labels():
  batch = {
      "input_ids": jnp.array([[1, 3, 7, 3, 2, 0], [1, 3, 9, 2, 0, 0]], jnp.int32),  # 3 = [MASK]
      "masked_lm_positions": jnp.array([[1, 3, 0], [1, 0, 0]], jnp.int32),
      "masked_lm_ids": jnp.array([[5, 6, 0], [8, 0, 0]], jnp.int32),
      "masked_lm_weights": jnp.array([[1, 1, 0], [1, 0, 0]], jnp.float32),
  }
  sampled = jnp.array([[5, 4, 11], [12, 13, 14]], jnp.int32)
  fake, labels = pretraining.electra_fake_inputs(batch, sampled)
  # Row 0: position 1 sampled the original (5): real; position 3 got 4 instead of 6: replaced.
  # Padding predictions (weight 0, position 0) never overwrite [CLS].
  np.testing.assert_array_equal(fake, [[1, 5, 7, 4, 2, 0], [1, 12, 9, 2, 0, 0]])
  np.testing.assert_array_equal(labels, [[0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]])


def test_gumbel_sampling_follows_softmax():
  logits = jnp.log(jnp.array([0.7, 0.2, 0.1]))[None].repeat(20000, 0)
  s = pretraining.gumbel_sample(jax.random.PRNGKey(0), logits, 1.0)
  freq = np.bincount(np.asarray(s), minlength=3) / 20000
  np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.015)


def test_histogram_auc_matches_rank_auc():
  rs = np.random.RandomState(0)
  pos, neg = rs.beta(4, 2, 2000), rs.beta(2, 4, 3000)
  exact = (pos[:, None] > neg[None]).mean()
  bins = pretraining.AUC_BINS
  h = lambda x: np.bincount(np.minimum((x * bins).astype(int), bins - 1), minlength=bins)
  np.testing.assert_allclose(base.histogram_auc(h(pos), h(neg)), exact, atol=0.01)


def test_electra_generator_gets_no_gradient_from_discriminator():
  """The Gumbel sample is stop-gradient: with gen_weight 0 the generator tower's grads vanish,
  while the shared embeddings (used by the discriminator) still get gradient."""
  config = tiny_config("electra")
  config.objective.gen_weight = 0.0
  model = models.build(config.model)
  batch = {k: jnp.asarray(v) for k, v in synthetic.batch(config, 0, 4, 0).items()}
  params = jax.jit(lambda r: models.init_params(model, r, batch))(jax.random.PRNGKey(0))
  loss_fn = pretraining.build(config, model)
  grads, metrics = jax.jit(jax.grad(lambda p: loss_fn(p, batch, jax.random.PRNGKey(1)), has_aux=True))(params)
  gen_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["generator_encoder"]))
  gen_norm += sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["generator_mlm"]))
  assert gen_norm == 0.0
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["embeddings"])) > 0
  vals = base.reduce_metrics(metrics)
  assert 0 < vals["disc_replaced_fraction"] < 0.3  # some, not all, tokens replaced
  for k in ("gen_loss", "gen_accuracy", "disc_loss", "disc_accuracy", "disc_precision", "disc_recall"):
    assert k in vals


def test_mlm_with_sentence_loss_adds_both():
  config = tiny_config("albert")  # MLM + SOP
  model = models.build(config.model)
  batch = {k: jnp.asarray(v) for k, v in synthetic.batch(config, 0, 4, 0).items()}
  params = jax.jit(lambda r: models.init_params(model, r, batch))(jax.random.PRNGKey(0))
  loss_fn = pretraining.build(config, model)
  loss, metrics = jax.jit(lambda p, b: loss_fn(p, b, None, deterministic=True))(params, batch)
  vals = base.reduce_metrics(metrics)
  np.testing.assert_allclose(float(loss), vals["mlm_loss"] + vals["sop_loss"], rtol=1e-3)


@pytest.mark.parametrize("update,match", [(dict(name="clm"), "config.objective.name"),
                                          (dict(sentence_loss="itm"), "sentence_loss")])
def test_bad_objective_config(update, match):
  config = tiny_config("bert")
  config.objective.update(update)
  with pytest.raises(ValueError, match=match):
    pretraining.validate(config.objective, config.model)
    registry.task_class(config)  # an unknown objective name is refused here
