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


def _config(family, steps, arg=None):
  c = load_config(family, arg or DEFAULT_ARG[family])
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


def _train(c, tmp_path, tokenizer_dir):
  """Trains c in tmp_path; every run reuses one sentencepiece model (same runlocal settings)."""
  if (tokenizer_dir / "tokenizer").exists():
    shutil.copytree(tokenizer_dir / "tokenizer", tmp_path / "tokenizer")
  out = train.train_and_evaluate(c, str(tmp_path), devices=jax.devices()[:2])
  if not (tokenizer_dir / "tokenizer").exists():
    shutil.copytree(tmp_path / "tokenizer", tokenizer_dir / "tokenizer")
  return out


# BERT in CI; ALBERT and ELECTRA (2.5 minutes each) are proofs that do not fit CI (README has their last result).
@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", pytest.param("albert", marks=pytest.mark.proof),
                                    pytest.param("electra", marks=pytest.mark.proof)])
def test_tiny_pretraining_learns(family, tmp_path, tokenizer_dir):
  steps = 600  # as `make train`; ~3-4 min per family on 2 busy CPU cores
  out = _train(_config(family, steps), tmp_path, tokenizer_dir)
  hist = [v for _, v in out["history"]]
  ev = out["eval"]
  assert out["status"] == "done" and out["checkpoint_steps"] == [steps]
  assert hist[-1]["loss"] < hist[0]["loss"] - 0.3, [h["loss"] for h in hist]
  acc = ev["gen_accuracy"] if family == "electra" else ev["mlm_accuracy"]
  ratio = 1.1 if family == "electra" else 1.3
  assert acc > ratio * ev["most_frequent_token_accuracy"], (acc, ev["most_frequent_token_accuracy"])
  if family == "electra":
    # At 600 steps the discriminator is still on its plateau at the all-real prior (README,
    # "ELECTRA at runlocal scale"); test_electra_recipe_discriminator_beats_all_real_baseline
    # trains past it.
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
  ev = _train(c, tmp_path, tokenizer_dir)["eval"]
  baseline = 1 - ev["disc_replaced_fraction"]
  assert ev["disc_accuracy"] > baseline + 0.01, ev
  assert ev["disc_auc"] > 0.75, ev


@pytest.mark.proof  # about 15 minutes: too long for CI's budget (README has its result)
def test_electra_recipe_discriminator_beats_all_real_baseline(tmp_path, tokenizer_dir):
  """The whole recipe (replacements sampled from the jointly trained generator) at the tiny size
  with ELECTRA-large's 25% masking: past its plateau the discriminator's eval accuracy beats the
  all-real baseline. Measured (one device, 6000-step schedule): AUC 0.63, 0.67, 0.70 and
  accuracy +0.002, +0.002, +0.006 over the baseline at steps 2000, 3000, 4000. About 15 minutes."""
  c = _config("electra", 4000, arg="large,runlocal")
  assert c.data.mask_rate == 0.25 and c.model.generator_hidden_size == 0.25
  c.eval.num_batches = 40
  ev = _train(c, tmp_path, tokenizer_dir)["eval"]
  baseline = 1 - ev["disc_replaced_fraction"]
  assert ev["gen_accuracy"] > 2 * ev["most_frequent_token_accuracy"], ev
  assert ev["disc_accuracy"] > baseline + 0.002, ev
  assert ev["disc_auc"] > 0.65, ev
