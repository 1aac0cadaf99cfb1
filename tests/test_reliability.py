"""Reliability: no resume of another model over a run's checkpoints, a corrupt checkpoint set aside
and replaced, bad corpora and tokenizers refused naming the file, every data-config error before
any compilation, reproducible tokenizer fingerprints, no PyTorch import and a warm restart."""

import gzip
import hashlib
import os
import pathlib
import subprocess
import sys
import textwrap

import conftest  # noqa: F401  # 8 fake CPU devices
import jax
import numpy as np
import pytest

from bert_jax import checkpointing
from bert_jax import state as state_lib
from bert_jax import train
from bert_jax.data import checks
from bert_jax.tasks import pretraining
from bert_jax.tasks import registry
from train_testlib import ROOT, tiny_config

_COMPILE = "/jax/core/compile/backend_compile_duration"


class _JaxEvents:
  """Counts JAX's compile-pipeline events (trace, lowering, backend compile) while active."""

  def __init__(self):
    self.events: list[str] = []
    self.active = False
    jax.monitoring.register_event_duration_secs_listener(self._on)

  def _on(self, event, duration, **kwargs):
    del duration, kwargs
    if self.active:
      self.events.append(event)

  def __enter__(self):
    self.events, self.active = [], True
    return self

  def __exit__(self, *exc):
    self.active = False

  def count(self, event: str) -> int:
    return self.events.count(event)


@pytest.fixture(scope="module")
def jax_events():
  return _JaxEvents()


