"""docs/pod.md's recipe (BERT-base on English Wikipedia on a v4-32), run from the page itself.

The bash block of the recipe is read from the page and run by bash with stand-ins for what reaches
the cloud: every command of the block is a shell function here that logs itself and then runs
the real tool on local stand-ins (the bucket is a local folder; `tfds build` builds a small
stand-in dataset with the real TFDS command line; the AOT compile gets a tiny model; the launcher
runs with --dry-run). A command the stand-ins do not know fails the test, so the page and this
test cannot drift apart. The fast test runs the launcher commands for real (dry run) and only
records the others; the slow one runs everything, then the job's flags ($JOB) with
`bert-jax-train` for a few steps on the stand-in records."""

import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

from bert_jax import configs
from bert_jax import flops

PAGE = ROOT / "docs" / "pod.md"
VENV_BIN = pathlib.Path(sys.executable).parent
BUCKET = "gs://YOUR_BUCKET"

# The stand-in TFDS dataset `tfds build` makes in place of wikipedia/20230601.en: articles with a
# "text" feature, as TFDS's wikipedia has.
STANDIN_BUILDER = textwrap.dedent('''\
    import random
    import tensorflow_datasets as tfds

    class WikiStandin(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"title": tfds.features.Text(), "text": tfds.features.Text()}))

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

      def _generate_examples(self):
        rng = random.Random(0)
        words = [a + b for a in ("al", "be", "co", "de", "en", "fo", "ga", "hi", "io", "ju")
                 for b in ("ta", "ro", "ne", "mi", "sa", "lo", "pe", "du")]
        for i in range(120):
          paras = [". ".join(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize()
                             for _ in range(rng.randint(2, 5))) + "." for _ in range(3)]
          yield i, {"title": f"Article {i}", "text": "\\n\\n".join(paras)}
    ''')

# The tfds command line imports apache_beam and mlcroissant when it starts (class definitions only);
# building a dataset that does not use Beam needs neither, so stand-ins let the real CLI run here.
IMPORT_STUB = textwrap.dedent('''\
    class _Any:
      def __init__(self, *a, **k): pass
      def __class_getitem__(cls, item): return cls
      def __getattr__(self, name): return _Any
    def __getattr__(name):
      if name.startswith("__"): raise AttributeError(name)
      return _Any
    ''')

TINY = ("--config.model.hidden_size=32 --config.model.num_hidden_layers=1 --config.model.num_attention_heads=2 "
        "--config.model.intermediate_size=64")

# Bash functions standing in for the recipe's commands. Each logs its command line to $RECIPE_LOG;
# with HEAVY=1 it runs the real tool on the stand-ins, else (except the launcher) it only logs.
PRELUDE = r'''
set -euo pipefail
local_args() {  # the arguments with the bucket mapped to the local stand-in folder
  ARGS=()
  for a in "$@"; do ARGS+=("${a//gs:\/\/YOUR_BUCKET/$STANDIN_BUCKET}"); done
}
tfds() {
  printf 'tfds %s\n' "$*" >> "$RECIPE_LOG"
  [[ $1 == build && $2 == wikipedia/20230601.en ]] || { echo "unknown: tfds $*" >&2; return 1; }
  local_args "${@:3}"
  [[ $HEAVY == 1 ]] || return 0
  (cd "$STANDIN_DIR" && PYTHONPATH="$STANDIN_DIR/stubs" "$VENV_BIN/tfds" build wiki_standin.py "${ARGS[@]}")
}
bert-jax-preprocess() {
  printf 'bert-jax-preprocess %s\n' "$*" >> "$RECIPE_LOG"
  local_args "$@"
  [[ $HEAVY == 1 ]] || return 0
  "$VENV_BIN/bert-jax-preprocess" "${ARGS[@]}" --config.data.tfds_name=wiki_standin --num_workers=1 \
      --num_shards=4 --config.data.tokenizer.vocab_size=150 --config.data.tokenizer.train_sentences=2000
}
python() {
  printf 'python %s\n' "$*" >> "$RECIPE_LOG"
  if [[ $1 == launch/tpu_vm.py ]]; then
    "$VENV_BIN/python" launch/tpu_vm.py --dry-run "${@:2}" >> "$LAUNCH_OUT"
  elif [[ $1 == -m && $2 == bert_jax.benchmarks.aot_compile ]]; then
    [[ $HEAVY == 1 && -n $AOT_TOPOLOGY ]] || return 0
    "$VENV_BIN/python" -m bert_jax.benchmarks.aot_compile "${@:3}" $TINY --topology=$AOT_TOPOLOGY \
        --config.train.batch_size=32 > "$STANDIN_DIR/aot.txt"
  else
    echo "unknown: python $*" >&2; return 1
  fi
}
'''


