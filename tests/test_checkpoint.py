"""Resume equivalence, SIGTERM mid-save, corrupt-checkpoint fallback, restore onto another mesh."""

import hashlib
import os
import pathlib
import signal

import conftest  # noqa: F401  # 8 fake CPU devices
import jax
import numpy as np
import pytest

from bert_jax import checkpointing
from bert_jax import sharding
from bert_jax import starts
from bert_jax import state as state_lib
from bert_jax import steps as steps_lib
from bert_jax import train
from bert_jax.tasks import pretraining
from bert_jax.tasks import registry
from train_testlib import tiny_config, tree_max_diff


def _recording_inputs(monkeypatch, seen):
  """Wraps the task's inputs so every train batch handed to the loop is hashed into `seen`."""
  real = pretraining.Pretraining.inputs

  def wrapped(task, workdir, start_batch):
    it, eval_fn = real(task, workdir, start_batch)

    def gen():
      for b in it:
        seen.append(hashlib.sha1(b["input_ids"].tobytes() + b["masked_lm_positions"].tobytes()).hexdigest())
        yield b
    return gen(), eval_fn

  monkeypatch.setattr(pretraining.Pretraining, "inputs", wrapped)


def _config(n):
  c = tiny_config("bert", steps=2 * n)
  c.checkpoint.every_steps = n
  c.eval.every_steps = 2 * n
  c.log.every_steps = n
  return c


@pytest.mark.slow  # moved from the fast suite (10-minute budget)
def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
  n = 2
  seen = []
  _recording_inputs(monkeypatch, seen)
  full = train.train_and_evaluate(_config(n), str(tmp_path / "a"))
  assert full["status"] == "done" and full["step"] == 2 * n
  seen_a = list(seen)
  seen.clear()

  c = _config(n)
  c.train.halt_after_steps = n  # the process "dies" after n steps (its step-n checkpoint is on disk)
  first = train.train_and_evaluate(c, str(tmp_path / "b"))
  assert first["status"] == "halted" and first["checkpoint_steps"] == [n]
  c.train.halt_after_steps = 0
  second = train.train_and_evaluate(c, str(tmp_path / "b"))
  assert second["step"] == 2 * n
  assert seen == seen_a and len(set(seen_a)) == 2 * n  # same batches, in order, none repeated
  assert tree_max_diff(full["state"]["params"], second["state"]["params"]) == 0.0
  assert tree_max_diff(full["state"]["opt_state"], second["state"]["opt_state"]) == 0.0


@pytest.mark.slow  # about 25 s
def test_sigterm_during_async_save_then_resume(tmp_path, monkeypatch):
  """SIGTERM arrives while the step-n async save is in flight: the run saves, stops, resumes exactly."""
  n = 2
  ref = train.train_and_evaluate(_config(n), str(tmp_path / "ref"))
  real_save = checkpointing.Checkpointer.save
  fired = []

  def save_then_sigterm(self, step, *args, **kwargs):
    out = real_save(self, step, *args, **kwargs)
    if step == n and not fired:
      fired.append(step)
      os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop: request a final save
    return out

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_sigterm)
  c = _config(n)
  c.checkpoint.every_steps = 1
  got = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert fired and got["status"] == "preempted" and got["step"] == n
  assert got["checkpoint_steps"][-1] == n
  monkeypatch.setattr(checkpointing.Checkpointer, "save", real_save)
  resumed = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert resumed["step"] == 2 * n
  assert tree_max_diff(ref["state"]["params"], resumed["state"]["params"]) == 0.0


def _corrupt(step_dir: pathlib.Path):
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.stat().st_size > 0]
  assert files
  for p in files:
    p.write_bytes(b"garbage")


@pytest.mark.slow  # moved from the fast suite (10-minute budget)
def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog):
  c = tiny_config("bert", steps=4)
  c.checkpoint.every_steps = 2
  c.eval.every_steps = 4
  train.train_and_evaluate(c, str(tmp_path))
  ckpt_dir = tmp_path / "checkpoints"
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [2, 4]
  _corrupt(ckpt_dir / "4")
  s = state_lib.setup(c, registry.get_task(c))
  abstract = s.abstract_state()
  ck = checkpointing.Checkpointer(str(ckpt_dir), c.checkpoint)
  with caplog.at_level("WARNING"):
    state, meta, step = ck.restore(abstract)
  ck.close()
  assert step == 2 and meta["data_batches"] == 2 and int(state["step"]) == 2
  assert "step 4" in caplog.text and "unreadable" in caplog.text


