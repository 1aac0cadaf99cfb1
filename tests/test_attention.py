"""config.model.attention_impl (jax.nn.dot_product_attention) and config.model.remat_policy."""

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import models
from bert_jax.configs import common


def _apply(m, params, b, **kw):
  return m.apply({"params": params}, **models.model_inputs(m, b), **kw)


def _model(**overrides):
  c = common.model_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          vocab_size=64, max_position_embeddings=16, **overrides)
  return c, models.build(c)


def _batch():
  """Padding in row 0, two packed segments in row 1."""
  b = models.dummy_batch(None, 2, 16, 4)
  b["input_ids"] = np.random.RandomState(0).randint(5, 64, (2, 16)).astype(np.int32)
  b["input_mask"][0, 10:] = 0
  b["segment_ids"][0, 10:] = 0
  b["segment_ids"][1, 7:] = 2
  b["position_ids"][1, 7:] = np.arange(9)
  return b


def test_xla_attention_matches_explicit_with_padding_and_packing():
  b = _batch()
  out = {}
  for impl in ("explicit", "xla"):
    _, m = _model(attention_impl=impl)
    params = models.init_params(m, jax.random.PRNGKey(0), b)
    out[impl] = _apply(m, params, b)
  for k in ("sequence_output", "mlm_logits"):
    np.testing.assert_allclose(out["xla"][k], out["explicit"][k], atol=1e-5, rtol=1e-5)
  # Packing: segment 1 of row 1 does not see segment 2 (changing it leaves segment 1 unchanged).
  b2 = dict(b, input_ids=b["input_ids"].copy())
  b2["input_ids"][1, 8:] = 7
  again = _apply(m, params, b2)
  np.testing.assert_allclose(again["sequence_output"][1, :7], out["xla"]["sequence_output"][1, :7], atol=1e-5)


def test_attention_dropout_in_training_takes_the_explicit_path():
  """Same rng -> same output whatever attention_impl: attention dropout needs the explicit path."""
  b = _batch()
  outs = []
  for impl in ("explicit", "xla"):
    _, m = _model(attention_impl=impl, attention_probs_dropout_prob=0.3)
    params = models.init_params(m, jax.random.PRNGKey(0), b)
    outs.append(_apply(m, params, b, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})["sequence_output"])
  np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.slow  # both policies (10-minute budget of the fast suite; test_models checks remat's outputs)
@pytest.mark.parametrize("policy", ["full", "dots_saveable"])
def test_remat_policies_give_the_same_gradients(policy):
  b = _batch()
  grads = []
  for kw in ({}, {"remat_policy": policy}):
    _, m = _model(**kw)
    params = models.init_params(m, jax.random.PRNGKey(0), b)
    loss = lambda p: jnp.sum(m.apply({"params": p}, **models.model_inputs(m, b))["mlm_logits"] ** 2)  # noqa: E731
    grads.append(jax.grad(loss)(params))
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-4), *grads)


def test_bad_values_name_the_key():
  with pytest.raises(ValueError, match="attention_impl.*bfloat16"):
    models.validate(common.model_config(attention_impl="cudnn"))
  with pytest.raises(ValueError, match="config.model.attention_impl"):
    models.validate(common.model_config(attention_impl="flash"))
  with pytest.raises(ValueError, match="config.model.remat_policy"):
    models.validate(common.model_config(remat_policy="some"))
  assert models.validate(common.model_config(remat=True)).remat_mode == "full"
  assert models.validate(common.model_config(remat=True, remat_policy="dots_saveable")).remat_mode == "dots_saveable"