def recipe_block() -> str:
  """The bash block under '## Recipe' in docs/pod.md."""
  text = PAGE.read_text()
  section = text.split("## Recipe", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
  assert len(blocks) == 1, "the recipe is one bash block"
  return blocks[0]


def recipe_commands(block: str) -> list[str]:
  """Its commands: continuation lines joined, comments and blank lines left out."""
  out, pending = [], ""
  for line in block.splitlines():
    if not pending and (not line.strip() or line.lstrip().startswith("#")):
      continue
    pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
    if not line.endswith("\\"):
      out.append(" ".join(pending.split()))
      pending = ""
  return out


def run_recipe(tmp_path, heavy: bool, aot_topology: str = ""):
  d = tmp_path / "standin"
  (d / "stubs" / "apache_beam").mkdir(parents=True)
  (d / "stubs" / "mlcroissant").mkdir()
  for m in ("apache_beam", "mlcroissant"):
    (d / "stubs" / m / "__init__.py").write_text(IMPORT_STUB)
  (d / "wiki_standin.py").write_text(STANDIN_BUILDER)
  log, launch_out = tmp_path / "recipe.log", tmp_path / "launch.txt"
  log.write_text("")
  launch_out.write_text("")
  script = PRELUDE + recipe_block() + '\nprintf "%s\\n" $JOB > "$STANDIN_DIR/job_args"\n'
  env = dict(os.environ, RECIPE_LOG=str(log), LAUNCH_OUT=str(launch_out), STANDIN_DIR=str(d),
             STANDIN_BUCKET=str(tmp_path / "bucket"), VENV_BIN=str(VENV_BIN), HEAVY="1" if heavy else "0",
             AOT_TOPOLOGY=aot_topology, TINY=TINY, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  r = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
  return log.read_text().splitlines(), launch_out.read_text(), (d / "job_args").read_text().split(), d


def test_every_recipe_command_runs_and_the_launcher_prints_the_slice(tmp_path):
  commands = recipe_commands(recipe_block())
  ran, launch, job, _ = run_recipe(tmp_path, heavy=False)
  not_assignments = [c for c in commands if not re.match(r"[A-Z]+=", c)]
  assert len(ran) == len(not_assignments) == 6, (ran, not_assignments)
  assert [c.split()[0] for c in ran] == ["tfds", "bert-jax-preprocess", "python", "python", "python", "python"]
  # The launch: a spot v4-32 in a zone that offers v4, the job's flags verbatim to every worker.
  assert "gcloud compute tpus tpu-vm create bert-base --zone=us-central2-b --accelerator-type=v4-32 " \
         "--version=tpu-ubuntu2204-base --spot" in launch
  start = shlex.split(next(line for line in launch.splitlines() if "setsid" in line))[-1]
  wrapper = shlex.split(start.split("setsid nohup bash -c ", 1)[1])[0]  # what each worker runs, detached
  assert ".venv/bin/bert-jax-train " + shlex.join(job) in wrapper
  assert job[:3] == ["--config=configs/bert.py:base", f"--workdir={BUCKET}/bert_base_wiki",
                     "--config.model.dtype=bfloat16"]
  assert f"--config.data.tfrecord_glob={BUCKET}/data/wiki-*" in job
  assert "Warning" not in launch
  # The preprocessor writes where the job reads, with the same workdir (its tokenizer).
  pre = next(c for c in ran if c.startswith("bert-jax-preprocess"))
  assert f"--output={BUCKET}/data/wiki " in pre and f"--workdir={BUCKET}/bert_base_wiki " in pre


def test_recipe_cost_is_the_tables_estimate():
  """17.9 TFLOP per step, 8.1 ms at 50% MFU of 16 v4 chips, 2.3 h for 1M steps: 36 chip-hours."""
  c = configs.load("bert.py:base")
  step_flops = flops.train_step_flops(c)
  seconds = step_flops / (16 * 275e12 * 0.5)
  hours = seconds * c.train.num_steps / 3600
  text = " ".join(PAGE.read_text().split())
  assert f"{step_flops / 1e12:.1f} TFLOP per step of 256 x 128" in text
  assert f"a step takes {seconds * 1e3:.1f} ms" in text and f"{hours:.1f} hours" in text
  assert f"**{16 * hours:.0f} chip-hours** (16 chips x {hours:.2f} h)" in text
  assert c.train.batch_size == 256 and c.data.max_seq_length == 128 and c.train.num_steps == 1_000_000


@pytest.mark.slow  # the tfds CLI, the preprocessor, an AOT compile and a training run: minutes
def test_recipe_end_to_end_on_stand_ins(tmp_path):
  topology = "v4:2x2x4" if importlib.util.find_spec("libtpu") else ""
  ran, _, job, d = run_recipe(tmp_path, heavy=True, aot_topology=topology)
  assert len(ran) == 6
  bucket = tmp_path / "bucket"
  assert (bucket / "tfds" / "wiki_standin" / "1.0.0" / "dataset_info.json").exists()
  records = sorted((bucket / "data").glob("wiki-*"))
  assert len(records) == 4 and (bucket / "data" / "wiki.json").exists()
  assert any((bucket / "bert_base_wiki" / "tokenizer").iterdir())
  if topology:
    aot = (d / "aot.txt").read_text()
    assert "v4:2x2x4: 16 devices" in aot and "fits: peak" in aot and "of 32.00 GiB per device" in aot
  # The job's own flags, on the stand-in records and tokenizer, a tiny model for 2 steps.
  args = [a.replace(BUCKET, str(bucket)) for a in job]
  r = subprocess.run([str(VENV_BIN / "bert-jax-train"), *args, *TINY.split(), "--config.train.batch_size=8",
                      "--config.train.num_steps=2", "--config.optimizer.warmup_steps=1",
                      "--config.eval.every_steps=2", "--config.eval.num_batches=1", "--config.log.every_steps=1",
                      "--config.checkpoint.every_steps=2", "--config.data.stream_window_docs=50"],
                     cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                     timeout=1200)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
  assert (bucket / "bert_base_wiki" / "checkpoints").is_dir()


def test_pod_table_has_a_row_per_cell_with_the_slices_as_jax_runs_them():
  """docs/pod.md's table: one row per aot_compile.TABLE cell, v4-128 as 64 devices of 32 GiB
  (megacore), v5e-256 as 256 devices of 16 GiB; the command that prints it is on the page."""
  from bert_jax.benchmarks import aot_compile  # pylint: disable=g-import-not-at-top
  text = PAGE.read_text()
  assert "python -m bert_jax.benchmarks.aot_compile --table" in text
  rows = [line for line in text.splitlines() if line.startswith("| ") and "x 512, fsdp" in line]
  assert len(rows) == len(aot_compile.TABLE)
  for (name, topo, over), row in zip(aot_compile.TABLE, rows):
    assert row.startswith(f"| {name} ") and f"`{topo}`" in row, row
    assert f"{over['train.batch_size']} x 512" in row
    devices, gib = {"v4:4x4x4": (64, "32.00"), "v5e:16x16": (256, "16.00")}[topo]
    assert f"{devices} chips, {devices} devices" in row and f"of {gib} GiB per device" in row, row