def _snapshot(directory: pathlib.Path) -> dict[str, str]:
  """Every file under `directory` (relative path -> sha1 of its bytes)."""
  return {str(p.relative_to(directory)): hashlib.sha1(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


def _sentences(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  words = ["the", "model", "reads", "a", "long", "text", "about", "rivers", "and", "cities", "where",
           "people", "walk", "every", "morning", "before", "work", "starts", "in", "spring"]
  return [" ".join(rng.choice(words, size=rng.integers(5, 12))).capitalize() + "." for _ in range(n)]


def _write_corpus(path: pathlib.Path, docs: int = 60, per_doc: int = 6) -> pathlib.Path:
  sents = _sentences(docs * per_doc)
  path.write_text("\n\n".join("\n".join(sents[i * per_doc:(i + 1) * per_doc]) for i in range(docs)) + "\n")
  return path


def _text_config(corpus: str, tmp_path: pathlib.Path):
  """The tiny model on a text corpus with a small sentencepiece tokenizer trained into the workdir."""
  c = tiny_config("bert", synthetic=False)
  c.data.update(source="text", text_glob=corpus, cache_dir=str(tmp_path / "cache"))
  c.data.tokenizer.update(vocab_size=120, train_sentences=2000)
  return c


# ----------------------------------------------------------------------------------------------
# Every data-config error before anything is traced, compiled, trained or written.
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,match", [
    (dict(mask_rate=0.0), "config.data.mask_rate=0.0"),
    (dict(mask_rate=1.5), "config.data.mask_rate=1.5"),
    (dict(mask_rate=-0.1), "config.data.mask_rate=-0.1"),
    (dict(mask_token_prob=0.5), "mask_token_prob \\+ random_token_prob \\+ keep_token_prob must sum to 1"),
    (dict(masking="span", span_p=0.0), "config.data.span_p=0.0"),
    (dict(masking="ngram", ngram_max=0), "config.data.ngram_max=0"),
    (dict(max_predictions_per_seq=0), "config.data.max_predictions_per_seq=0"),
    (dict(max_seq_length=4, max_predictions_per_seq=2), "config.data.max_seq_length=4"),
    (dict(masking="wordpiece"), "config.data.masking='wordpiece'"),
    (dict(instances="triples"), "config.data.instances='triples'"),
    (dict(source="wiki"), "config.data.source='wiki'"),
    (dict(tokenizer_path="no/such/vocab.txt"), "config.data.tokenizer.path='no/such/vocab.txt'"),
    (dict(source="tfds", tfds_name="no_such_dataset"), "config.data.tfds_name='no_such_dataset'"),
    (dict(source="text", text_glob="no/such/dir/*.txt"), "config.data.text_glob='no/such/dir/\\*.txt' matches no file"),
])
def test_data_config_errors_before_any_compilation(edit, match, tmp_path, jax_events):
  c = tiny_config("bert", synthetic=False)
  edit = dict(edit)
  if edit.get("source") == "tfds":
    c.data.tfds_data_dir = str(tmp_path / "tfds")
  if "tokenizer_path" in edit:
    c.data.tokenizer.update(path=edit.pop("tokenizer_path"), kind="wordpiece")
  c.data.update(edit)
  with jax_events, pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert jax_events.events == []  # nothing traced, lowered or compiled
  assert not (tmp_path / "run").exists()  # no tokenizer, no checkpoints/, nothing


@pytest.mark.parametrize("name", ["bert.py:tiny,runlocal", "bert.py:base", "albert.py:base,runlocal",
                                  "electra.py:small,runlocal", "electra.py:large", "finetune.py:sst2"])
def test_shipped_configs_pass_the_checks(name):
  from bert_jax import configs  # pylint: disable=g-import-not-at-top
  c = configs.load(name)
  registry.task_class(c)  # the objective name
  pretraining.validate(c.objective, c.model, c.data)
  checks.validate(c.data)


def test_strategies_are_defined_once():
  from bert_jax.data import masking  # pylint: disable=g-import-not-at-top
  assert masking.STRATEGIES is checks.MASKING_STRATEGIES


# ----------------------------------------------------------------------------------------------
# Bad corpora and tokenizer files: refused naming the file (and the key), before compiling,
# leaving a fresh workdir empty.
# ----------------------------------------------------------------------------------------------
def _refused_before_compiling(c, workdir: pathlib.Path, jax_events, *match: str) -> str:
  # setup's abstract state draws a key and makes optax's int32 step counter: two tiny eager ops,
  # compiled here once so that the count below sees the model's and the steps' compilations only.
  jax.random.PRNGKey(0)
  jax.numpy.zeros((), jax.numpy.int32)
  with jax_events, pytest.raises(ValueError) as info:
    train.train_and_evaluate(c, str(workdir))
  message = str(info.value)
  for m in match:
    assert m in message, message
  assert jax_events.count(_COMPILE) == 0, jax_events.events
  assert not workdir.exists(), sorted(workdir.rglob("*"))  # no tokenizer, checkpoints/ nor compilation cache
  return message


def test_binary_corpus_refused_naming_the_file(tmp_path, jax_events):
  corpus = tmp_path / "corpus.txt"
  corpus.write_bytes(np.random.default_rng(0).integers(0, 256, 60_000, dtype=np.uint8).tobytes())
  _refused_before_compiling(_text_config(str(corpus), tmp_path), tmp_path / "run", jax_events,
                            str(corpus), "config.data.max_bad_line_fraction", "config.data.text_glob")


def test_empty_corpus_refused_naming_the_file(tmp_path, jax_events):
  corpus = tmp_path / "empty.txt"
  corpus.write_text("\n\n")
  _refused_before_compiling(_text_config(str(corpus), tmp_path), tmp_path / "run", jax_events,
                            str(corpus), "config.data.text_glob", "config.data.tokenizer.path")


def test_a_corpus_too_small_to_split_is_refused_before_the_tokenizer_is_trained(tmp_path, jax_events):
  corpus = tmp_path / "one_word.txt"
  corpus.write_text("hello\n")  # one document: eval_fraction holds it out, no train document is left
  _refused_before_compiling(_text_config(str(corpus), tmp_path), tmp_path / "run", jax_events,
                            "No train documents", "1 documents", "config.data.eval_fraction")


@pytest.mark.parametrize("name,content", [
    ("spm.model", b"this is not a sentencepiece model\n" * 20),
    ("vocab.txt", b"[PAD]\n[UNK]\n\xff\xfe\x00garbage\n"),
    ("vocab.txt", b"hello\nworld\n"),
], ids=["garbage_spm_model", "binary_vocab", "vocab_without_specials"])
def test_broken_tokenizer_file_refused_naming_it(name, content, tmp_path, jax_events):
  path = tmp_path / name
  path.write_bytes(content)
  c = _text_config(str(_write_corpus(tmp_path / "corpus.txt")), tmp_path)
  c.data.tokenizer.update(path=str(path), kind="wordpiece" if name.endswith(".txt") else "sentencepiece")
  _refused_before_compiling(c, tmp_path / "run", jax_events, str(path), "config.data.tokenizer.path")


def test_few_bad_lines_are_counted_many_refused_and_gzip_read_as_text(tmp_path):
  from bert_jax.data import corpora  # pylint: disable=g-import-not-at-top  # TF
  plain = _write_corpus(tmp_path / "corpus.txt")  # 419 lines
  lines = plain.read_bytes().split(b"\n")
  lines[3] = b"caf\xe9 au lait"  # one Latin-1 line: counted
  plain.write_bytes(b"\n".join(lines))
  gz = tmp_path / "corpus.txt.gz"
  gz.write_bytes(gzip.compress(plain.read_bytes()))
  stats_plain, stats_gz = {}, {}
  docs_plain = list(corpora.read_text_documents([str(plain)], "sentence_per_line", stats_plain))
  docs_gz = list(corpora.read_text_documents([str(gz)], "sentence_per_line", stats_gz))
  assert len(docs_plain) == 60 and docs_gz == docs_plain
  assert stats_plain == stats_gz == {"invalid_utf8_lines": 1}
  for k, i in enumerate(range(8, 99, 7)):  # 13 more sentences (never a blank line): 14 / 419 > 1%
    lines[i] = b"caf\xe9." if k % 2 else b"A\x00B\x00C."  # Latin-1, or NULs (as UTF-16 text has)
  bad = tmp_path / "bad.txt.gz"
  bad.write_bytes(gzip.compress(b"\n".join(lines)))
  with pytest.raises(ValueError, match="bad.txt.gz does not look like text: 14 of its 419 lines"):
    list(corpora.read_text_documents([str(bad)], "sentence_per_line", {}))
  assert len(list(corpora.read_text_documents([str(bad)], "sentence_per_line", {}, max_bad_line_fraction=0.05))) == 60


# ----------------------------------------------------------------------------------------------
# Tokenizer fingerprint: the model's content only.
# ----------------------------------------------------------------------------------------------
def test_retrained_tokenizer_has_the_same_fingerprint_and_cache(tmp_path):
  from bert_jax.data import pipeline, tokenizers  # pylint: disable=g-import-not-at-top  # TF
  c = _text_config(str(_write_corpus(tmp_path / "corpus.txt")), tmp_path)
  a = tokenizers.build_or_load(c.data, str(tmp_path / "a"), process_index=0)
  b = tokenizers.build_or_load(c.data, str(tmp_path / "b"), process_index=0)
  assert a.fingerprint() == b.fingerprint()
  assert pathlib.Path(a.path).read_bytes() == pathlib.Path(b.path).read_bytes()
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  proto = sentencepiece_model_pb2.ModelProto.FromString(pathlib.Path(a.path).read_bytes())
  assert proto.trainer_spec.model_prefix == "" and len(proto.pieces) == a.vocab_size  # no temporary path
  for tok in (a, b):
    pipeline.load_corpus(c.data, tok, "train", 0, 1)
  assert len(list((tmp_path / "cache" / "tokenized").glob("*.npz"))) == 1  # one tokenized copy
  from bert_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  preprocess.run(c.data, a, str(tmp_path / "rec" / "docs"), num_shards=2, num_workers=0)
  assert len(preprocess.record_files(str(tmp_path / "rec" / "docs-*"), b)) == 2  # b accepts a's records
  c.data.tokenizer.model_type = "bpe"  # another model: another fingerprint
  other = tokenizers.build_or_load(c.data, str(tmp_path / "c"), process_index=0)
  assert other.fingerprint() != a.fingerprint()
  with pytest.raises(ValueError, match="another tokenizer"):
    preprocess.record_files(str(tmp_path / "rec" / "docs-*"), other)


# ----------------------------------------------------------------------------------------------
# Checkpoints: another model is refused touching nothing; a corrupt newest one is replaced.
# ----------------------------------------------------------------------------------------------
def _run_config():
  c = tiny_config("bert", steps=2)
  c.checkpoint.every_steps = 1
  return c


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
  """A workdir as a finished 2-step run of _run_config leaves it: checkpoints 1 and 2 of its
  train state (written through the loop's Checkpointer, with the loop's meta) and config.json.
  Nothing is compiled: the state's values do not matter to a resume's checks."""
  workdir = tmp_path_factory.mktemp("saved")
  c = _run_config()
  s = state_lib.setup(c, registry.get_task(c))
  state = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), s.abstract)
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"), c.checkpoint)
  for step in (1, 2):
    ckpt.save(step, state, {"step": step, "data_batches": step, "family": c.model.family})
  ckpt.close()
  train.write_config(c, str(workdir))
  return workdir


