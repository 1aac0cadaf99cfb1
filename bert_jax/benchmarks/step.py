r"""Train-step throughput and MFU of a config: the step the loop runs, on synthetic batches.

  python -m bert_jax.benchmarks.step --config=configs/bert.py:base --config.train.batch_size=32
  python -m bert_jax.benchmarks.step --config=configs/bert.py:mini --config.train.batch_size=32 --peers
  python -m bert_jax.benchmarks.step --config=configs/electra.py:base --config.model.dtype=bfloat16 \
      --config.data.max_seq_length=512 --config.model.attention_impl=cudnn
  python -m bert_jax.benchmarks.step --config=configs/bert.py:large --config.model.scan_layers=True

The step is bert_jax.train's own (state.setup + steps.compile_steps: the same jit, shardings,
optimizer and objective as a real run), fed one fixed synthetic batch (bert_jax.data.synthetic for
pretraining; a zero batch for fine-tuning tasks), so the figure is the device step without input.

Printed: compile time (setup, init and the first step), step time (mean over --steps after
--warmup), tokens/s, model FLOPs per step (bert_jax.flops: matmuls only, train = 3x forward),
achieved TFLOP/s and MFU against the
chip's peak (bert_jax.flops.PEAK_TFLOPS_BF16), or on a CPU against the fp32 GEMM rate measured here
(all of this host's cores are one "chip", also with XLA's fake CPU devices).

--peers adds HF transformers on the same model size, batch, length, dtype and optimizer (AdamW,
same lr / eps / weight decay), in the same run, and prints bert_jax's tokens/s over theirs:
  * PyTorch BertForMaskedLM (this environment's torch + transformers);
  * FlaxBertForMaskedLM, when --flax_python names a Python whose environment has transformers
    4.57.x (the last release with Flax models) + jax + flax + optax; it runs
    bert_jax/benchmarks/hf_flax_peer.py there. Create one with
      python -m venv .venv-hf-flax && .venv-hf-flax/bin/pip install "transformers==4.57.1" \
          "jax==<this jax version>" flax optax
  HF's MLM heads decode all B x L positions (labels -100 where unmasked); bert_jax decodes only the
  B x P prediction slots: that difference is part of what the ratio measures. Peers are BERT only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import jax
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import configs
from bert_jax import flops
from bert_jax import state as state_lib
from bert_jax import steps as steps_lib
from bert_jax.data import synthetic
from bert_jax.tasks import registry

FLAX_PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_flax_peer.py")


def synthetic_batch(config, task) -> dict[str, np.ndarray]:
  """One global host batch of the task's features (synthetic pretraining rows, else zeros)."""
  bs = config.train.batch_size
  if "masked_lm_positions" in task.features:
    return batch_lib.select(task.features, synthetic.batch(config, 0, bs, config.seed))
  return batch_lib.dummy(task.features, bs)


def measure(config, steps: int = 10, warmup: int = 2, devices=None) -> dict[str, Any]:
  """Compiles and times the loop's train step; returns the figures (see the module doc)."""
  t0 = time.perf_counter()
  s = state_lib.setup(config, registry.get_task(config), devices=devices)
  train_step, _, init = steps_lib.compile_steps(config, s)
  state = init(jax.random.PRNGKey(config.seed))
  batch = steps_lib.to_global(synthetic_batch(config, s.task), s)
  frozen = steps_lib.frozen_args(s)
  with steps_lib.mesh_context(s.mesh, s.rules):
    state, m = train_step(state, batch, *frozen)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
      state, m = train_step(state, batch, *frozen)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(steps):
      state, m = train_step(state, batch, *frozen)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t) / steps
  tokens = config.train.batch_size * config.data.max_seq_length
  step_flops = flops.train_step_flops(config, s.task)
  return {"step_seconds": step_s, "compile_seconds": compile_s, "tokens_per_step": tokens,
          "tokens_per_second": tokens / step_s, "model_flops_per_step": step_flops,
          "devices": len(s.mesh.devices.flat), "platform": s.mesh.devices.flat[0].platform,
          "loss": float(np.asarray(jax.device_get(m["loss"]))[0])}


