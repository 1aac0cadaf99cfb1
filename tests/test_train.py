"""The loop: bad configs fail early, grad accumulation, non-finite skipping, flags, two processes."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import conftest  # noqa: F401  # 8 fake CPU devices
import jax
import numpy as np
import pytest

from bert_jax.data import synthetic
from bert_jax import state as state_lib
from bert_jax import steps as steps_lib
from bert_jax import train
from bert_jax.tasks import base
from bert_jax.tasks import pretraining
from bert_jax.tasks import registry
from train_testlib import ROOT, tiny_config, tree_max_diff


def _no_compile(monkeypatch):
  def boom(*a, **k):
    raise AssertionError("compiled before validating")
  monkeypatch.setattr(steps_lib, "compile_steps", boom)


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.mesh.update(data=3, fsdp=1, tensor=1), "needs 3 devices but 8"),
    (lambda c: c.train.update(batch_size=12), "not divisible by the data-parallel size 8"),
    (lambda c: c.train.update(batch_size=16, grad_accum_steps=3), "grad_accum_steps=3"),
    (lambda c: c.optimizer.update(name="adagrad"), "config.optimizer.name"),
    (lambda c: c.data.update(source="text", text_glob="no/such/dir/*.txt"), "missing corpus"),
    (lambda c: c.mesh.update(preset="zero"), "config.mesh.preset"),
    (lambda c: c.model.update(hidden_size=33), "config.model"),
])
def test_bad_config_fails_before_compiling(edit, match, tmp_path, monkeypatch):
  _no_compile(monkeypatch)
  c = tiny_config("bert")
  edit(c)
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def _equal_weight_batch(config, index, rows):
  """Every row has all P predictions real, so micro-batch means average to the full-batch mean."""
  b = synthetic.batch(config, index, rows, 0)
  P = b["masked_lm_positions"].shape[1]
  pos = np.tile(np.arange(1, P + 1, dtype=np.int32), (rows, 1))
  b["masked_lm_positions"] = pos
  b["masked_lm_weights"] = np.ones_like(b["masked_lm_weights"])
  b["masked_lm_ids"] = np.take_along_axis(b["input_ids"], pos, 1)
  b["input_mask"][:, :P + 2] = 1
  return b


@pytest.mark.slow  # moved from the fast suite (10-minute budget)
def test_grad_accumulation_matches_full_batch():
  results = []
  for accum in (1, 4):
    c = tiny_config("bert", batch=32)
    c.model.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    c.train.grad_accum_steps = accum
    s = state_lib.setup(c, registry.get_task(c))
    step, _, init = steps_lib.compile_steps(c, s)
    state = init(jax.random.PRNGKey(0))
    with steps_lib.mesh_context(s.mesh, s.rules):
      for i in range(2):
        state, m = step(state, steps_lib.to_global(_equal_weight_batch(c, i, 32), s))
    results.append((jax.device_get(state["params"]), float(np.asarray(m["loss"])[0] / np.asarray(m["loss"])[1])))
  (p1, l1), (p4, l4) = results
  assert abs(l1 - l4) < 1e-5
  assert tree_max_diff(p1, p4) < 1e-5


def test_nonfinite_steps_are_skipped_and_stop_the_run(tmp_path, monkeypatch):
  real = pretraining.Pretraining.inputs

  def poisoned(task, workdir, start_batch):
    it, eval_fn = real(task, workdir, start_batch)

    def gen():
      for i, b in enumerate(it, start=start_batch):
        if i >= 2:  # from the third step on, the loss is NaN
          b = dict(b, masked_lm_weights=b["masked_lm_weights"] * np.nan)
        yield b
    return gen(), eval_fn

  c = tiny_config("bert", steps=10)
  c.checkpoint.every_steps = 2
  c.train.max_consecutive_nonfinite = 3
  c.train.halt_after_steps = 2
  good = train.train_and_evaluate(c, str(tmp_path / "good"))
  monkeypatch.setattr(pretraining.Pretraining, "inputs", poisoned)
  c.train.halt_after_steps = 0
  out = train.train_and_evaluate(c, str(tmp_path / "bad"))
  assert out["status"] == "nonfinite"
  assert int(out["state"]["skipped"]) >= 3 and int(out["state"]["nonfinite"]) >= 3
  assert tree_max_diff(out["state"]["params"], good["state"]["params"]) == 0.0  # updates were skipped
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(out["state"]["params"])))
  assert max(out["checkpoint_steps"]) <= out["step"] - 1  # no checkpoint of the failing tail at the stop


def _run_main(*args, timeout=120):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "bert_jax.main", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_main_rejects_unknown_key_and_wrong_type(tmp_path):
  base = ["--config=configs/bert.py:tiny,runlocal", f"--workdir={tmp_path}"]
  r = _run_main(*base, "--config.train.bogus_key=1")
  assert r.returncode != 0 and "bogus_key" in r.stderr
  r = _run_main(*base, "--config.train.batch_size=lots")
  assert r.returncode != 0 and "batch_size" in r.stderr


TWO_PROC = textwrap.dedent("""
    import os, sys
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=%d" % (4 // nproc)
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    if nproc > 1:
      jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)
    sys.path.insert(0, "tests")
    import numpy as np
    from train_testlib import tiny_config
    from bert_jax import train
    c = tiny_config("bert", steps=3)
    c.mesh.update(preset="fsdp", data=2, fsdp=-1, tensor=1)
    res = train.train_and_evaluate(c, out + "/work")
    flat = jax.tree.leaves(jax.tree.map(lambda x: np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True)), res["state"]["params"]))
    if pid == 0:
      np.savez(out + "/params.npz", *flat)
      open(out + "/eval.txt", "w").write(repr(res["eval"]["mlm_loss"]))