@pytest.mark.slow
def test_corrupt_newest_checkpoint_is_set_aside_and_replaced(tmp_path, caplog, capsys):
  workdir = tmp_path / "run"
  first = train.train_and_evaluate(_run_config(), str(workdir))
  assert first["checkpoint_steps"] == [1, 2]
  data = [p for p in (workdir / "checkpoints" / "2" / "state").rglob("d/*") if p.is_file()]
  biggest = max(data, key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[:100])  # truncated
  corrupt = _snapshot(workdir / "checkpoints" / "2")
  capsys.readouterr()
  with caplog.at_level("WARNING"):
    out = train.train_and_evaluate(_run_config(), str(workdir))
  assert "step 2" in caplog.text and "unreadable" in caplog.text
  assert "Resumed from step 1" in capsys.readouterr().out
  assert out["step"] == 2 and out["checkpoint_steps"] == [1, 2]
  aside = [p for p in (workdir / "checkpoints").iterdir() if p.name.startswith(f"2{checkpointing.UNREADABLE}")]
  assert len(aside) == 1 and _snapshot(aside[0]) == corrupt  # kept as it was, for inspection
  # The retrained step 2 was saved in its place: a rerun restores it (and has nothing left to do).
  again = train.train_and_evaluate(_run_config(), str(workdir))
  assert again["step"] == 2 and again["checkpoint_steps"] == [1, 2]
  for a, b in zip(jax.tree.leaves(jax.device_get(again["state"])), jax.tree.leaves(jax.device_get(out["state"]))):
    np.testing.assert_array_equal(a, b)


