"""Model FLOPs of an encoder train step, chip peaks, and MFU.

Counting (the PaLM / MaxText "model FLOPs" convention): every matrix multiply counts
2 * m * n * k; elementwise work (LayerNorm, softmax, GELU, dropout, the optimizer update) and
embedding lookups count 0, and rematerialised recomputation counts 0 (model FLOPs, not hardware
FLOPs). A train step is 3x the forward pass: the backward pass multiplies twice per forward
matmul (the gradient w.r.t. the activations and w.r.t. the weights). Encoder-specific:

  * attention is bidirectional: QK^T and PV each 2 * B * L^2 * H per layer (no causal halving);
  * the MLM head (transform H -> E and the tied decoder E -> V) runs only on the B * P gathered
    prediction slots, never on B * L positions;
  * ELECTRA counts its generator (own width, depth and MLM head) and the discriminator with its
    per-token head; the sampled replacements have no gradient, but the generator is trained, so
    both towers count 3x;
  * ALBERT's shared layers count once per application (num_hidden_layers * inner_group_num),
    plus the E -> H projection; ELECTRA's projection counts when E != H of a tower;
  * fine-tuning heads: pooler + classifier (sequence), 2 logits per token (QA), num_labels per
    token (tagging).

`bert_jax.benchmarks.step` prints these; tests/test_flops.py checks them against XLA's own count
(`compiled.cost_analysis()["flops"]`) of the real train step for every family.
"""

from __future__ import annotations

import time
from typing import Any

from bert_jax import models
from bert_jax.models import config as config_lib

# Dense bf16 peak per chip (TFLOP/s), public vendor figures. Keys are matched in order against
# jax's `device.device_kind` (lower case), so the more specific names come first.
PEAK_TFLOPS_BF16 = (
    ("tpu v6 lite", 918.0), ("tpu v6e", 918.0),
    ("tpu v5p", 459.0),
    ("tpu v5 lite", 197.0), ("tpu v5e", 197.0),
    ("tpu v5", 459.0),  # a v5p device names itself "TPU v5" (after the v5 lite entries, which it would match)
    ("tpu v4", 275.0),
    ("h200", 989.0), ("h100", 989.0),   # SXM, dense (no sparsity)
    ("a100", 312.0),
)


def encoder_forward(cfg: config_lib.ModelConfig, tokens: int, seq_len: int,
                    emb_size: int | None = None) -> float:
  """Forward FLOPs of the layer stack (and the E -> H projection) over `tokens` = B * L."""
  h, inter = cfg.hidden_size, cfg.intermediate_size
  layers = cfg.num_hidden_layers * cfg.inner_group_num   # ALBERT: per application
  per_token = 2 * (4 * h * h + 2 * h * inter)             # QKV + attention output + FFN
  attention = 2 * 2 * seq_len * h                         # QK^T and PV, bidirectional
  out = layers * tokens * (per_token + attention)
  e = cfg.emb_size if emb_size is None else emb_size
  if cfg.family == "albert" or e != h:
    out += 2 * tokens * e * h
  return float(out)


def mlm_head_forward(cfg: config_lib.ModelConfig, predictions: int) -> float:
  """Transform H -> E and the tied decoder E -> V on `predictions` = B * P slots."""
  return float(2 * predictions * cfg.emb_size * (cfg.hidden_size + cfg.vocab_size))


def forward_flops(model_config: Any, batch_size: int, seq_len: int, max_predictions: int = 0,
                  head: str = "mlm", num_labels: int = 2) -> float:
  """Forward-pass model FLOPs of one batch.

  head: "mlm" (pretraining: MLM on P slots, + NSP/SOP when the model has a pooler; ELECTRA:
  generator + discriminator), "classify" (pooler or ELECTRA's classification head),
  "qa" (start/end per token), "tag" (num_labels per token).
  """
  cfg = config_lib.validate(model_config)
  b, L = batch_size, seq_len
  t = b * L
  h = cfg.hidden_size
  if head == "mlm":
    if cfg.family == "electra":
      gen = config_lib.generator_config(cfg)
      out = encoder_forward(gen, t, L) + mlm_head_forward(gen, b * max_predictions)
      out += encoder_forward(cfg, t, L) + 2 * t * (h * h + h)   # discriminator + its head
      return float(out)
    out = encoder_forward(cfg, t, L) + mlm_head_forward(cfg, b * max_predictions)
    if cfg.use_pooler:
      out += 2 * b * (h * h + 2 * h)                             # pooler + NSP/SOP
    return float(out)
  out = encoder_forward(cfg, t, L)
  if head == "classify":
    return float(out + 2 * b * (h * h + h * num_labels))       # pooler / ELECTRA pre_classifier
  if head == "qa":
    return float(out + 2 * t * h * 2)
  if head == "tag":
    return float(out + 2 * t * h * num_labels)
  raise ValueError(f"Unknown head {head!r}; one of mlm, classify, qa, tag.")


def task_head(task) -> tuple[str, int]:
  """(head, num_labels) of a bert_jax.tasks.base.Task, from its model class."""
  model = task.model
  if isinstance(model, models.ForSequenceClassification):
    return "classify", model.num_labels
  if isinstance(model, models.ForQuestionAnswering):
    return "qa", 2
  if isinstance(model, models.ForTokenClassification):
    return "tag", model.num_labels
  return "mlm", 0


def train_step_flops(config, task=None) -> float:
  """Model FLOPs of one train step of `config` (the whole global batch): 3x the forward pass.

  `task` (bert_jax.tasks.base.Task) picks the head; default: pretraining ("mlm")."""
  head, labels = task_head(task) if task is not None else ("mlm", 0)
  L = config.data.max_seq_length
  P = config.data.get("max_predictions_per_seq", 0) if head == "mlm" else 0
  return 3.0 * forward_flops(config.model, config.train.batch_size, L, P, head, labels)


def chip_peak_flops(device=None) -> tuple[float | None, str]:
  """(peak FLOP/s per chip, where it comes from) for a known accelerator; (None, why) otherwise."""
  import jax  # pylint: disable=g-import-not-at-top
  device = device or jax.devices()[0]
  kind = getattr(device, "device_kind", "").lower()
  for key, tflops in PEAK_TFLOPS_BF16:
    if key in kind:
      return tflops * 1e12, f"{device.device_kind}: {tflops:.0f} TFLOP/s bf16 dense (vendor figure)"
  return None, f"{device.device_kind or device.platform}: no table entry"


def measure_gemm_flops(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
  """FLOP/s of this process's default device on an n x n x n matmul (best of `repeats`): the
  peak MFU is taken against on a CPU (fp32 GEMM with all the cores XLA uses)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best


def peak_flops(measure_cpu: bool = True) -> tuple[float | None, str]:
  """Peak FLOP/s per device: the table for known chips, a measured fp32 GEMM on a CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  peak, source = chip_peak_flops()
  if peak is None and jax.devices()[0].platform == "cpu" and measure_cpu:
    peak = measure_gemm_flops()
    source = f"cpu: measured fp32 GEMM (2048^3) {peak / 1e9:.1f} GFLOP/s"
  return peak, source


def mfu(step_flops: float, step_seconds: float, num_devices: int, peak_per_device: float | None) -> float:
  """Model FLOPs utilisation: achieved model FLOP/s over the devices' peak (nan without a peak)."""
  if not peak_per_device or step_seconds <= 0:
    return float("nan")
  return step_flops / step_seconds / (num_devices * peak_per_device)
