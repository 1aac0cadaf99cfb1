"""Knowledge distillation (bert_jax.tasks.distill): soft targets, the frozen teacher, student init.

Tiny random BERTs saved as HF directories are the teachers (test_finetune's helpers); the
teacher's logits are checked against transformers on the same weights, the soft term against
scipy's KL divergence. Fast: loss terms on eager applies and the abstract train state (the
teacher's sharding, the optimizer state); slow: a task distillation run (the checkpoint holds
no teacher, the student learns the teacher's task) and MLM distillation in the train loop;
proof: the SST-2 MiniLM -> 2-layer student comparison (README has its result).
"""

import json
import zlib

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import shared_path
from scipy import special

from bert_jax import finetune
from bert_jax import models
from bert_jax import state as state_lib
from bert_jax import train
from bert_jax.tasks import base
from bert_jax.tasks import classification
from bert_jax.tasks import distill
from bert_jax.tasks import finetuning
from bert_jax.tasks import registry
from test_finetune import SEQ, make_hf_dir, write_sst2
from train_testlib import load_config, tiny_config, tree_max_diff


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  """A 2-layer BertForSequenceClassification (HF) with its vocab.txt."""
  return make_hf_dir(tmp_path_factory.mktemp("teacher"), num_labels=2, num_hidden_layers=2)


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
  return write_sst2(tmp_path_factory.mktemp("sst2"))[0]


def student_config(teacher, data_dir, **distill_kw):
  c = load_config("finetune", "sst2,distill")
  c.init.hf_checkpoint = teacher
  c.distill.update(**{"teacher": teacher, "student_layers": 1, **distill_kw})
  c.finetune.update(data_dir=data_dir, epochs=1.0)
  c.data.max_seq_length = SEQ
  c.train.batch_size = c.eval.batch_size = 8
  c.mesh.update(preset="fsdp", data=2, fsdp=4)
  return c


def first_batch(config, n=8):
  return next(finetuning.epoch_batches(classification.load_split(config, "train"), n, 0, 0))


# ---------------------------------------------------------------------------------------------
# Fast: pieces and loss terms.
# ---------------------------------------------------------------------------------------------
def test_soft_term_is_kl_times_t_squared():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
  for temp in (1.0, 2.0, 8.0):
    want = special.rel_entr(special.softmax(t / temp, -1), special.softmax(s / temp, -1)).sum(-1) * temp ** 2
    got = np.asarray(distill.soft_cross_entropy_kl(jnp.asarray(s), jnp.asarray(t), temp))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.allclose(distill.soft_cross_entropy_kl(jnp.asarray(t), jnp.asarray(t), 4.0), 0.0, atol=1e-6)


def test_every_kth_layer_takes_distilbert_layers():
  layer = lambda i: {"attention": {"query": {"kernel": np.full(2, i)}}}  # noqa: E731
  params = {"bert": {"embeddings": {"x": 1}, "encoder": {**{f"group_{i}_layer_0": layer(i) for i in range(6)},
                                                         "pooler": {"kernel": 7}}}, "classifier": 3}
  out = distill.every_kth_layer(params, 2)
  enc = out["bert"]["encoder"]
  assert sorted(enc) == ["group_0_layer_0", "group_1_layer_0", "pooler"]
  assert enc["group_0_layer_0"]["attention"]["query"]["kernel"][0] == 0
  assert enc["group_1_layer_0"]["attention"]["query"]["kernel"][0] == 3
  assert out["classifier"] == 3 and out["bert"]["embeddings"] == {"x": 1}
  assert distill.every_kth_layer(params, 6)["bert"]["encoder"].keys() == params["bert"]["encoder"].keys()


