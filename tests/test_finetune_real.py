"""A real pretrained BERT (all-MiniLM-L6-v2) fine-tuned on SST-2: ours next to HF PyTorch (slow).

The smaller version of README's side-by-side (python -m bert_jax.benchmarks.finetune_vs_hf):
800 train examples, 2 epochs, one seed, the full dev set.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, shared_path


@pytest.mark.proof
def test_minilm_sst2_fine_tuning_matches_hf_pytorch(tmp_path):
  weights = shared_path("weights", "all-MiniLM-L6-v2")
  data = shared_path("data", "glue", "SST-2")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user runs it
  r = subprocess.run([sys.executable, "-m", "bert_jax.benchmarks.finetune_vs_hf", f"--hf_dir={weights}",
                      f"--data_dir={data}", f"--workdir={tmp_path}", "--train_examples=800", "--epochs=2",
                      "--seeds=1", "--methods=full"], cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT)),
                     capture_output=True, text=True, timeout=1500)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  rows = {row["method"]: row for row in json.load(open(tmp_path / "summary.json"))["rows"]}
  ours, hf = rows["full"]["median"], rows["hf_pytorch_full"]["median"]
  print(f"dev accuracy: ours {ours:.4f}, HF {hf:.4f}")
  # Both learn far above the majority class (50.9% of dev), and within 3 points of each other
  # (one seed: dropout masks and the head's init differ between the frameworks).
  assert ours > 0.72 and hf > 0.72, (ours, hf)
  assert abs(ours - hf) < 0.03, (ours, hf)