def with_mfu(result: dict[str, Any]) -> dict[str, Any]:
  """Adds achieved TFLOP/s, the peak and its source, and MFU (CPU: the host is one chip)."""
  peak, source = flops.peak_flops()
  chips = 1 if result["platform"] == "cpu" else result["devices"]
  achieved = result["model_flops_per_step"] / result["step_seconds"]
  return dict(result, achieved_tflops=achieved / 1e12, peak_tflops_per_chip=(peak or float("nan")) / 1e12,
              peak_source=source, chips=chips, mfu=flops.mfu(result["model_flops_per_step"],
                                                             result["step_seconds"], chips, peak))


def peer_spec(config) -> dict[str, Any]:
  """What a peer needs to build the same model and step (plain JSON)."""
  m, o = config.model, config.optimizer
  hf_keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
             "type_vocab_size", "layer_norm_eps", "initializer_range")
  return {"hf_config": {k: m[k] for k in hf_keys}, "vocab_size": m.vocab_size,
          "batch_size": config.train.batch_size, "seq_len": config.data.max_seq_length,
          "max_predictions": config.data.max_predictions_per_seq, "dtype": m.dtype,
          "learning_rate": o.learning_rate, "eps": o.eps, "weight_decay": o.weight_decay,
          "b1": o.b1, "b2": o.b2, "seed": config.seed}


def peer_batch(spec: dict[str, Any]) -> dict[str, np.ndarray]:
  """Random ids and HF MLM labels (-100 except at max_predictions positions per row)."""
  rs = np.random.RandomState(spec["seed"])
  b, L, P = spec["batch_size"], spec["seq_len"], spec["max_predictions"]
  ids = rs.randint(5, spec["vocab_size"], (b, L)).astype(np.int64)
  labels = np.full((b, L), -100, np.int64)
  for r in range(b):
    pos = rs.choice(np.arange(1, L - 1), min(P, L - 2), replace=False)
    labels[r, pos] = ids[r, pos]
  return {"input_ids": ids, "attention_mask": np.ones((b, L), np.int64),
          "token_type_ids": np.zeros((b, L), np.int64), "labels": labels}


