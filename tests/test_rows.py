"""Row records (bert_jax.data.rows): the same batches as building the rows, resume, eval, checks,
and the graph-only source served by tf.data service (in-process, and a worker in another process
that imports nothing of bert_jax)."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from test_data_pipeline import B, KEYS  # noqa: E402
from test_data_pipeline import env as data_env  # noqa: E402,F401  # the corpus and tokenizer fixture

from bert_jax.data import pipeline  # noqa: E402
from bert_jax.data import rows  # noqa: E402


@pytest.fixture(scope="module")
def env(data_env, tmp_path_factory):  # pylint: disable=redefined-outer-name
  c, tok = data_env
  out = str(tmp_path_factory.mktemp("rows") / "wiki")
  meta = rows.write(c, tok, out, epochs=2, process_count=2)
  return c, tok, out, meta


def take(it, n):
  out = list(itertools.islice(it, n))
  it.close()
  return out


def assert_same(xs, ys):
  assert len(xs) == len(ys)
  for i, (x, y) in enumerate(zip(xs, ys)):
    for k in KEYS:
      np.testing.assert_array_equal(x[k], y[k], err_msg=f"batch {i}, {k}")


def with_rows(env, **kw):
  c = env[0].copy_and_resolve_references()
  c.update({"rows_path": env[2], **kw})
  return c


def test_records_give_the_batches_the_rows_would(env):
  c, tok, _, meta = env
  per_epoch = sum(meta["splits"]["train"]["records"][1]) // 2
  n = per_epoch // B + 3  # past the first epoch's end: the second record
  kw = dict(batch_size=B, process_index=1, process_count=2)
  built = take(pipeline.train_iterator(c, tok, **kw), n)
  assert_same(built, take(pipeline.train_iterator(with_rows(env), tok, **kw), n))
  # Masking several pieces at once keeps the order.
  assert_same(built, take(pipeline.train_iterator(with_rows(env, mask_parallelism=3), tok, **kw), n))
  # Resume inside the second epoch's record: whole records skipped, then rows of one.
  start = n - 2
  assert start * B > per_epoch and start * B % per_epoch
  assert_same(built[start:], take(pipeline.train_iterator(with_rows(env), tok, start_batch=start, **kw), 2))
  ev = dict(batch_size=B, process_index=1, process_count=2, num_batches=2)
  assert_same(list(pipeline.eval_iterator(c, tok, **ev)),
              list(pipeline.eval_iterator(with_rows(env), tok, **ev)))


def test_records_start_over_past_the_end(env):
  _, tok, _, meta = env
  total = sum(meta["splits"]["train"]["records"][0])
  kw = dict(batch_size=B, process_index=0, process_count=2)
  first = take(pipeline.train_iterator(with_rows(env), tok, **kw), 2)
  again = take(pipeline.train_iterator(with_rows(env), tok, start_batch=total, **kw), 2)  # row 16 * total
  assert_same(first, again)


@pytest.mark.parametrize("overrides,key", [
    (dict(instances="sop"), "config.data.instances"),
    (dict(max_seq_length=128), "config.data.max_seq_length"),
    (dict(seed=7), "config.data.seed"),
    (dict(rows_path="/nonexistent/rows"), "does not exist"),
])
def test_records_that_do_not_match_are_refused(env, overrides, key):
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    pipeline.train_iterator(with_rows(env, **overrides), env[1], batch_size=B, process_count=2)


def test_wrong_host_count_and_python_source_with_service_are_refused(env):
  with pytest.raises(ValueError, match="process_count=3"):
    pipeline.train_iterator(with_rows(env), env[1], batch_size=B, process_count=3)
  c = env[0].copy_and_resolve_references()
  c.service_address = "grpc://localhost:1"
  with pytest.raises(ValueError, match="needs config.data.rows_path"):
    pipeline.train_iterator(c, env[1], batch_size=B)
  with pytest.raises(ValueError, match="mask_parallelism"):
    pipeline.train_iterator(with_rows(env, mask_parallelism=0), env[1], batch_size=B, process_count=2)
  with pytest.raises(ValueError, match="exists"):
    rows.write(env[0], env[1], env[2], epochs=1, process_count=2)


WORKER = """
import sys, tensorflow as tf
service = tf.data.experimental.service
service.WorkerServer(service.WorkerConfig(dispatcher_address=sys.argv[1])).join()
"""


@pytest.mark.parametrize("worker", ["in_process", pytest.param("subprocess", marks=pytest.mark.slow)])
def test_tf_data_service_serves_the_same_batches(env, worker):
  """The graph-only pipeline runs on a tf.data service worker; the subprocess worker imports only
  TensorFlow, so nothing of the dataset can be Python of this process."""
  service = tf.data.experimental.service
  dispatcher = service.DispatchServer()
  address = dispatcher.target.split("://")[1]
  proc = None
  if worker == "in_process":
    keep = service.WorkerServer(service.WorkerConfig(dispatcher_address=address))  # noqa: F841
  else:
    proc = subprocess.Popen([sys.executable, "-c", WORKER, address],
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  try:
    kw = dict(batch_size=B, process_index=0, process_count=2, start_batch=3)
    local = take(pipeline.train_iterator(with_rows(env), env[1], **kw), 4)
    served = take(pipeline.train_iterator(with_rows(env, service_address=dispatcher.target), env[1], **kw), 4)
    assert_same(local, served)
  finally:
    if proc is not None:
      proc.kill()
      proc.wait()


@pytest.mark.slow
def test_console_entry_point_writes_the_same_records(env, tmp_path):
  """`bert-jax-rows` (rows.cli) with the run's config flags writes the records rows.write does."""
  import shutil  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  from bert_jax import configs  # pylint: disable=g-import-not-at-top
  c, tok, out, _ = env
  workdir = tmp_path / "run"
  shutil.copytree(os.path.dirname(tok.path), workdir / "tokenizer")  # the run's trained tokenizer
  base = configs.load("bert.py:tiny,runlocal").data
  overrides = []
  for section, have, default in [("", c, base), ("tokenizer.", c.tokenizer, base.tokenizer)]:
    for k, v in have.items():
      if not isinstance(v, config_dict.ConfigDict) and v != default[k]:
        overrides.append(f"--config.data.{section}{k}={v}")
  mine = str(tmp_path / "rows" / "wiki")
  r = subprocess.run([sys.executable, "-c", "from bert_jax.data import rows; rows.cli()",
                      "--config=bert.py:tiny,runlocal", f"--workdir={workdir}", f"--output={mine}",
                      "--epochs=2", "--process_count=2", *overrides],
                     capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2"))
  assert r.returncode == 0, r.stderr[-3000:]
  assert "--config.data.rows_path=" in r.stdout
  theirs = sorted(os.listdir(os.path.dirname(out)))
  assert sorted(os.listdir(os.path.dirname(mine))) == theirs and len(theirs) > 2
  assert open(out + ".json").read() == open(mine + ".json").read()
  for name in theirs:
    if name.endswith(".tfrecord"):  # the same pieces (Example bytes need not be canonical)
      read = lambda d: [{k: f.bytes_list.value[0] for k, f in tf.train.Example.FromString(
          rec.numpy()).features.feature.items()} for rec in tf.data.TFRecordDataset(os.path.join(d, name))]
      a, b = read(os.path.dirname(out)), read(os.path.dirname(mine))
      assert len(a) == len(b) > 0 and all(x == y for x, y in zip(a, b)), name
