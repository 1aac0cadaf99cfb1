"""Optimizers against numpy re-implementations of the reference update rules; schedules; masks."""

import conftest  # noqa: F401
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bert_jax import optim
from train_testlib import tiny_config


def _opt(**kw):
  c = tiny_config().optimizer
  c.update(warmup_steps=2, learning_rate=0.1, weight_decay=0.01, eps=1e-6, clip_grad_norm=0.0,
           schedule="linear", end_learning_rate=0.0, power=1.0)
  c.update(**kw)
  return c


PARAMS = {"dense": {"kernel": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32), "bias": np.array([0.1, -0.2], np.float32)},
          "LayerNorm": {"scale": np.ones(2, np.float32), "bias": np.zeros(2, np.float32)}}


def _grads(t):
  rs = np.random.RandomState(t)
  return jax.tree.map(lambda p: rs.randn(*p.shape).astype(np.float32), PARAMS)


def _lr(t, lr=0.1, warmup=2, total=10):
  return lr * t / warmup if t < warmup else lr * (1 - t / total)


def _reference(name, steps=4, total=10):
  """The google-research/bert AdamWeightDecay and ALBERT LAMB updates in numpy."""
  params = jax.tree.map(lambda x: x.astype(np.float64), PARAMS)
  m = jax.tree.map(np.zeros_like, params)
  v = jax.tree.map(np.zeros_like, params)
  decay = optim.decay_mask(PARAMS)
  for t in range(steps):
    g = _grads(t)
    def upd(p, gi, mi, vi, d):
      mi[...] = 0.9 * mi + 0.1 * gi
      vi[...] = 0.999 * vi + 0.001 * gi * gi
      u = mi / (np.sqrt(vi) + 1e-6)
      if d:
        u = u + 0.01 * p
      ratio = 1.0
      if name == "lamb" and d:
        wn, un = np.linalg.norm(p), np.linalg.norm(u)
        ratio = wn / un if wn > 0 and un > 0 else 1.0
      return p - _lr(t, total=total) * ratio * u
    params = jax.tree.map(upd, params, g, m, v, decay)
  return params


@pytest.mark.parametrize("name", ["bert_adamw", "lamb"])
def test_matches_reference_update_rule(name):
  tx, _ = optim.build(_opt(name=name), num_steps=10)
  params = PARAMS
  state = tx.init(params)
  for t in range(4):
    updates, state = tx.update(_grads(t), state, params)
    params = optax.apply_updates(params, updates)
  ref = _reference(name)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_adamw_is_optax_adamw_with_mask():
  tx, _ = optim.build(_opt(name="adamw"), num_steps=10)
  ref = optax.adamw(optim.schedule(_opt(), 10), b1=0.9, b2=0.999,
                    eps=1e-6, weight_decay=0.01, mask=optim.decay_mask)
  s1, s2 = tx.init(PARAMS), ref.init(PARAMS)
  p1 = p2 = PARAMS
  for t in range(3):
    u1, s1 = tx.update(_grads(t), s1, p1)
    u2, s2 = ref.update(_grads(t), s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_decay_mask_excludes_bias_and_layernorm():
  mask = optim.decay_mask(PARAMS)
  assert mask == {"dense": {"kernel": True, "bias": False}, "LayerNorm": {"scale": False, "bias": False}}


def test_schedules():
  lin = optim.schedule(_opt(warmup_steps=10, learning_rate=1.0), 100)
  np.testing.assert_allclose([float(lin(t)) for t in (0, 5, 10, 50, 100)], [0.0, 0.5, 0.9, 0.5, 0.0], atol=1e-6)
  poly = optim.schedule(_opt(warmup_steps=0, learning_rate=1.0, schedule="polynomial", power=2.0,
                             end_learning_rate=0.1), 100)
  np.testing.assert_allclose(float(poly(50)), 0.9 * 0.25 + 0.1, rtol=1e-6)
  const = optim.schedule(_opt(warmup_steps=4, learning_rate=0.3, schedule="constant"), 100)
  np.testing.assert_allclose([float(const(t)) for t in (2, 4, 99)], [0.15, 0.3, 0.3], rtol=1e-6)


def test_clipping_by_global_norm():
  tx, _ = optim.build(_opt(name="bert_adamw", clip_grad_norm=1.0, weight_decay=0.0, warmup_steps=0), 10)
  big = jax.tree.map(lambda p: 100.0 * np.ones_like(p), PARAMS)
  state = tx.init(PARAMS)
  _, state = tx.update(big, state, PARAMS)
  mu = state[1].mu  # (clip state, adam state, ...): first moment = 0.1 * clipped grads
  norm = float(optax.global_norm(jax.tree.map(lambda m: m / 0.1, mu)))
  np.testing.assert_allclose(norm, 1.0, rtol=1e-5)


@pytest.mark.parametrize("key,value,match", [("name", "sgd", "config.optimizer.name"),
                                             ("schedule", "cosine", "config.optimizer.schedule"),
                                             ("warmup_steps", 50, "warmup_steps")])
def test_bad_optimizer_config(key, value, match):
  with pytest.raises(ValueError, match=match):
    optim.build(_opt(**{key: value}), num_steps=10)