def torch_peer(spec: dict[str, Any], steps: int, warmup: int) -> dict[str, Any]:
  """HF BertForMaskedLM in PyTorch: forward + backward + AdamW per step (fp32, or bf16 autocast)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(spec["seed"])
  torch.set_num_threads(os.cpu_count() or 1)
  cfg = transformers.BertConfig(**spec["hf_config"])
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = transformers.BertForMaskedLM(cfg).to(device).train()
  opt = torch.optim.AdamW(model.parameters(), lr=spec["learning_rate"], betas=(spec["b1"], spec["b2"]),
                          eps=spec["eps"], weight_decay=spec["weight_decay"])
  batch = {k: torch.from_numpy(v).to(device) for k, v in peer_batch(spec).items()}
  cast = (torch.autocast(device, dtype=torch.bfloat16) if spec["dtype"] == "bfloat16"
          else contextlib.nullcontext())

  def step():
    with cast:
      loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  for _ in range(warmup):
    step()
  sync()
  t = time.perf_counter()
  for _ in range(steps):
    loss = step()
  sync()
  step_s = (time.perf_counter() - t) / steps
  return {"name": f"HF PyTorch BertForMaskedLM (torch {torch.__version__}, transformers "
                  f"{transformers.__version__}, {torch.get_num_threads()} threads)",
          "step_seconds": step_s, "tokens_per_second": spec["batch_size"] * spec["seq_len"] / step_s,
          "loss": float(loss.detach())}


FLAX_VENV_HELP = (
    "HF FlaxBertForMaskedLM needs transformers 4.57.x (Flax was removed in 5.x). Create its own "
    "environment and pass its interpreter:\n"
    "  python -m venv .venv-hf-flax\n"
    f"  .venv-hf-flax/bin/pip install \"transformers==4.57.1\" \"jax=={jax.__version__}\" flax optax\n"
    "  python -m bert_jax.benchmarks.step ... --peers --flax_python=.venv-hf-flax/bin/python")


def flax_peer(spec: dict[str, Any], steps: int, warmup: int, python: str) -> dict[str, Any]:
  """HF FlaxBertForMaskedLM in another interpreter (bert_jax/benchmarks/hf_flax_peer.py)."""
  if not os.path.exists(python):
    raise FileNotFoundError(f"--flax_python={python!r} does not exist.\n{FLAX_VENV_HELP}")
  import tempfile  # pylint: disable=g-import-not-at-top
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user of HF's scripts on one host has
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "batch.npz")
    np.savez(path, **peer_batch(spec))
    out = subprocess.run([python, FLAX_PEER, json.dumps(dict(spec, steps=steps, warmup=warmup, batch_npz=path))],
                         capture_output=True, text=True, env=env, check=False)
  lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
  if out.returncode or not lines:
    raise RuntimeError(f"The Flax peer failed (exit {out.returncode}):\n{out.stderr[-2000:]}\n{FLAX_VENV_HELP}")
  return json.loads(lines[-1])


def lines(result: dict[str, Any], config) -> list[str]:
  m = config.model
  out = [f"{m.family} {m.num_hidden_layers}x{m.hidden_size} {m.dtype}, batch {config.train.batch_size} x "
         f"{config.data.max_seq_length}, attention {m.get('attention_impl', 'explicit')}, remat "
         f"{m.get('remat_policy', '') or m.get('remat', False)}, scan_layers {m.get('scan_layers', False)}, "
         f"{result['devices']} {result['platform']} device(s)",
         f"  compile {result['compile_seconds']:.1f} s | step {result['step_seconds'] * 1e3:.1f} ms | "
         f"{result['tokens_per_second']:,.0f} tokens/s",
         f"  model FLOPs/step {result['model_flops_per_step'] / 1e12:.3f} TFLOP (matmuls, 3x forward) | "
         f"achieved {result['achieved_tflops']:.3f} TFLOP/s | MFU {result['mfu'] * 100:.1f}% "
         f"(peak: {result['peak_source']}; {result['chips']} chip(s))"]
  for p in result.get("peers", []):
    if "error" in p:
      out.append(f"  peer {p['name']}: {p['error']}")
    else:
      out.append(f"  peer {p['name']}: step {p['step_seconds'] * 1e3:.1f} ms | {p['tokens_per_second']:,.0f} "
                 f"tokens/s | bert_jax / peer = {result['tokens_per_second'] / p['tokens_per_second']:.2f}x")
  return out


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  config = f.config
  result = with_mfu(measure(config, f.steps, f.warmup))
  if f.peers:
    if config.model.family != "bert":
      raise SystemExit("--peers compares BERT only (HF BertForMaskedLM); use --config=configs/bert.py:<size>.")
    spec, peers = peer_spec(config), []
    peers.append(torch_peer(spec, f.steps, f.warmup))
    if f.flax_python:
      try:
        peers.append(flax_peer(spec, f.steps, f.warmup, f.flax_python))
      except (OSError, RuntimeError) as e:  # keep bert_jax's and PyTorch's figures
        peers.append({"name": "HF Flax FlaxBertForMaskedLM", "error": str(e)})
    else:
      peers.append({"name": "HF Flax FlaxBertForMaskedLM", "error": "skipped (no --flax_python).\n"
                    + FLAX_VENV_HELP})
    result["peers"] = peers
  print("\n".join(lines(result, config)), flush=True)
  if f.json:
    print(json.dumps(result))


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  configs.define_flag("config", "configs/<family>.py:<arg> or a packaged <family>.py:<arg>")
  flags.DEFINE_integer("steps", 10, "timed steps")
  flags.DEFINE_integer("warmup", 2, "untimed steps first (the first one compiles)")
  flags.DEFINE_bool("peers", False, "also time HF BertForMaskedLM (PyTorch; Flax with --flax_python)")
  flags.DEFINE_string("flax_python", "", "interpreter of an environment with transformers 4.57.x + flax")
  flags.DEFINE_bool("json", False, "also print the figures as one JSON line")
  flags.mark_flags_as_required(["config"])
  sys.exit(app.run(main))
