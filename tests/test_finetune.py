"""Fine-tuning (bert_jax.finetune) through the train loop's task contract.

Tiny random BERTs saved as HF directories with a small vocab.txt are the starting points;
the data are GLUE-format .tsv files written here: an SST-2-like task whose label is decided by
a keyword (a 1-layer model learns it in a few dozen steps) and an STS-B-like regression.
Checks: sharded step == single-device step (full and LoRA), PEFT freezes exactly the
backbone, run() end to end with seeds / medians / test predictions / resume, HF export of the
best checkpoint, regression loss and metrics, early validation errors, layer-wise lr decay,
early stop. Every compile costs 10-20 s on a busy 2-core CPU: the fast set compiles one run
(early stop, LoRA); the tests marked slow compile the rest.
"""

import contextlib
import dataclasses
import io
import json
import os
import re

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import numpy as np
import pytest
from conftest import shared_path

from bert_jax import checkpointing
from bert_jax import finetune
from bert_jax import models
from bert_jax import optim
from bert_jax import starts
from bert_jax import state as state_lib
from bert_jax import steps as steps_lib
from bert_jax import train
from bert_jax.tasks import classification
from bert_jax.tasks import finetuning
from bert_jax.tasks import registry
from train_testlib import load_config, tree_max_diff

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = ("the movie was a film plot actor story and it this really quite very with some of to "
          "in scene music ending cast").split()
KEYWORDS = ("bad", "good")  # label 0 / 1 of the SST-2-like task
VOCAB = SPECIALS + FILLER + list(KEYWORDS) + ["great", "awful", "fine"]
SEQ = 16
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=32)


# ---------------------------------------------------------------------------------------------
# Starting points and data.
# ---------------------------------------------------------------------------------------------
def write_vocab(directory, words=VOCAB):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(words) + "\n")


def make_hf_dir(directory, *, vocab_size=len(VOCAB), num_labels=0, seed=0, words=VOCAB, **kw):
  """A random tiny HF BertModel (num_labels > 0: BertForSequenceClassification) + vocab.txt.
  Init std 0.1 (not 0.02): the keyword task's initial plateau is shorter at width 32."""
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  torch.manual_seed(seed)
  cfg = transformers.BertConfig(vocab_size=vocab_size, **{**TINY, "initializer_range": 0.1, **kw})
  if num_labels:
    cfg.num_labels = num_labels
    model = transformers.BertForSequenceClassification(cfg)
  else:
    model = transformers.BertModel(cfg)
  model.save_pretrained(str(directory))
  write_vocab(directory, words)
  return str(directory)


def keyword_sentence(rng, label):
  words = list(rng.choice(FILLER, size=int(rng.integers(3, 9))))
  words.insert(int(rng.integers(0, len(words) + 1)), KEYWORDS[label])
  return " ".join(words)


def write_sst2(directory, n_train=96, n_dev=40, n_test=23, seed=0, bad_label_line=None):
  """SST-2 layout: train/dev `sentence<TAB>label` with a header, test `index<TAB>sentence`.
  Dev is balanced (majority baseline 0.5). Returns the test labels (decided by the keyword)."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
    labels = rng.permutation(np.arange(n) % 2)
    rows = [f"{keyword_sentence(rng, y)}\t{y}" for y in labels]
    if name == "train.tsv" and bad_label_line is not None:
      rows[bad_label_line - 2] = rows[bad_label_line - 2].split("\t")[0] + "\t2"
    with open(os.path.join(directory, name), "w") as f:
      f.write("sentence\tlabel\n" + "\n".join(rows) + "\n")
  test_labels = rng.integers(0, 2, n_test)
  with open(os.path.join(directory, "test.tsv"), "w") as f:
    f.write("index\tsentence\n" + "".join(f"{i}\t{keyword_sentence(rng, y)}\n"
                                          for i, y in enumerate(test_labels)))
  return str(directory), test_labels


def write_stsb(directory, n_train=48, n_dev=21, n_test=5, seed=0):
  """STS-B layout (header sentence1, sentence2, score); the score counts shared keywords."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)

  def pair():
    a, b = keyword_sentence(rng, 1), keyword_sentence(rng, int(rng.integers(0, 2)))
    return a, b, 5.0 * ("good" in b.split()) + float(rng.uniform(0, 1))

  for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
    rows = [f"{i}\t{a}\t{b}\t{s:.3f}" for i, (a, b, s) in enumerate(pair() for _ in range(n))]
    with open(os.path.join(directory, name), "w") as f:
      f.write("index\tsentence1\tsentence2\tscore\n" + "\n".join(rows) + "\n")
  with open(os.path.join(directory, "test.tsv"), "w") as f:
    f.write("index\tsentence1\tsentence2\n" + "".join(
        f"{i}\t{a}\t{b}\n" for i, (a, b, _) in enumerate(pair() for _ in range(n_test))))
  return str(directory)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return make_hf_dir(tmp_path_factory.mktemp("hf_tiny"))


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
  return write_sst2(tmp_path_factory.mktemp("sst2"))


