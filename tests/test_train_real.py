"""Short pretraining runs on the built-in corpus: losses fall and accuracies beat the baselines."""

import shutil

import conftest  # noqa: F401
import jax
import pytest

from bert_jax import train
from train_testlib import load_config, DEFAULT_ARG


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("shared_tok")


def _config(family, steps):
  c = load_config(family, DEFAULT_ARG[family])
  c.mesh.update(preset="dp", data=2, fsdp=1, tensor=1)  # 2 of the 8 fake devices: less overhead
  c.train.num_steps = steps
  c.optimizer.warmup_steps = steps // 10
  c.checkpoint.every_steps = steps
  c.eval.every_steps = steps
  c.eval.num_batches = 10
  c.log.every_steps = steps // 4
  # No dropout: a 2-layer model learns context within a few hundred steps.
  c.model.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  return c


def _train(family, steps, tmp_path, tokenizer_dir):
  """Trains in tmp_path; all three families reuse one sentencepiece model (same runlocal settings)."""
  c = _config(family, steps)
  if (tokenizer_dir / "tokenizer").exists():
    shutil.copytree(tokenizer_dir / "tokenizer", tmp_path / "tokenizer")
  out = train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:2])
  if not (tokenizer_dir / "tokenizer").exists():
    shutil.copytree(tmp_path / "tokenizer", tokenizer_dir / "tokenizer")
  return out


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "albert", "electra"])
def test_tiny_pretraining_learns(family, tmp_path, tokenizer_dir):
  steps = 600  # as `make train`; ~3-4 min per family on 2 busy CPU cores
  out = _train(family, steps, tmp_path, tokenizer_dir)
  hist = [v for _, v in out["history"]]
  ev = out["eval"]
  assert out["status"] == "done" and out["checkpoint_steps"] == [steps]
  assert hist[-1]["loss"] < hist[0]["loss"] - 0.3, [h["loss"] for h in hist]
  acc = ev["gen_accuracy"] if family == "electra" else ev["mlm_accuracy"]
  ratio = 1.1 if family == "electra" else 1.3
  assert acc > ratio * ev["most_frequent_token_accuracy"], (acc, ev["most_frequent_token_accuracy"])
  if family == "electra":
    # With the recipe's generator the 2 x 128 discriminator stays at the all-real baseline for
    # thousands of steps (measured AUC 0.55-0.615 up to step 7000, see README "Not done yet"): its
    # samples can only be told from context, which its still-uniform attention does not see yet.
    # test_electra_discriminator_beats_all_real_baseline shows it learns on real text.
    assert ev["disc_accuracy"] >= 1 - ev["disc_replaced_fraction"] - 1e-3, ev
  else:
    sent = "nsp" if family == "bert" else "sop"
    assert f"{sent}_accuracy" in ev
  assert (tmp_path / "tb").exists()


@pytest.mark.slow
def test_electra_discriminator_beats_all_real_baseline(tmp_path, tokenizer_dir):
  """Real text, near-uniform replacements (sampling temperature 100, mostly rare tokens, so a
  token's identity tells much): labels, sampling and gradients of the whole ELECTRA step line up
  on real data. Measured at 300 steps: accuracy 0.88 vs all-real 0.86, AUC 0.89."""
  c = _config("electra", 300)
  c.objective.sampling_temperature = 100.0
  c.optimizer.learning_rate = 1e-3
  if (tokenizer_dir / "tokenizer").exists():
    shutil.copytree(tokenizer_dir / "tokenizer", tmp_path / "tokenizer")
  ev = train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:2])["eval"]
  baseline = 1 - ev["disc_replaced_fraction"]
  assert ev["disc_accuracy"] > baseline + 0.01, ev
  assert ev["disc_auc"] > 0.75, ev