def _wider(c):
  c.model.update(hidden_size=64, intermediate_size=128)
  c.train.num_steps = 4


def _electra(c):
  del c
  e = tiny_config("electra", steps=4)
  e.checkpoint.every_steps = 1
  return e


@pytest.mark.parametrize("change,expect", [
    (_wider, ["params/bert/embeddings/word_embeddings/embedding: shape (128, 32) in the checkpoint, (128, 64)",
              "config.model.hidden_size: 32 there, 64 here"]),
    (_electra, ["model family: 'bert' in the checkpoint, 'electra' in this config",
                "in this config, not in the checkpoint"]),
])
def test_resume_with_another_model_is_refused_touching_nothing(change, expect, saved_run, jax_events):
  c = _run_config()
  c = change(c) or c
  before = _snapshot(saved_run / "checkpoints"), (saved_run / "config.json").read_bytes()
  with jax_events, pytest.raises(checkpointing.CheckpointMismatchError) as info:
    train.train_and_evaluate(c, str(saved_run))
  for e in expect:
    assert e in str(info.value), str(info.value)
  assert "another --workdir" in str(info.value)
  assert (_snapshot(saved_run / "checkpoints"), (saved_run / "config.json").read_bytes()) == before  # unchanged
  assert jax_events.count(_COMPILE) == 0


# ----------------------------------------------------------------------------------------------
# A run's process: no PyTorch, a persistent compilation cache, time to first step in the log.
# ----------------------------------------------------------------------------------------------
_RUN = textwrap.dedent("""
    import sys
    import jax
    from absl import app
    hits = []
    jax.monitoring.register_event_listener(lambda e, **k: hits.append(e) if e.endswith("cache_hits") else None)
    sys.argv = ["bert_jax.main"] + sys.argv[1:]
    from bert_jax import main
    try:
      app.run(main.main)
      code = 0
    except SystemExit as e:
      code = e.code or 0
    print("EXIT", "incomplete" if code == getattr(main, "EXIT_INCOMPLETE", None) else code)
    print("TORCH_IMPORTED", "torch" in sys.modules)
    print("CACHE_HITS", len(hits))
""")


@pytest.mark.slow
def test_run_never_imports_torch_and_restarts_from_the_compilation_cache(tmp_path):
  pytest.importorskip("torch")  # the check means something only where torch is installed
  workdir = tmp_path / "run"
  flags = [f"--workdir={workdir}", "--config=configs/bert.py:tiny,runlocal", "--config.data.source=synthetic",
           "--config.model.num_hidden_layers=1", "--config.model.hidden_size=32",
           "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64",
           "--config.model.vocab_size=128", "--config.data.max_seq_length=16",
           "--config.model.max_position_embeddings=16", "--config.data.max_predictions_per_seq=4",
           "--config.train.batch_size=8", "--config.eval.num_batches=1", "--config.optimizer.warmup_steps=1"]
  # Every compilation is cached (JAX's default skips those under 1 s: a tiny model's may be).
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=str(ROOT),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  outs = []
  for halt in (2, 0):  # a fresh start that stops at step 2 (a preemption), then the restart
    p = subprocess.run([sys.executable, "-c", _RUN, *flags, "--config.train.num_steps=4",
                        f"--config.train.halt_after_steps={halt}", "--config.checkpoint.every_steps=2",
                        "--config.eval.every_steps=2"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and ("EXIT 0" in p.stdout or halt and "EXIT incomplete" in p.stdout), (
        p.stdout[-2000:] + p.stderr[-4000:])
    outs.append(p.stdout)
  for out in outs:
    assert "TORCH_IMPORTED False" in out, out
    assert "First step done" in out and f"compilation cache: {workdir / 'compilation_cache'}" in out, out
  assert "CACHE_HITS 0" in outs[0] and "CACHE_HITS 0" not in outs[1], outs[1]
  assert "Resumed from step 2" in outs[1]
