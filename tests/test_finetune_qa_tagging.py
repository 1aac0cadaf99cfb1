"""SQuAD and token classification through bert_jax.finetune.run (slow: each compiles a model).

Tiny random BERTs (test_finetune's HF directories and vocabulary) on data written here: a
CoNLL-format set whose tags follow the words (a 1-layer model learns it), and SQuAD JSON files
whose contexts need several windows. Checks: results.json with the task's metrics, the written
predictions scored with the official semantics give the reported figures, and the best
checkpoint exports to an HF *ForTokenClassification / *ForQuestionAnswering that transformers
loads with the same logits (1e-4).
"""

import json
import os

import jax
import numpy as np
import pytest

from bert_jax import finetune
from bert_jax import starts
from bert_jax.tasks import registry
from bert_jax.tasks import squad_eval
from test_finetune import FILLER, make_hf_dir
from train_testlib import load_config

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TAG_OF = {"good": "B-POS", "great": "I-POS", "bad": "B-NEG", "awful": "I-NEG"}


def write_conll(directory, n_train=120, n_dev=40, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  for name, n in (("train.txt", n_train), ("valid.txt", n_dev)):
    lines = ["-DOCSTART- O", ""]
    for _ in range(n):
      words = list(rng.choice(FILLER, size=int(rng.integers(3, 8))))
      at = int(rng.integers(0, len(words) + 1))
      words[at:at] = ["good", "great"] if rng.uniform() < 0.5 else ["bad"] + (["awful"] if rng.uniform() < .5 else [])
      tags = [TAG_OF.get(w, "O") for w in words]
      lines += [f"{w} {t}" for w, t in zip(words, tags)] + [""]
    with open(os.path.join(directory, name), "w") as f:
      f.write("\n".join(lines) + "\n")


def write_squad(directory, n_articles=6, seed=0):
  """Contexts of 20-30 filler words with 'good <answer>' inside; the question asks for it."""
  rng = np.random.default_rng(seed)
  data = []
  for a in range(n_articles):
    paragraphs = []
    for p in range(4):
      words = list(rng.choice(FILLER, size=int(rng.integers(20, 30))))
      at = int(rng.integers(0, len(words) - 1))
      words[at] = "good"
      context = " ".join(words)
      start = len(" ".join(words[:at + 1])) + 1
      answer = words[at + 1]
      paragraphs.append({"context": context, "qas": [{"id": f"q{a}_{p}", "question": "what is good ?",
                                                      "answers": [{"text": answer, "answer_start": start}]}]})
    data.append({"title": f"a{a}", "paragraphs": paragraphs})
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "train-v1.1.json"), "w") as f:
    json.dump({"version": "1.1", "data": data[:4]}, f)
  with open(os.path.join(directory, "dev-v1.1.json"), "w") as f:
    json.dump({"version": "1.1", "data": data[4:]}, f)
  return data[4:]


def tiny(config, hf, data_dir):
  config.init.hf_checkpoint = hf
  config.finetune.data_dir = data_dir
  config.train.batch_size = 16
  config.eval.batch_size = 16
  config.optimizer.learning_rate = 5e-3
  config.checkpoint.async_save = False
  config.log.every_steps = 1000
  return config


def torch_batch(b):
  return dict(input_ids=torch.tensor(b["input_ids"], dtype=torch.long),
              attention_mask=torch.tensor(b["input_mask"], dtype=torch.long),
              token_type_ids=torch.tensor(b["token_type_ids"], dtype=torch.long))


def test_token_classification_run_learns_and_exports(tmp_path):
  hf = make_hf_dir(tmp_path / "hf")
  write_conll(tmp_path / "conll")
  c = tiny(load_config("finetune", "conll"), hf, str(tmp_path / "conll"))
  c.data.max_seq_length = 16
  c.finetune.epochs = 6.0
  results = finetune.run(c, str(tmp_path / "run"))
  scores = results["seeds"][0]["eval"]["validation"]
  assert set(results["median"]["validation"]) == {"precision", "recall", "f1", "accuracy"}
  assert scores["f1"] > 0.9 and scores["accuracy"] > scores["majority_accuracy"] + 0.2
  # Export: transformers' logits equal ours on the eval rows.
  out = finetune.export(str(tmp_path / "run" / "seed_0"), str(tmp_path / "export"))
  config, params = starts.finetuned_params(str(tmp_path / "run" / "seed_0"))
  task = registry.get_task(config)
  batch = next(task.eval_batches("validation", 8))
  ours = np.asarray(jax.jit(task.logits)(params, batch))
  model = transformers.AutoModelForTokenClassification.from_pretrained(out, attn_implementation="eager").eval()
  assert model.config.id2label == dict(enumerate(task.labels))
  with torch.no_grad():
    theirs = model(**torch_batch(batch)).logits.numpy()
  mask = batch["input_mask"] > 0
  assert np.abs(ours[mask] - theirs[mask]).max() < 1e-4


def test_squad_run_scores_its_predictions_and_exports(tmp_path):
  hf = make_hf_dir(tmp_path / "hf", max_position_embeddings=40)
  dev = write_squad(tmp_path / "squad")
  c = tiny(load_config("finetune", "squad"), hf, str(tmp_path / "squad"))
  c.data.max_seq_length = 24  # contexts of 20-30 words need several windows
  c.finetune.squad.update(doc_stride=6, max_query_length=6, max_answer_length=4, n_best_size=5)
  c.finetune.epochs = 2.0
  results = finetune.run(c, str(tmp_path / "run"))
  scores = results["seeds"][0]["eval"]["validation"]
  assert results["train_examples"] == 16 and set(results["median"]["validation"]) == {"exact", "f1"}
  preds = json.loads((tmp_path / "run" / "seed_0" / "predictions" / "validation" / "predictions.json").read_text())
  assert len(preds) == 8
  official = squad_eval.evaluate(dev, preds, "v1.1")
  assert official["f1"] == pytest.approx(scores["f1"]) and official["exact_match"] == pytest.approx(scores["exact"])
  out = finetune.export(str(tmp_path / "run" / "seed_0"), str(tmp_path / "export"))
  config, params = starts.finetuned_params(str(tmp_path / "run" / "seed_0"))
  task = registry.get_task(config)
  batch = next(task.eval_batches("validation", 8))
  start, end = (np.asarray(x) for x in jax.jit(task.logits)(params, batch))
  model = transformers.AutoModelForQuestionAnswering.from_pretrained(out, attn_implementation="eager").eval()
  with torch.no_grad():
    ref = model(**torch_batch(batch))
  mask = batch["input_mask"] > 0
  assert np.abs(start[mask] - ref.start_logits.numpy()[mask]).max() < 1e-4
  assert np.abs(end[mask] - ref.end_logits.numpy()[mask]).max() < 1e-4