def test_bad_settings_fail_early(teacher_dir, sst2, tmp_path):
  for key, value, msg in (("alpha", 1.5, "config.distill.alpha"), ("temperature", 0.0, "config.distill.temperature"),
                          ("student_init", "middle", "config.distill.student_init"),
                          ("teacher", str(tmp_path / "absent"), "is not a directory")):
    c = student_config(teacher_dir, sst2)
    c.distill[key] = value
    with pytest.raises(ValueError, match=msg):
      finetune.prepare(c)
  # A run directory with several seeds, not one seed.
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "results.json").write_text("{}")
  c = student_config(str(tmp_path / "run"), sst2)
  c.init.hf_checkpoint = teacher_dir
  with pytest.raises(ValueError, match="seed_<k>"):
    registry.get_task(finetune.prepare(c))


@pytest.mark.slow
def test_teacher_logits_equal_transformers(teacher_dir, sst2):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  c = finetune.prepare(student_config(teacher_dir, sst2))
  task = registry.get_task(c)
  batch = first_batch(c)
  ours = task.distiller.teacher_model.apply({"params": task.frozen_params()},
                                            **models.model_inputs(task.distiller.teacher_model, batch))
  hf = transformers.BertForSequenceClassification.from_pretrained(teacher_dir).eval()
  with torch.no_grad():
    ref = hf(input_ids=torch.as_tensor(batch["input_ids"], dtype=torch.long),
             attention_mask=torch.as_tensor(batch["input_mask"], dtype=torch.long),
             token_type_ids=torch.as_tensor(batch["token_type_ids"], dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4)


@pytest.mark.slow
def test_loss_terms_vanish_for_a_copy_of_the_teacher(teacher_dir, sst2):
  """A student that is the teacher (student_init=teacher, same depth, identity projections):
  soft, hidden and attention terms are 0 and the loss is (1 - alpha) * the label loss; a
  perturbed student makes each term positive and the soft term equals scipy's KL."""
  c = student_config(teacher_dir, sst2, student_layers=0, student_init="teacher", alpha=0.3, temperature=3.0,
                     hidden_weight=1.0, attention_weight=1.0)
  c = finetune.prepare(c)
  task = registry.get_task(c)
  teacher = task.frozen_params()
  eye = np.eye(c.model.hidden_size, dtype=np.float32)
  params = {**jax.tree.map(jnp.asarray, teacher), "distill": {"embedding_proj": eye, "hidden_proj": eye}}
  batch = first_batch(c)
  loss_fn = jax.jit(lambda p, b, f: task.loss(p, b, jax.random.PRNGKey(0), deterministic=True, frozen=f))
  logits_fn = jax.jit(task.logits)
  loss, m = loss_fn(params, batch, teacher)
  vals = base.reduce_metrics(m)
  assert abs(vals["soft_loss"]) < 1e-6 and vals["hidden_mse"] < 1e-8 and vals["attention_mse"] < 1e-8
  np.testing.assert_allclose(float(loss), 0.7 * vals["hard_loss"], rtol=1e-5)
  assert vals["teacher_agreement"] == 1.0
  noisy = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(zlib.crc32(jax.tree_util.keystr(p).encode())), x.shape)
      if "distill" not in jax.tree_util.keystr(p) else x, params)
  loss2, m2 = loss_fn(noisy, batch, teacher)
  vals2 = base.reduce_metrics(m2)
  assert vals2["soft_loss"] > 1e-4 and vals2["hidden_mse"] > 1e-6 and vals2["attention_mse"] > 1e-6
  s_logits = np.asarray(logits_fn(noisy, batch), np.float64)
  t_logits = np.asarray(logits_fn({**teacher, "distill": params["distill"]}, batch), np.float64)
  kl = special.rel_entr(special.softmax(t_logits / 3, -1), special.softmax(s_logits / 3, -1)).sum(-1) * 9
  np.testing.assert_allclose(vals2["soft_loss"], kl.mean(), rtol=1e-3, atol=1e-6)
  want = 0.3 * vals2["soft_loss"] + 0.7 * vals2["hard_loss"] + vals2["hidden_mse"] + vals2["attention_mse"]
  np.testing.assert_allclose(float(loss2), want, rtol=1e-5)