@pytest.mark.slow  # moved from the fast suite (10-minute budget)
def test_restore_onto_smaller_meshes(tmp_path):
  """Saved from an 8-device fsdp_tp run; restored onto 4 and onto 1 device with the same values."""
  c = tiny_config("albert", steps=2)
  c.mesh.update(preset="fsdp_tp", data=1, fsdp=4, tensor=2)
  saved = train.train_and_evaluate(c, str(tmp_path))
  ref = jax.device_get(saved["state"])
  for devices, sizes in ((jax.devices()[:4], dict(data=1, fsdp=2, tensor=2)), (jax.devices()[:1], dict(data=1, fsdp=1, tensor=1))):
    c.mesh.update(**sizes)
    s = state_lib.setup(c, registry.get_task(c), mesh=sharding.make_mesh(c.mesh, devices))
    abstract = s.abstract_state()
    ck = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), c.checkpoint, read_only=True)
    state, _, step = ck.restore(abstract)
    ck.close()
    assert step == 2
    leaves = jax.tree.leaves(state)
    assert all(len(x.sharding.device_set) <= len(devices) for x in leaves)
    assert tree_max_diff(ref, state) == 0.0


def test_keep_last_k_plus_best(tmp_path):
  c = tiny_config("bert").checkpoint
  c.update(keep=2, keep_best=1, best_metric="eval/mlm_loss", best_mode="min", async_save=False)
  ck = checkpointing.Checkpointer(str(tmp_path), c)
  state = {"w": np.arange(3.0)}
  losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: None, 6: None}
  for step, loss in losses.items():
    ck.save(step, state, {"step": step}, None if loss is None else {"eval/mlm_loss": loss})
  ck.wait()
  assert ck.all_steps() == [2, 5, 6]  # best (step 2) + the last two
  ck.close()


@pytest.mark.slow  # moved from the fast suite (10-minute budget)
def test_warm_start_from_hf_checkpoint(tmp_path):
  """config.init.hf_checkpoint: the imported HF tensors replace the random init, then training runs."""
  transformers = pytest.importorskip("transformers")
  import torch  # pylint: disable=g-import-not-at-top
  c = tiny_config("bert", steps=1)
  m = c.model
  hf_cfg = transformers.BertConfig(vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                                   num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                                   intermediate_size=m.intermediate_size, max_position_embeddings=m.max_position_embeddings,
                                   hidden_act="gelu", type_vocab_size=2)
  torch.manual_seed(0)
  transformers.BertForPreTraining(hf_cfg).save_pretrained(tmp_path / "hf")
  c.init.hf_checkpoint = str(tmp_path / "hf")
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top
  _, hf_params = hf.load_hf_checkpoint(str(tmp_path / "hf"))
  s = state_lib.setup(c, registry.get_task(c))
  _, _, init = steps_lib.compile_steps(c, s)
  state = init(jax.random.PRNGKey(0))
  warm = starts.from_hf(c, state["params"])
  flat_hf = dict(jax.tree_util.tree_flatten_with_path(hf_params)[0])
  flat_warm = dict(jax.tree_util.tree_flatten_with_path(warm)[0])
  flat_init = dict(jax.tree_util.tree_flatten_with_path(state["params"])[0])
  assert len(flat_hf) > 10
  for k, v in flat_hf.items():
    np.testing.assert_array_equal(np.asarray(flat_warm[k]), np.asarray(v))
    assert flat_warm[k].sharding == flat_init[k].sharding  # placed like the initialised params
  word = [k for k in flat_hf if "word_embeddings" in jax.tree_util.keystr(k)][0]
  assert not np.array_equal(np.asarray(flat_init[word]), np.asarray(flat_hf[word]))
  out = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert out["status"] == "done" and out["step"] == 1
  # A checkpoint of another family is refused, naming the config key.
  other = tiny_config("albert", steps=1)
  other.init.hf_checkpoint = str(tmp_path / "hf")
  with pytest.raises(ValueError, match="holds a bert model but config.model.family='albert'"):
    starts.from_hf(other, state["params"])
