r"""Entry point (the only file with flags).

  python -m bert_jax.main --config=configs/electra.py:small --workdir=gs://bucket/run1 \
      --config.data.mask_rate=0.25
  python -m bert_jax.main --config=configs/finetune.py:sst2 --workdir=runs/sst2 \
      --config.init.workdir=gs://bucket/run1 --config.finetune.seeds=5

Installed (`pip install .`), the same job is `bert-jax-train --config=bert.py:tiny,runlocal
--workdir=runs/demo` (a packaged config by name, see bert_jax/configs), and fine-tuning is
`bert-jax-finetune --config=finetune.py:sst2 ...` (finetune.py when --config is left out).
`--help` lists the packaged configs and their variants.

Re-running the same command resumes from the newest checkpoint in --workdir; exit status 75 says
the run stopped before its end (a preemption, config.train.halt_after_steps) and continues when
run again. A config or input error (a flag, a config key, a file) is one line naming it, with exit
status 2 and no traceback (`--debug` shows the traceback). On a multi-host
TPU pod slice run the same command on every host (see launch/tpu_vm.py); jax.distributed is
initialised automatically there. On other clusters set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

from bert_jax import cli
from bert_jax import configs
from bert_jax.data import glue

_CONFIG = configs.define_flag(
    "config", "Config file or packaged config name, e.g. configs/bert.py:tiny,runlocal or "
    "bert.py:tiny,runlocal.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints and logs.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of a config or input error (without it: one "
                           "line and exit status 2).")
flags.mark_flags_as_required(["config", "workdir"])

# Exit status of a run that stopped before its end and continues when the same command runs again
# (a preemption notice, config.train.halt_after_steps); launch/tpu_vm.py re-runs on it. (EX_TEMPFAIL)
EXIT_INCOMPLETE = 75
RESUMABLE = ("preempted", "halted")
# A config or input error: one line and this exit status (bert_jax.cli).
EXIT_USAGE = cli.EXIT_USAGE
INPUT_ERRORS = cli.INPUT_ERRORS
HELP_FLAGS = ("-h", "--help", "-help", "-?", "--helpshort")


def _maybe_initialize_distributed() -> None:
  """jax.distributed.initialize() when this is one process of several (must precede any jax use):
  an explicit coordinator, or a cluster as JAX detects it (bert_jax.distributed)."""
  from bert_jax import distributed  # pylint: disable=g-import-not-at-top  # imports jax: after flag parsing

  distributed.maybe_initialize()


# ----------------------------------------------------------------------------------------------
# Errors in one line, and --help.
# ----------------------------------------------------------------------------------------------
def _prog() -> str:
  name = os.path.basename(sys.argv[0] if sys.argv else "")
  return "python -m bert_jax.main" if name in ("main.py", "__main__.py", "") else name


def _refuse(message: str) -> None:
  """Prints `<prog>: error: <message>` in one line and exits with EXIT_USAGE."""
  print(f"{_prog()}: error: {cli.one_line(message)}", file=sys.stderr)
  sys.exit(EXIT_USAGE)


def _innermost(e: BaseException) -> BaseException:
  """The exception a chain of re-raises started from (ml_collections wraps a config file's error
  in a ValueError holding a formatted traceback, absl wraps that again)."""
  seen = set()
  while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return e


def _config_spec(argv: list[str]) -> str | None:
  for i, a in enumerate(argv):
    m = re.match(r"^--?config(?:=(.*))?$", a)
    if m:
      return m.group(1) if m.group(1) is not None else (argv[i + 1] if i + 1 < len(argv) else None)
  return None


def _unknown_key(argv: list[str]) -> str | None:
  """For an override of a key the config lacks (`--config.train.num_stepz=3`): the flag, the key
  and the closest existing keys."""
  spec = _config_spec(argv)
  if spec is None:
    return None
  try:
    config = configs.load(spec)
  except Exception:  # pylint: disable=broad-except  # the config's own error is reported instead
    return None
  for a in argv:
    m = re.match(r"^--?config\.([\w.]+)", a)
    if not m:
      continue
    node, parts = config, m.group(1).split(".")
    for depth, key in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if key not in keys:
        where = ".".join(["config", *parts[:depth]])
        if not keys:
          return f"{a.split('=')[0]}: {where} is a value, not a group of keys; drop '.{'.'.join(parts[depth:])}'."
        close = difflib.get_close_matches(key, keys, n=3)
        hint = (f"did you mean {' or '.join(f'--{where}.{c}' for c in close)}?" if close
                else f"its keys: {', '.join(keys)}.")
        return f"{a.split('=')[0]}: {where} has no key {key!r}; {hint}"
      node = node[key]
  return None


def _flag_error(e: Exception, argv: list[str]) -> str:
  """One line for an error of flag parsing: the flag, what is wrong and the fix."""
  inner = _innermost(e)
  if isinstance(e, AttributeError) or isinstance(inner, (AttributeError, KeyError)):
    found = _unknown_key(argv)
    if found:
      return found
  text = re.sub(r"^flag (--)", r"\1", str(e))
  m = re.match(r"^--([\w.]+)=(.*?): (.*)$", text.splitlines()[0] if text else "")
  if m and "must have a value other than None" in text:
    return f"--{m.group(1)} is required, e.g. --{m.group(1)}=" + ("runs/demo" if m.group(1) == "workdir"
                                                                   else "bert.py:tiny,runlocal") + "."
  if m and "Error whilst parsing config file" in m.group(3):  # the config file's own error
    return f"--{m.group(1)}={m.group(2)}: {inner}"
  if m and m.group(1).startswith("config."):  # an override of the wrong type
    key = m.group(1)
    try:
      value = configs.load(_config_spec(argv) or "")
      for part in key.split(".")[1:]:
        value = value[part]
      return f"--{key}={m.group(2)}: {m.group(3)} (config.{key[7:]} takes {_a(type(value).__name__)}, e.g. {value!r})."
    except Exception:  # pylint: disable=broad-except
      pass
  if isinstance(e, flags.UnrecognizedFlagError):
    return f"{text} (see --help; config keys are --config.<group>.<key>=<value>)."
  return text


def _a(noun: str) -> str:
  return ("an " if noun[:1] in "aeiou" else "a ") + noun


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with every error in one line and exit status 2 (--debug: the traceback)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    if any(a in ("--debug", "-debug", "--debug=true", "--debug=True") for a in argv):
      raise
    _refuse(_flag_error(e, argv))
  return []  # not reached


def help_text(finetune_only: bool = False) -> str:
  """What --help prints: the usage, the flags and the packaged configs with their variants."""
  # configs.common (through qa_tagging) loads jax and flax: not before --help needs them.
  from bert_jax.configs import qa_tagging  # pylint: disable=g-import-not-at-top

  prog = _prog()
  tasks = [*glue.TASKS, *qa_tagging.SQUAD_TASKS, *qa_tagging.TAGGING_TASKS]
  config_help = "a fine-tuning config (default finetune.py:sst2)" if finetune_only else "a packaged config"
  example = ("--config=finetune.py:rte --config.init.hf_checkpoint=path/to/hf_model "
             "--config.finetune.data_dir=path/to/RTE --workdir=runs/rte" if finetune_only else
             "--config=bert.py:tiny,runlocal --workdir=runs/demo --config.train.num_steps=100")
  return "\n".join([
      f"usage: {prog} --config=<config>[:<arguments>] --workdir=<dir> [--config.<key>=<value> ...]",
      "",
      ("Fine-tunes" if finetune_only else "Pretrains (or fine-tunes)")
      + " BERT, ALBERT or ELECTRA; re-running the same command resumes from the newest checkpoint.",
      f"  e.g. {prog} {example}",
      "",
      "flags:",
      f"  --config=<config>     {config_help} by name (below) or a config file, then ':' and its",
      "                        arguments, e.g. bert.py:tiny,runlocal or finetune.py:task=rte,recipe=electra",
      "  --config.<key>=<v>    override any key of the config, e.g. --config.data.mask_rate=0.2",
      "  --workdir=<dir>       checkpoints, logs and config.json of the run (local or gs://)",
      "  --debug               show the traceback of a config or input error",
      "  --helpfull            every flag, JAX's and absl's included",
      "",
      "exit status: 0 done; 75 stopped before the end (preempted, halted), run it again to resume;",
      "2 a config or input error (one line naming the flag, key or file).",
      "",
      "packaged configs (bert_jax/configs):",
      *configs.describe({"task": tasks}),
      "",
      "docs: README.md (one command per job), docs/pretraining.md, docs/finetuning.md.",
  ])


def _help_or_flags(argv: list[str], finetune_only: bool = False) -> list[str]:
  """--help: the help text and exit status 0 (absl's own exits 1 and names no config)."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(help_text(finetune_only))
    sys.exit(0)
  if "--helpfull" in argv[1:]:
    print(help_text(finetune_only) + "\n\nevery flag:\n" + flags.FLAGS.get_help())
    sys.exit(0)
  return parse_flags(argv)


# ----------------------------------------------------------------------------------------------
# The run.
# ----------------------------------------------------------------------------------------------
def clamp_warmup(config, finetuning: bool) -> str | None:
  """A pretraining warmup longer than the run is cut to the run (fine-tuning sets it from
  config.finetune.warmup_proportion); returns the notice, or None when nothing changed."""
  if finetuning:
    return None
  warmup, steps = int(config.optimizer.warmup_steps), int(config.train.num_steps)
  if steps < 1 or warmup <= steps:
    return None
  config.optimizer.warmup_steps = steps
  return (f"Note: config.optimizer.warmup_steps={warmup} is longer than the run (config.train.num_steps="
          f"{steps}): warming up over all {steps} steps; set --config.optimizer.warmup_steps to choose.")


def main(argv, finetune_only: bool = False) -> None:
  if len(argv) > 1:
    _refuse(f"unexpected arguments {argv[1:]}: every setting is a flag (--config.<key>=<value>); see --help.")
  if finetune_only and "finetune" not in _CONFIG.value:
    _refuse("bert-jax-finetune takes a fine-tuning config (--config=finetune.py:<task>); "
            "pretrain with bert-jax-train.")
  _maybe_initialize_distributed()
  try:
    _run(_CONFIG.value, _WORKDIR.value)
  except INPUT_ERRORS as e:
    if _DEBUG.value:
      raise
    _refuse(str(e))


def _run(config, workdir: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top

  # After jax.distributed: the library (and TensorFlow through it) loads once the cluster is up.
  from bert_jax import finetune  # pylint: disable=g-import-not-at-top
  from bert_jax import starts  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import registry  # pylint: disable=g-import-not-at-top

  # Orbax logs every save step at INFO through absl; keep the console to our progress lines.
  absl_logging.set_verbosity(absl_logging.WARNING if jax.process_index() == 0 else absl_logging.ERROR)
  logging.getLogger().setLevel(logging.WARNING if jax.process_index() == 0 else logging.ERROR)
  # Data workers must not grab accelerator memory; tf is imported lazily by bert_jax.data only.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

  # Which keys the command line set: a starting point refuses a --config.model.* that contradicts it.
  starts.COMMAND_LINE_KEYS.update(cli.command_line_keys(sys.argv[1:]))
  finetuning = registry.task_class(config).finetuning
  notice = clamp_warmup(config, finetuning)
  if notice and jax.process_index() == 0:
    print(notice, file=sys.stderr, flush=True)
  if finetuning:  # seeds, best-epoch scoring, results.json
    try:
      finetune.run(config, workdir)
    except finetune.Incomplete as e:
      print(e, file=sys.stderr)
      sys.exit(EXIT_INCOMPLETE if e.status in RESUMABLE else 1)
    return
  summary = train.train_and_evaluate(config, workdir)
  if summary["status"] in RESUMABLE:
    sys.exit(EXIT_INCOMPLETE)
  if summary["status"] == "nonfinite":
    sys.exit(1)


def run() -> None:
  """Console entry point `bert-jax-train` (pretraining, or any config)."""
  app.run(main, flags_parser=_help_or_flags)


def run_finetune() -> None:
  """Console entry point `bert-jax-finetune`: --config defaults to finetune.py (task sst2)."""
  if not any(re.match(r"^--?config(=|$)", a) for a in sys.argv[1:]):
    sys.argv.insert(1, "--config=finetune.py")
  app.run(functools.partial(main, finetune_only=True),
          flags_parser=functools.partial(_help_or_flags, finetune_only=True))


if __name__ == "__main__":
  run()
