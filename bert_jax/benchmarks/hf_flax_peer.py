"""HF FlaxBertForMaskedLM train-step timing, run in ANOTHER interpreter by bert_jax.benchmarks.step.

Needs only jax, flax, optax, numpy and transformers 4.57.x (the last release with Flax models), so
it runs in its own virtual environment without bert_jax installed:

  <venv>/bin/python bert_jax/benchmarks/hf_flax_peer.py '<json spec>'

The spec is bert_jax.benchmarks.step.peer_spec(config) + steps/warmup + batch_npz (the batch,
written by step.peer_batch). The step follows HF's
run_mlm_flax.py: dropout on, cross-entropy over the labelled positions, optax.adamw. Prints one
JSON line with step_seconds and tokens_per_second.
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import transformers


def main(spec):
  cfg = transformers.BertConfig(**spec["hf_config"])
  dtype = jnp.bfloat16 if spec["dtype"] == "bfloat16" else jnp.float32
  model = transformers.FlaxBertForMaskedLM(cfg, seed=spec["seed"], dtype=dtype)
  tx = optax.adamw(spec["learning_rate"], b1=spec["b1"], b2=spec["b2"], eps=spec["eps"],
                   weight_decay=spec["weight_decay"])
  b, L = spec["batch_size"], spec["seq_len"]
  with np.load(spec["batch_npz"]) as f:  # the PyTorch peer's batch (step.peer_batch)
    arrays = {k: f[k].astype(np.int32) for k in f.files}
  labels = arrays.pop("labels")
  batch = arrays

  @jax.jit
  def step(params, opt_state, rng):
    rng, dropout = jax.random.split(rng)

    def loss_fn(p):
      logits = model(**batch, params=p, dropout_rng=dropout, train=True)[0]
      w = (labels >= 0).astype(jnp.float32)
      xent = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), np.maximum(labels, 0))
      return jnp.sum(xent * w) / jnp.sum(w)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, rng, loss

  params, rng = model.params, jax.random.PRNGKey(spec["seed"])
  opt_state = tx.init(params)
  for _ in range(max(spec["warmup"], 1)):
    params, opt_state, rng, loss = step(params, opt_state, rng)
  jax.block_until_ready(loss)
  t = time.perf_counter()
  for _ in range(spec["steps"]):
    params, opt_state, rng, loss = step(params, opt_state, rng)
  jax.block_until_ready(loss)
  step_s = (time.perf_counter() - t) / spec["steps"]
  print(json.dumps({"name": f"HF Flax FlaxBertForMaskedLM (transformers {transformers.__version__}, jax "
                            f"{jax.__version__})", "step_seconds": step_s,
                    "tokens_per_second": b * L / step_s, "loss": float(loss)}))


if __name__ == "__main__":
  main(json.loads(sys.argv[1]))