def ft_config(hf_checkpoint, data_dir, task="sst2", arg="", **finetune_kw):
  """configs/finetune.py at test size: batch 16, length 16, lr 5e-3, dp over all devices."""
  c = load_config("finetune", f"task={task}" + (f",{arg}" if arg else ""))
  c.init.hf_checkpoint = hf_checkpoint
  c.finetune.update(data_dir=data_dir, **finetune_kw)
  c.data.max_seq_length = SEQ
  c.train.batch_size = 16
  c.eval.batch_size = 16
  c.optimizer.learning_rate = 5e-3
  c.checkpoint.async_save = False
  c.log.every_steps = 1000
  return c


def flat(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def first_batches(config, n):
  feats = classification.load_split(config, "train")
  it = finetuning.epoch_batches(feats, config.train.batch_size, 0, config.data.seed)
  return [next(it) for _ in range(n)]


def steps(config, devices=None, n=2, warm=True):
  """State after n train steps from the warm start on `devices` (default all); start params too."""
  s = state_lib.setup(config, registry.get_task(config), devices=devices)
  train_step, _, init = steps_lib.compile_steps(config, s)
  state = init(jax.random.PRNGKey(config.seed))
  if warm:
    state = dict(state, params=s.task.warm_start(state["params"]))
  start = jax.device_get(state["params"])
  with steps_lib.mesh_context(s.mesh, s.rules):
    for b in first_batches(config, n):
      state, metrics = train_step(state, steps_lib.to_global(b, s))
  return state, start, s, float(np.asarray(metrics["loss"])[0])


def test_prepare_takes_model_and_tokenizer_from_the_start(hf_dir, sst2):
  """The architecture and vocab.txt come from the HF directory; dropout, PEFT keys and the
  step counts (epochs x batches, warmup share, one eval + checkpoint per epoch) from here."""
  c = ft_config(hf_dir, sst2[0], arg="lora", epochs=2.5, warmup_proportion=0.2)
  c.model.update(hidden_size=768, vocab_size=30522, hidden_dropout_prob=0.0, lora_rank=3)
  p = finetune.prepare(c)
  assert c.model.hidden_size == 768  # the argument is not modified
  assert (p.model.hidden_size, p.model.vocab_size, p.model.num_hidden_layers) == (32, len(VOCAB), 1)
  assert p.model.hidden_dropout_prob == 0.0 and p.model.attention_probs_dropout_prob == 0.1
  assert p.model.lora_rank == 3
  assert (p.data.tokenizer.kind, p.data.tokenizer.path) == ("wordpiece", os.path.join(hf_dir, "vocab.txt"))
  per_epoch = -(-96 // 16)
  assert p.train.num_steps == round(2.5 * per_epoch) == 15
  assert p.optimizer.warmup_steps == 3
  assert p.eval.every_steps == p.checkpoint.every_steps == per_epoch


# ---------------------------------------------------------------------------------------------
# 1. Sharded fine-tune step == single-device step.
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("arg", ["", "lora"])
def test_sharded_step_matches_single_device(hf_dir, sst2, arg):
  """Two steps (dropout on; LoRA's A moves only from step 2, B from step 1) on a 2x2x2
  data/fsdp/tensor mesh of 8 devices == on one device, within 1e-5."""
  config = finetune.prepare(ft_config(hf_dir, sst2[0], arg=arg))
  if arg:
    config.model.lora_targets = "q,v,ffn"
  ref, start, _, ref_loss = steps(config, jax.devices()[:1])  # mesh data=-1: 1 device
  config.mesh.update(preset="fsdp_tp", data=2, fsdp=2, tensor=2)
  ref_params = jax.device_get(ref["params"])
  state, _, s, loss = steps(config)
  assert dict(s.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  specs = [x.sharding.spec for x in jax.tree.leaves(state["params"])]
  assert any(any(d is not None for d in spec) for spec in specs)  # really sharded
  assert abs(loss - ref_loss) < 1e-5, (loss, ref_loss)
  diff = tree_max_diff(state["params"], ref_params)
  moved = tree_max_diff(ref_params, start)
  print(f"{arg or 'full'}: max |sharded - single| {diff:.2e}, max change over 2 steps {moved:.2e}")
  assert diff < 1e-5
  assert moved > 1e-4  # the steps did something


# ---------------------------------------------------------------------------------------------
# 2. LoRA / adapters train only their leaves (+ head); the optimizer holds only those.
# ---------------------------------------------------------------------------------------------
def _opt_numel(opt_state):
  """Elements of the optimizer state's non-scalar leaves (Adam: 2 per trained element)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(opt_state) if np.ndim(x) > 0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "adapters"])
def test_peft_updates_only_trainable_leaves(hf_dir, sst2, method):
  config = finetune.prepare(ft_config(hf_dir, sst2[0], arg=method))
  config.optimizer.warmup_steps = 0
  state, start, s, _ = steps(config, jax.devices()[:1], n=3)
  mask, new, old = flat(s.trainable), flat(jax.device_get(state["params"])), flat(start)
  changed = {k: bool(np.any(new[k] != old[k])) for k in new}
  trainable = sorted(k for k in new if mask[k])
  frozen = sorted(k for k in new if not mask[k])
  n_train = sum(new[k].size for k in trainable)
  print(f"{method}: {len(trainable)} trainable leaves ({n_train} params), {len(frozen)} frozen; "
        f"optimizer state {_opt_numel(state['opt_state'])} elements")
  assert frozen and trainable
  assert not [k for k in frozen if changed[k]]  # bit-identical to the warm start
  assert [k for k in trainable if not changed[k]] == []
  assert all(k.startswith("classifier/") or "lora_" in k or "adapter_" in k
             or (method == "adapters" and "LayerNorm" in k) for k in trainable), trainable
  assert any("classifier" in k for k in trainable)
  assert any(("lora_a" if method == "lora" else "adapter_") in k for k in trainable)
  if method == "lora":
    assert all("LayerNorm" not in k for k in trainable)
  else:
    assert any("LayerNorm" in k for k in trainable)
  # Adam's two moments of the trainable leaves only (+ scalar counts).
  assert _opt_numel(state["opt_state"]) == 2 * n_train


@pytest.mark.parametrize("method,kw", [("lora", dict(lora_rank=8, lora_targets="query,value")),
                                       ("adapters", dict(adapter_size=64))])
def test_peft_trainable_fraction_of_minilm(method, kw):
  """The real all-MiniLM-L6-v2 architecture (config.json only, no weights): < 3% trainable."""
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top
  path = shared_path("weights", "all-MiniLM-L6-v2", "config.json")
  cfg = hf.config_from_hf(json.loads(path.read_text()))
  c = load_config("finetune", f"sst2,{method}")
  c.model.update({k: v for k, v in dataclasses.asdict(cfg).items() if k in c.model})
  c.model.update(kw)
  task = classification.Classification(c)
  abstract = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
  mask = task.trainable(abstract)
  total = models.param_count(abstract)
  n = sum(int(np.prod(x.shape)) for x, m in zip(jax.tree.leaves(abstract), jax.tree.leaves(mask)) if m)
  print(f"MiniLM-L6 {method}: {n} trainable of {total} ({100 * n / total:.2f}%); {task.num_params(abstract)}")
  assert 22_500_000 < total < 23_500_000  # 22.7M + the PEFT leaves
  assert 0 < n < 0.03 * total
  # Full fine-tuning trains everything.
  assert classification.Classification(load_config("finetune", "sst2")).trainable(abstract) is None


@pytest.mark.parametrize("mode,values,best", [("max", [0.5, 0.9, 0.7, None], 2), ("min", [0.5, 0.9, 0.7, None], 1),
                                             ("max", [0.8, 0.8, 0.3, None], 2)])
def test_recipe_keeps_the_best_and_the_latest_checkpoint(tmp_path, mode, values, best):
  """keep=1 + keep_best=1 (configs/finetune.py): the best epoch's checkpoint (ties: the later)
  survives next to the latest, and a later reader (score, starts.finetuned_params) finds it from the metrics
  stored with the checkpoints."""
  c = load_config("finetune", "sst2").checkpoint
  c.update(async_save=False)
  assert (c.keep, c.keep_best) == (1, 1)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"), c, best_metric="eval/accuracy", best_mode=mode)
  state = {"w": np.zeros(2, np.float32)}
  for step, v in enumerate(values, 1):
    ckpt.save(step, state, {"step": step}, None if v is None else {"eval/accuracy": v})
  ckpt.wait()
  assert ckpt.all_steps() == [best, len(values)]
  assert ckpt.best_step() == best
  ckpt.close()
  reader = checkpointing.Checkpointer(str(tmp_path / "ckpt"), c, read_only=True, best_metric="eval/accuracy",
                                      best_mode=mode)
  assert reader.best_step() == best
  reader.close()


# ---------------------------------------------------------------------------------------------
# 3. run(): seeds, median, test predictions, resume; 4. export of the best checkpoint.
# ---------------------------------------------------------------------------------------------
def read_tsv(path):
  with open(path) as f:
    return [line.rstrip("\n").split("\t") for line in f]


def predict(task, params, feats, batch_size=16):
  """Logits of every row of `feats` (no padding rows)."""
  fn = jax.jit(task.logits)
  out = [np.asarray(fn(params, {k: v for k, v in b.items()}))
         for b in finetuning.padded_batches(feats, batch_size)]
  return np.concatenate(out)[:len(feats["label"])]


EPOCHS = 10  # 60 steps: the keyword is learned by about step 30


@pytest.fixture(scope="module")
def sst2_run(hf_dir, sst2, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sst2_run"))
  config = ft_config(hf_dir, sst2[0], seeds=2, epochs=EPOCHS)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    results = finetune.run(config, workdir)
  return config, workdir, results, out.getvalue()


@pytest.mark.slow
def test_run_two_seeds_predictions_and_resume(sst2_run, sst2):
  config, workdir, results, log = sst2_run
  _, test_labels = sst2
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  per_epoch = -(-96 // 16)
  assert results["num_steps"] == EPOCHS * per_epoch and results["train_examples"] == 96
  assert len(results["seeds"]) == 2
  acc = [r["eval"]["validation"]["accuracy"] for r in results["seeds"]]
  print(f"dev accuracy per seed {acc}, median {results['median']['validation']['accuracy']}; log:\n{log}")
  assert results["median"]["validation"]["accuracy"] == pytest.approx(float(np.median(acc)))
  assert min(acc) >= 0.9  # majority baseline: 0.5 (balanced dev set)
  for k, r in enumerate(results["seeds"]):
    assert r["best_step"] % per_epoch == 0 and 0 < r["best_step"] <= EPOCHS * per_epoch
    path = os.path.join(workdir, f"seed_{k}", "predictions", "SST-2.tsv")
    assert r["test_predictions"] == [path]
    rows = read_tsv(path)
    assert rows[0] == ["index", "prediction"] and len(rows) == 1 + len(test_labels)
    assert [int(i) for i, _ in rows[1:]] == list(range(len(test_labels)))
    pred = np.array([int(p) for _, p in rows[1:]])
    assert np.mean(pred == test_labels) >= 0.9, pred
  # The same command again: nothing is retrained, the results are the same.
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    again = finetune.run(config, workdir)
  log2 = out.getvalue()
  print(log2)
  assert "eval @" not in log2 and not re.search(r"^step \d+/", log2, re.M)
  assert log2.count(f"already finished (done at step {EPOCHS * per_epoch})") == 2
  assert again == results


@pytest.mark.slow
def test_export_best_checkpoint_to_transformers(sst2_run, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  _, workdir, results, _ = sst2_run
  seed_dir = os.path.join(workdir, "seed_0")
  out = finetune.export(seed_dir, str(tmp_path / "export"))
  config, params = starts.finetuned_params(seed_dir)
  task = registry.get_task(config)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
  assert model.config.id2label == {0: "negative", 1: "positive"}
  assert type(model).__name__ == "BertForSequenceClassification"
  feats = classification.load_split(config, "validation")
  ours = predict(task, params, feats)
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(feats["input_ids"], dtype=torch.long),
                   attention_mask=torch.tensor(feats["input_mask"], dtype=torch.long),
                   token_type_ids=torch.tensor(feats["token_type_ids"], dtype=torch.long)).logits.numpy()
  diff = np.abs(ours - theirs).max()
  print(f"export: max |ours - transformers| logits {diff:.2e} over {len(ours)} dev rows")
  assert diff < 1e-4
  # The exported model scores what results.json reports for the seed's best checkpoint.
  acc = float(np.mean(theirs.argmax(-1) == feats["label"]))
  assert acc == pytest.approx(results["seeds"][0]["eval"]["validation"]["accuracy"])


# ---------------------------------------------------------------------------------------------
# 5. Regression: MSE loss, Pearson / Spearman.
# ---------------------------------------------------------------------------------------------
def test_regression_task_loss_is_mse_and_metrics_are_scipys(hf_dir, tmp_path):
  """No train step compiled: the STS-B task's loss and eval outputs, eagerly, on a padded batch."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  config = finetune.prepare(ft_config(hf_dir, write_stsb(str(tmp_path / "stsb")), task="stsb"))
  task = classification.Classification(config)
  assert task.regression and task.num_labels == 1 and task.best_metric == "eval/spearman"
  assert task.features["label"].dtype == "float32"
  params = task.warm_start(task.init_params(jax.random.PRNGKey(0)))
  feats = classification.load_split(config, "validation")
  b = next(finetuning.padded_batches(feats, 32))  # 21 rows + 11 weight-0 padding rows
  out = np.asarray(task.logits(params, b))
  assert out.shape == (32, 1)
  loss, _ = task.loss(params, b, jax.random.PRNGKey(0), deterministic=True)
  w = b["weight"]
  assert w.sum() == 21 and float(loss) == pytest.approx(np.sum(w * (out[:, 0] - b["label"]) ** 2) / 21, rel=1e-5)
  _, o = task.eval_step(params, b, jax.random.PRNGKey(0))
  pred, label, weight = (np.asarray(o[k]) for k in ("pred", "label", "weight"))
  np.testing.assert_allclose(pred, out[:, 0], rtol=1e-6)
  got = task.host_metrics({"pred": pred, "label": label, "weight": weight})
  assert got["pearson"] == pytest.approx(stats.pearsonr(pred[:21], feats["label"])[0], abs=1e-6)
  assert got["spearman"] == pytest.approx(stats.spearmanr(pred[:21], feats["label"])[0], abs=1e-6)


@pytest.mark.slow
def test_regression_mse_and_correlations(hf_dir, tmp_path, capsys):
  from scipy import stats  # pylint: disable=g-import-not-at-top
  data = write_stsb(str(tmp_path / "stsb"))
  workdir = str(tmp_path / "run")
  config = finetune.prepare(ft_config(hf_dir, data, task="stsb", epochs=3.0))
  results = finetune.run(config, workdir)
  log = capsys.readouterr().out
  best_config, params = starts.finetuned_params(os.path.join(workdir, "seed_0"))
  task = registry.get_task(best_config)
  # The best epoch by Spearman (ties: the later) is the one scored.
  evals = [(float(v), int(k)) for k, v in re.findall(r"eval @ (\d+): pearson \S+ \| spearman (\S+)", log)]
  assert len(evals) == 3 and results["seeds"][0]["best_step"] == max(evals)[1], (evals, results)
  assert results["seeds"][0]["eval"]["validation"]["spearman"] == pytest.approx(max(evals)[0], abs=1e-4)
  assert task.regression and task.num_labels == 1 and task.best_metric == "eval/spearman"
  # The loss is the mean squared error of the single output.
  batch = first_batches(config, 1)[0]
  pred = np.asarray(jax.jit(task.logits)(params, batch))
  assert pred.shape == (16, 1)
  loss, _ = task.loss(params, batch, jax.random.PRNGKey(0), deterministic=True)
  assert float(loss) == pytest.approx(np.mean((pred[:, 0] - batch["label"]) ** 2), rel=1e-5)
  # The loop's eval predictions of the best checkpoint (21 dev rows: the last batch padded)...
  s, (_, eval_step, _) = train.setup_cached(config)  # run's
  feats = classification.load_split(config, "validation")
  to_global = steps_lib.to_global
  with steps_lib.mesh_context(s.mesh, s.rules):
    pred = np.concatenate([np.asarray(eval_step(params, to_global(b, s))[1]["pred"])
                           for b in finetuning.padded_batches(feats, config.eval.batch_size)])[:21]
  np.testing.assert_allclose(pred, predict(task, params, feats)[:, 0], atol=1e-5)
  # ... scored by scipy are what results.json reports; the eval loss is their MSE.
  ev = results["seeds"][0]["eval"]["validation"]
  print(f"stsb dev: {ev}")
  assert np.std(pred) > 1e-3
  assert ev["pearson"] == pytest.approx(stats.pearsonr(pred, feats["label"])[0], abs=1e-6)
  assert ev["spearman"] == pytest.approx(stats.spearmanr(pred, feats["label"])[0], abs=1e-6)
  assert ev["loss"] == pytest.approx(np.mean((pred - feats["label"]) ** 2), rel=1e-5)
  rows = read_tsv(os.path.join(workdir, "seed_0", "predictions", "STS-B.tsv"))
  assert rows[0] == ["index", "prediction"] and len(rows) == 6
  assert all(np.isfinite(float(p)) for _, p in rows[1:])


# ---------------------------------------------------------------------------------------------
# 6. Bad input fails before anything is compiled or written.
# ---------------------------------------------------------------------------------------------
def _three_label_head(tmp_path, hf, data):
  return ft_config(make_hf_dir(tmp_path / "hf3", num_labels=3), data), "has a 3-label head but task 'sst2' has 2"


def _small_vocab(tmp_path, hf, data):
  return (ft_config(make_hf_dir(tmp_path / "hf_v20", vocab_size=20), data),
          f"tokenizer has {len(VOCAB)} ids but config.model.vocab_size=20")


def _bad_label(tmp_path, hf, data):
  bad, _ = write_sst2(str(tmp_path / "bad_sst2"), bad_label_line=7)
  return ft_config(hf, bad), r"train.tsv line 7: label '2' is not one of \('0', '1'\)"


def _both_starts(tmp_path, hf, data):
  c = ft_config(hf, data)
  c.init.workdir = str(tmp_path)
  return c, "Set one of config.init.workdir .* not both"


def _lora_rank0(tmp_path, hf, data):
  c = ft_config(hf, data, arg="lora")
  c.model.lora_rank = 0
  return c, "method='lora' needs config.model.lora_rank > 0"


BAD = {
    "unknown_task": lambda t, hf, d: (ft_config(hf, d, task="sst3"), "Unknown task 'sst3'"),
    "unknown_method": lambda t, hf, d: (ft_config(hf, d, method="qlora"), "Unknown config.finetune.method='qlora'"),
    "lora_rank_0": _lora_rank0,
    "three_label_head": _three_label_head,
    "tokenizer_bigger_than_vocab": _small_vocab,
    "unknown_label": _bad_label,
    "workdir_and_hf": _both_starts,
    "no_such_hf_dir": lambda t, hf, d: (ft_config(str(t / "nope"), d), "is not a directory"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_fails_before_compiling(case, hf_dir, sst2, tmp_path, monkeypatch):
  def boom(*a, **k):
    raise AssertionError("reached the train loop before validating")
  for module, name in ((state_lib, "setup"), (steps_lib, "compile_steps"), (train, "train_and_evaluate"),
                       (train, "setup_cached")):
    monkeypatch.setattr(module, name, boom)
  config, match = BAD[case](tmp_path, hf_dir, sst2[0])
  workdir = tmp_path / "workdir"
  with pytest.raises(ValueError, match=match):
    finetune.run(config, str(workdir))
  assert not workdir.exists()


# ---------------------------------------------------------------------------------------------
# 7. Layer-wise lr decay (ELECTRA's recipe).
# ---------------------------------------------------------------------------------------------
def test_layerwise_lr_decay_factors(tmp_path, sst2):
  L, decay = 3, 0.8
  hf3 = make_hf_dir(tmp_path / "hf_3layers", num_hidden_layers=L)
  config = finetune.prepare(ft_config(hf3, sst2[0], arg="recipe=electra"))
  assert config.optimizer.layerwise_lr_decay == decay and config.model.num_hidden_layers == L
  task = classification.Classification(config)
  params = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
  scales = flat(optim.layer_lr_scales(config.optimizer, params, L))

  def expected(path):
    if path.startswith("bert/embeddings/"):
      depth = 0
    elif path.startswith("bert/encoder/group_"):  # layer i: group_{i}_layer_0 (no sharing)
      depth = int(path.split("/")[2].split("_")[1]) + 1
    else:  # the pooler and the task head
      assert path.startswith(("bert/encoder/pooler/", "classifier/")), path
      depth = L + 2
    return decay ** (L + 2 - depth)

  assert {k.split("/")[2] for k in scales if "/encoder/" in k} == {"pooler"} | {
      f"group_{i}_layer_0" for i in range(L)}
  assert scales["bert/encoder/pooler/kernel"] == 1.0
  for k, v in scales.items():
    assert v == pytest.approx(expected(k), rel=1e-12), k
  assert scales["bert/embeddings/word_embeddings/embedding"] == pytest.approx(decay ** 5)
  assert scales["classifier/dense/kernel"] == 1.0
  # The optimizer applies them: the first update of each leaf is scaled by its factor.
  host = jax.tree.map(lambda a: np.full(a.shape, 0.5, a.dtype), params)
  grads = jax.tree.map(lambda a: np.full(a.shape, 0.1, a.dtype), params)
  config.optimizer.warmup_steps = 0
  tx, _ = optim.build(config.optimizer, 10, lr_scales=optim.layer_lr_scales(config.optimizer, params, L))
  tx1, _ = optim.build(config.optimizer, 10)
  first_update = lambda t: jax.jit(lambda g, p: t.update(g, t.init(p), p)[0])(grads, host)  # noqa: E731
  upd, ref = flat(first_update(tx)), flat(first_update(tx1))
  for k in upd:
    np.testing.assert_allclose(upd[k], ref[k] * scales[k], rtol=1e-5, err_msg=k)
  assert np.abs(ref["classifier/dense/kernel"]).max() > 0
  # With a PEFT mask (as setup passes it): the trainable leaves keep their depth's factor.
  config.finetune.method = "lora"
  config.model.lora_rank = 4
  lora_task = classification.Classification(config)
  lora_params = jax.eval_shape(lora_task.init_params, jax.random.PRNGKey(0))
  mask = lora_task.trainable(lora_params)
  lora_scales = flat(optim.layer_lr_scales(config.optimizer, state_lib.split_trainable(lora_params, mask)[0], L))
  assert lora_scales and all("lora_" in k or k.startswith("classifier/") for k in lora_scales)
  assert lora_scales["bert/encoder/group_2_layer_0/attention/query/lora_a"] == pytest.approx(decay ** 2)


# ---------------------------------------------------------------------------------------------
# 8. Early stop.
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # moved from the fast suite (10-minute budget)
def test_early_stop_when_the_metric_stops_improving(hf_dir, sst2, tmp_path):
  """lr ~ 0: dev accuracy never changes, so patience 2 stops at the third of 8 epochs (the
  best checkpoint scores the first epoch's accuracy); re-running the command does not train on."""
  per_epoch = 6
  # LoRA + layer-wise lr decay: the best checkpoint must still be found and read (starts.finetuned_params).
  config = ft_config(hf_dir, sst2[0], arg="recipe=electra,lora", epochs=8.0)
  config.optimizer.learning_rate = 1e-12
  config.eval.early_stop_patience = 2
  workdir = str(tmp_path / "run")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    results = finetune.run(config, workdir)
  log = out.getvalue()
  print(log)
  assert f"Early stop at step {3 * per_epoch}" in log
  assert f"eval @ {4 * per_epoch}" not in log
  ckpts = sorted(int(d) for d in os.listdir(os.path.join(workdir, "seed_0", "checkpoints")) if d.isdigit())
  assert max(ckpts) == 3 * per_epoch, ckpts
  first = float(re.search(rf"eval @ {per_epoch}: accuracy ([0-9.]+)", log).group(1))
  assert results["seeds"][0]["eval"]["validation"]["accuracy"] == pytest.approx(first, abs=1e-4)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    again = finetune.run(config, workdir)
  log2 = out.getvalue()
  print(log2)
  assert "eval @" not in log2 and "Early stop" not in log2
  assert f"already finished (early_stopped at step {3 * per_epoch})" in log2
  ckpts2 = sorted(int(d) for d in os.listdir(os.path.join(workdir, "seed_0", "checkpoints")) if d.isdigit())
  assert ckpts2 == ckpts
  assert again == results
  _, params = starts.finetuned_params(os.path.join(workdir, "seed_0"))
  assert params["classifier"]["dense"]["kernel"].shape == (32, 2)
  assert params["bert"]["encoder"]["group_0_layer_0"]["attention"]["query"]["lora_a"].shape == (32, 8)