def test_teacher_is_sharded_like_the_student_and_not_in_the_optimizer(teacher_dir, sst2):
  """Abstract train state only (nothing compiled): the teacher's kernels get the same mesh
  shardings as the student's under the fsdp preset; the optimizer state and the checkpointed
  state hold the student (and its projections) only."""
  c = finetune.prepare(student_config(teacher_dir, sst2, hidden_weight=1.0))
  s = state_lib.setup(c, registry.get_task(c))
  student_sh = s.param_sh["bert"]["encoder"]["group_0_layer_0"]
  teacher_sh = s.frozen_sh["bert"]["encoder"]["group_1_layer_0"]
  for path, sh in jax.tree_util.tree_flatten_with_path(student_sh)[0]:
    t = teacher_sh
    for k in path:
      t = t[k.key]
    assert t.spec == sh.spec, path
  assert any(sh.spec != jax.sharding.PartitionSpec() for sh in jax.tree.leaves(teacher_sh))  # really sharded
  student_n = models.param_count(s.abstract["params"])
  teacher_n = models.param_count(s.task.frozen_params())
  assert teacher_n > student_n
  assert "distill" in s.abstract["params"]  # the learned projections train with the student
  opt_leaves = [x for x in jax.tree.leaves(s.abstract["opt_state"]) if x.ndim > 0]
  assert sum(int(np.prod(x.shape)) for x in opt_leaves) == 2 * student_n  # Adam's mu and nu
  assert sorted(s.abstract) == ["nonfinite", "opt_state", "params", "rng", "skipped", "step"]


