r"""Convert checkpoints between HuggingFace and bert_jax.

  python -m bert_jax.tools.convert import <hf_dir> <out_dir> [--generator <hf_generator_dir>]
  python -m bert_jax.tools.convert export <our_dir or pretraining workdir> <hf_dir> [--checkpoint best]
  python -m bert_jax.tools.convert export-classifier <finetune_workdir>/seed_<k> <hf_dir>

`import` reads an HF checkpoint directory (config.json + model.safetensors, a sharded
safetensors index, or pytorch_model.bin with torch installed): BertModel /
BertForPreTraining / BertForMaskedLM, AlbertModel / AlbertForPreTraining / AlbertForMaskedLM,
or an ELECTRA pair (ElectraForPreTraining discriminator in <hf_dir>, ElectraForMaskedLM
generator from --generator or <hf_dir>/generator). Heads the checkpoint lacks are freshly
initialised and listed in conversion_info.json.

Our format, <out_dir>/:
  model_config.json       the config.model keys (configs/common.py::model_config)
  params.safetensors      float32 params of the pretraining model (models.build), keyed by
                          "/"-joined param paths, e.g.
                          "bert/encoder/group_0_layer_0/attention/query/kernel"
  conversion_info.json    source, unused HF tensors, freshly initialised params
  vocab.txt, spiece.model, tokenizer*.json   copied from the HF directory when present

Load it with `bert_jax.interop.hf.load_converted(out_dir)` or warm-start training from it
with --config.init.hf_checkpoint=<out_dir> (an HF directory works there too).

`export` writes config.json + model.safetensors that transformers loads with
`from_pretrained` (BertForPreTraining / AlbertForPreTraining / ElectraForPreTraining, and
ElectraForMaskedLM in <hf_dir>/generator), from a converted directory or straight from a
pretraining workdir (its checkpoint --checkpoint = latest | best | <step>, its config.json's
model, its tokenizer file). Import then export is bit-identical.

`export-classifier` writes the best checkpoint of a fine-tuning run (bert_jax.finetune) as
[Bert|Albert|Electra]ForSequenceClassification (LoRA merged into the kernels; adapters have
no HF counterpart and are refused) with its label names and vocab.txt.

No command mixes two models' files: an output directory that holds files is refused unless
--overwrite is given, and then it is replaced as a whole (everything is written to a temporary
sibling directory first, which then takes the output's place; a failed conversion leaves the
output as it was). An output that is the input, or holds it, is refused. Refusals are one line
with exit status 2 (--debug shows the traceback).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile


from bert_jax import cli as cli_lib
from bert_jax import finetune
from bert_jax import starts
from bert_jax.interop import hf

PROG = "bert-jax-convert"


class Refused(ValueError):
  """An output directory or input this command does not write to / read."""


def _same_or_inside(path: str, parent: str) -> bool:
  path, parent = os.path.realpath(path), os.path.realpath(parent)
  return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def check_output(out_dir: str, inputs: list[tuple[str, str]], overwrite: bool) -> None:
  """Refuses (one line naming the directory and the fix) an output that is an input or holds
  one, that is a file, or that holds files without --overwrite. `inputs`: (what, path)."""
  for what, path in inputs:
    if path and _same_or_inside(path, out_dir):
      same = os.path.realpath(path) == os.path.realpath(out_dir)
      raise Refused(f"the output directory {out_dir} {'is' if same else 'holds'} the {what} {path}: writing it "
                    f"would {'replace' if same else 'delete'} the model being read; give another output directory.")
  if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
    raise Refused(f"the output {out_dir} is a file, not a directory; give a directory to write the model to.")
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    held = sorted(os.listdir(out_dir))
    raise Refused(f"the output directory {out_dir} already holds files ({', '.join(held[:4])}"
                  f"{', ...' if len(held) > 4 else ''}); give an empty or new directory, or --overwrite to "
                  "replace it as a whole.")


def write_atomically(out_dir: str, write) -> None:
  """Calls write(tmp_dir) on a new temporary sibling of out_dir, then puts it in out_dir's place
  (renames: the old directory, if any, is removed only once the new one is complete)."""
  out_dir = os.path.abspath(out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  name = os.path.basename(out_dir)
  tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
  try:
    write(tmp)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a directory as makedirs would
    if os.path.isdir(out_dir):
      old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
      os.rename(out_dir, os.path.join(old, name))
      os.rename(tmp, out_dir)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _copy_tokenizer(src_dir: str, dirs: list[str]) -> None:
  for name in hf.TOKENIZER_FILES:
    src = os.path.join(src_dir, name)
    if os.path.exists(src):
      for d in dirs:
        shutil.copy(src, os.path.join(d, name))


def _workdir_tokenizer(workdir: str, config, dirs: list[str]) -> None:
  """A pretraining run's tokenizer next to its export: vocab.txt (WordPiece) or spiece.model
  (sentencepiece), and tokenizer_config.json with its lower-casing."""
  tok = config.data.tokenizer
  path, kind = tok.get("path", ""), tok.get("kind", "")
  if not path:
    path, kind = os.path.join(workdir, "tokenizer", "spm.model"), "sentencepiece"
  if not os.path.exists(path):
    print(f"Note: the run's tokenizer {path} is absent; the export has no tokenizer file.", file=sys.stderr)
    return
  name = "vocab.txt" if (kind or ("wordpiece" if path.endswith(".txt") else "")) == "wordpiece" else "spiece.model"
  for d in dirs:
    shutil.copy(path, os.path.join(d, name))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
      json.dump({"do_lower_case": bool(tok.get("lower_case", True))}, f, indent=2)


def _check_checkpoint(workdir: str, config, which: str) -> None:
  """--checkpoint names a checkpoint the workdir holds (latest | best | a saved step)."""
  if which not in ("latest", "best") and not which.isdigit():
    raise Refused(f"--checkpoint={which}: give latest, best or a step number.")
  try:
    starts.checkpoint_step(workdir, config, which, key="export")
  except FileNotFoundError as e:
    raise Refused(f"{workdir} holds no checkpoint under checkpoints/ yet: export it once the run has saved one."
                  ) from e
  except ValueError as e:
    raise Refused(f"--checkpoint={which}: {str(e).split(': ', 1)[-1]}") from e


def main(argv: list[str] | None = None) -> int:
  parser = cli_lib.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
  parser.add_argument("--debug", action="store_true", help="show the traceback of a refused input")
  sub = parser.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="HF checkpoint directory -> bert_jax directory")
  imp.add_argument("hf_dir")
  imp.add_argument("out_dir")
  imp.add_argument("--generator", default=None,
                   help="ELECTRA generator directory (default: <hf_dir>/generator if present)")
  imp.add_argument("--seed", type=int, default=0, help="seed for params the checkpoint lacks")
  exp = sub.add_parser("export", help="bert_jax directory or pretraining workdir -> HF checkpoint directory")
  exp.add_argument("our_dir", help="a directory from `import`, or a pretraining workdir")
  exp.add_argument("hf_dir")
  exp.add_argument("--checkpoint", default="latest", help="of a pretraining workdir: latest | best | <step>")
  cls = sub.add_parser("export-classifier",
                       help="fine-tuned run (<workdir>/seed_<k>) -> HF *ForSequenceClassification directory")
  cls.add_argument("seed_dir")
  cls.add_argument("hf_dir")
  for p in (imp, exp, cls):
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output directory that holds files (as a whole: no file of it is kept)")
    p.add_argument("--debug", action="store_true", help="show the traceback of a refused input")
  return cli_lib.run_command(PROG, parser.parse_args(argv), _command)


def _command(args) -> int:
  if args.command == "export-classifier":
    if not os.path.isdir(args.seed_dir):
      raise Refused(f"{args.seed_dir} is not a directory: give a fine-tuning seed directory (<workdir>/seed_<k>).")
    check_output(args.hf_dir, [("fine-tuning run", args.seed_dir)], args.overwrite)
    write_atomically(args.hf_dir, lambda d: finetune.export(args.seed_dir, d))
    print(f"Exported the best checkpoint of {args.seed_dir} to {args.hf_dir}.")
    return 0

  if args.command == "import":
    if not os.path.isdir(args.hf_dir):
      raise Refused(f"{args.hf_dir} is not a directory: give an HF checkpoint directory (config.json + weights).")
    generator = hf.find_generator_dir(args.hf_dir, args.generator)
    check_output(args.out_dir, [("HF checkpoint", args.hf_dir), ("generator", generator or "")], args.overwrite)
    cfg, params, info = hf.import_hf(args.hf_dir, args.generator, seed=args.seed)

    def write(d):
      hf.save_converted(d, cfg, params, info)
      _copy_tokenizer(args.hf_dir, [d])

    write_atomically(args.out_dir, write)
    print(f"Imported {cfg.family} ({', '.join(info['architectures']) or 'unknown class'}) into "
          f"{args.out_dir}; freshly initialised: {info['initialized'] or 'nothing'}.")
    return 0

  if not os.path.isdir(args.our_dir):
    raise Refused(f"{args.our_dir} is not a directory: give a directory from `{PROG} import` or a pretraining "
                  "workdir.")
  kind = starts.kind(args.our_dir)
  if kind == "finetuning":
    raise Refused(f"{args.our_dir} is a fine-tuning run: export it with `{PROG} export-classifier "
                  f"{args.our_dir} {args.hf_dir}`.")
  check_output(args.hf_dir, [("model", args.our_dir)], args.overwrite)
  if kind == "pretraining":
    config = starts.run_config(args.our_dir, "export")
    cfg = config.model
    _check_checkpoint(args.our_dir, config, args.checkpoint)
    params = starts.pretrained_params(args.our_dir, args.checkpoint, backbone=False)
    family = cfg.family

    def write(d):
      dirs = hf.export_hf(cfg, params, d)
      _workdir_tokenizer(args.our_dir, config, dirs)
  else:
    if not os.path.exists(os.path.join(args.our_dir, hf.CONVERTED_PARAMS)):
      raise Refused(f"{args.our_dir} is neither a bert_jax pretraining workdir (config.json + checkpoints/) nor a "
                    f"directory from `{PROG} import` ({hf.CONVERTED_CONFIG} + {hf.CONVERTED_PARAMS}).")
    cfg, params = hf.load_converted(args.our_dir)
    family = cfg.family

    def write(d):
      dirs = hf.export_hf(cfg, params, d)
      _copy_tokenizer(args.our_dir, dirs)

  write_atomically(args.hf_dir, write)
  print(f"Exported {family} to {args.hf_dir}" + (" (and its generator/)" if family == "electra" else "") + ".")
  return 0


if __name__ == "__main__":
  sys.exit(main())