""")


PREEMPT_PROC = textwrap.dedent("""
    import json, os, signal, sys, threading
    pid, port, out, steps, kill_after = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    sys.path.insert(0, "tests")
    from train_testlib import tiny_config
    from bert_jax import train
    c = tiny_config("bert", steps=steps)
    c.mesh.update(preset="fsdp", data=2, fsdp=-1, tensor=1)
    c.log.every_steps = 10**6
    c.eval.every_steps = 10**6
    if kill_after > 0 and pid == 1:  # the preemption notice reaches this host only
      threading.Timer(kill_after, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    res = train.train_and_evaluate(c, out + "/work")
    json.dump({"status": res["status"], "step": res["step"], "saved": res["checkpoint_steps"]},
              open(out + f"/result{pid}.json", "w"))
""")


@pytest.mark.slow
def test_sigterm_on_one_host_stops_every_host_at_the_same_step(tmp_path):
  """Two processes (jax.distributed); SIGTERM reaches process 1 only, mid-run. Both must stop at
  the same step with a checkpoint there (no hang in the collective save), then resume from it."""
  script = tmp_path / "run.py"
  script.write_text(PREEMPT_PROC)
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)

  def launch(steps, kill_after):
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(i), port, str(tmp_path), str(steps),
                               str(kill_after)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    return [json.loads((tmp_path / f"result{i}.json").read_text()) for i in range(2)], outs

  (a, b), _ = launch(10**6, kill_after=25.0)
  assert a["status"] == b["status"] == "preempted", (a, b)
  assert a["step"] == b["step"] > 0 and a["step"] in a["saved"], (a, b)
  k = a["step"]
  (a2, b2), outs = launch(k + 2, kill_after=0)
  assert a2["status"] == b2["status"] == "done" and a2["step"] == b2["step"] == k + 2, (a2, b2)
  assert f"Resumed from step {k}" in outs[0], outs[0][-3000:]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  """2 processes x 2 CPU devices (jax.distributed, gloo collectives) == 1 process x 4 devices."""
  script = tmp_path / "run.py"
  script.write_text(TWO_PROC)
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  port = str(_free_port())
  one = tmp_path / "one"
  two = tmp_path / "two"
  procs = [subprocess.Popen([sys.executable, str(script), str(i), "2", port, str(two)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  single = subprocess.run([sys.executable, str(script), "0", "1", "0", str(one)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert single.returncode == 0, single.stderr[-3000:]
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  a, b = np.load(one / "params.npz"), np.load(two / "params.npz")
  assert len(a.files) == len(b.files) > 0
  for k in a.files:
    np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6)
  assert float((one / "eval.txt").read_text()) == pytest.approx(float((two / "eval.txt").read_text()), abs=1e-6)
  assert "Resumed" not in outs[0] and (two / "work" / "checkpoints").exists()


@pytest.mark.slow  # moved from the fast suite (10-minute budget)
def test_electra_discriminator_learns_replaced_tokens():
  """On one fixed synthetic batch (arithmetic rows: a replacement breaks the pattern) the
  discriminator must beat the all-real baseline: labels, sampling and gradients line up."""
  c = tiny_config("electra", steps=200, batch=16)
  c.model.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  c.optimizer.learning_rate = 3e-3
  s = state_lib.setup(c, registry.get_task(c), devices=jax.devices()[:1])
  step, _, init = steps_lib.compile_steps(c, s)
  state = init(jax.random.PRNGKey(0))
  batch = steps_lib.to_global(synthetic.batch(c, 0, 16, 0), s)
  with steps_lib.mesh_context(s.mesh, s.rules):
    for _ in range(100):
      state, m = step(state, batch)
  v = base.reduce_metrics(m)
  assert v["disc_accuracy"] > 1 - v["disc_replaced_fraction"] + 0.03, v
  assert v["disc_recall"] > 0.5 and v["gen_accuracy"] > 0.3, v


@pytest.mark.slow  # moved from the fast suite (10-minute budget)
def test_frozen_state_reaches_the_loss_and_is_never_trained_nor_saved(tmp_path, monkeypatch):
  """The contract's room for a teacher: a task's frozen_params() arrive in loss() on the
  devices, get no optimizer state, and stay out of the checkpoint."""
  class Scaled(pretraining.Pretraining):
    def frozen_params(self):
      return {"teacher_scale": np.full((8,), 3.0, np.float32)}

    def loss(self, params, batch, rng, deterministic=False, frozen=None):
      loss, metrics = super().loss(params, batch, rng, deterministic)
      scaled = loss * frozen["teacher_scale"][0]
      return scaled, dict(metrics, scaled=base.pair(scaled, 1.0))

  monkeypatch.setattr(registry, "get_task", Scaled)
  train._SETUP_CACHE.clear()  # pylint: disable=protected-access
  c = tiny_config("bert", steps=2)
  c.log.every_steps = 1
  out = train.train_and_evaluate(c, str(tmp_path))
  train._SETUP_CACHE.clear()  # pylint: disable=protected-access
  for _, values in out["history"]:
    np.testing.assert_allclose(values["scaled"], 3.0 * values["loss"], rtol=1e-5)
  assert "teacher_scale" not in str(jax.tree_util.tree_structure(out["state"]))