# ---------------------------------------------------------------------------------------------
# Slow: the train loop.
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_teacher_must_fit_the_student(teacher_dir, sst2, tmp_path):
  # A teacher with another vocabulary.
  other = make_hf_dir(tmp_path / "other", num_labels=2, vocab_size=40, words=[f"w{i}" for i in range(35)]
                      + ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
  c = student_config(other, sst2)
  c.init.hf_checkpoint = teacher_dir
  with pytest.raises(ValueError, match="share the tokenizer"):
    registry.get_task(finetune.prepare(c))
  # A backbone without a classification head cannot teach a task.
  backbone = make_hf_dir(tmp_path / "backbone")
  c = student_config(backbone, sst2)
  c.init.hf_checkpoint = teacher_dir
  with pytest.raises(ValueError, match="fine-tuned first"):
    registry.get_task(finetune.prepare(c))
  # Attention maps need the same number of heads.
  c = student_config(teacher_dir, sst2, attention_weight=1.0)
  c.init.hf_checkpoint = make_hf_dir(tmp_path / "wide", num_attention_heads=4)
  with pytest.raises(ValueError, match="heads"):
    registry.get_task(finetune.prepare(c))


@pytest.mark.slow
def test_task_distillation_run(teacher_dir, tmp_path):
  """A trained 2-layer teacher of the keyword task teaches a 1-layer student with soft targets
  only (alpha=1: no label reaches the student): the student learns the task; the checkpoint
  holds the student alone; the teacher's weights are unchanged."""
  data = write_sst2(tmp_path / "data", n_train=160, n_dev=40)[0]
  t = load_config("finetune", "sst2")
  t.init.hf_checkpoint = teacher_dir
  t.finetune.update(data_dir=data, epochs=6.0)
  t.data.max_seq_length = SEQ
  t.train.batch_size = t.eval.batch_size = 16
  t.optimizer.learning_rate = 3e-3
  teacher_run = finetune.run(t, str(tmp_path / "teacher"))
  teacher_acc = teacher_run["median"]["validation"]["accuracy"]
  assert teacher_acc >= 0.9
  seed_dir = str(tmp_path / "teacher" / "seed_0")
  before = distill.load_teacher(seed_dir, "classify")[1]
  c = student_config(seed_dir, data, alpha=1.0, temperature=2.0)
  c.init.hf_checkpoint = teacher_dir  # the student starts from the pretrained (untrained-on-task) weights
  c.finetune.epochs = 6.0
  c.train.batch_size = c.eval.batch_size = 16
  c.optimizer.learning_rate = 3e-3
  out = finetune.run(c, str(tmp_path / "student"))
  assert out["median"]["validation"]["accuracy"] >= 0.85, out
  # The checkpoint holds exactly the student's train state: its params (1 layer) and their
  # optimizer moments; nothing of the teacher.
  ckpt_dir = tmp_path / "student" / "seed_0" / "checkpoints"
  step = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  keys = json.loads((ckpt_dir / str(step) / "state" / "_METADATA").read_text())["tree_metadata"].keys()
  saved = {k for k in keys if k.startswith("('params'")}
  student = finetune.prepare(c)
  s = state_lib.setup(student, registry.get_task(student), check=False)
  want = {str(("params",) + tuple(str(getattr(p, "key", p)) for p in path))
          for path, _ in jax.tree_util.tree_flatten_with_path(s.abstract["params"])[0]}
  assert saved == want
  assert not any("group_1_layer_0" in k for k in keys)
  assert models.param_count(s.abstract["params"]) < models.param_count(before)
  distill.load_teacher.cache_clear()
  assert tree_max_diff(before, distill.load_teacher(seed_dir, "classify")[1]) == 0.0


@pytest.mark.slow
def test_mlm_distillation_in_the_train_loop(tmp_path):
  """MLM distillation from an HF BertForPreTraining teacher (2 layers, large init: sharp
  predictions) into a random 1-layer student on synthetic batches, soft targets and the hidden
  term only (alpha=1): the soft term falls; the teacher's MLM accuracy is reported; the student's
  params hold one layer and its projections, nothing of the teacher."""
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  hf_cfg = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=16, initializer_range=0.5)
  transformers.BertForPreTraining(hf_cfg).save_pretrained(str(tmp_path / "teacher"))
  c = tiny_config("bert", steps=60, batch=8, seq=16)
  c.distill = load_config("bert", "tiny").distill
  c.distill.update(teacher=str(tmp_path / "teacher"), alpha=1.0, temperature=2.0, student_layers=1,
                   hidden_weight=1.0)
  c.mesh.update(preset="fsdp", data=2, fsdp=4)
  c.optimizer.learning_rate = 3e-3
  c.log.every_steps = 20
  out = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert out["status"] == "done"
  soft = [v["soft_loss"] for _, v in out["history"]]
  loss = [v["loss"] for _, v in out["history"]]
  assert soft[-1] < soft[0] and loss[-1] < 0.97 * loss[0], (soft, loss)
  assert 0.0 <= out["eval"]["teacher_mlm_accuracy"] <= 1.0 and "soft_loss" in out["eval"]
  assert "hidden_mse" in out["history"][-1][1]
  params = jax.device_get(out["state"]["params"])
  assert sorted(k for k in params["bert"]["encoder"] if k.startswith("group_")) == ["group_0_layer_0"]
  assert "distill" in params
  assert models.param_count({k: v for k, v in params.items() if k != "distill"}) < models.param_count(
      distill.load_teacher(str(tmp_path / "teacher"), "mlm")[1])


# ---------------------------------------------------------------------------------------------
# Proof: SST-2, MiniLM teacher, 2-layer student (README records the result and the command).
# ---------------------------------------------------------------------------------------------
@pytest.mark.proof
def test_distilled_student_beats_labels_only_on_sst2(tmp_path):
  from bert_jax.benchmarks import distill_sst2  # pylint: disable=g-import-not-at-top
  hf_dir = shared_path("weights", "all-MiniLM-L6-v2")
  data = shared_path("data", "glue", "SST-2")
  workdir = tmp_path / "distill"
  distill_sst2.main([f"--hf_dir={hf_dir}", f"--data_dir={data}", f"--workdir={workdir}", "--seeds=3",
                     "--temperatures=4,1"])
  rows = {r["run"]: r for r in json.loads((workdir / "summary.json").read_text())["rows"]}
  assert rows["T=4"]["median"] > rows["labels"]["median"], rows
