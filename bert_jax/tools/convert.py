r"""Convert checkpoints between HuggingFace and bert_jax.

  python -m bert_jax.tools.convert import <hf_dir> <out_dir> [--generator <hf_generator_dir>]
  python -m bert_jax.tools.convert export <our_dir> <hf_dir>
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
ElectraForMaskedLM in <hf_dir>/generator). Import then export is bit-identical.

`export-classifier` writes the best checkpoint of a fine-tuning run (bert_jax.finetune) as
[Bert|Albert|Electra]ForSequenceClassification (LoRA merged into the kernels; adapters have
no HF counterpart and are refused) with its label names and vocab.txt.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from bert_jax import finetune
from bert_jax.interop import hf


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m bert_jax.tools.convert",
                                   description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="HF checkpoint directory -> bert_jax directory")
  imp.add_argument("hf_dir")
  imp.add_argument("out_dir")
  imp.add_argument("--generator", default=None,
                   help="ELECTRA generator directory (default: <hf_dir>/generator if present)")
  imp.add_argument("--seed", type=int, default=0, help="seed for params the checkpoint lacks")
  exp = sub.add_parser("export", help="bert_jax directory -> HF checkpoint directory")
  exp.add_argument("our_dir")
  exp.add_argument("hf_dir")
  cls = sub.add_parser("export-classifier",
                       help="fine-tuned run (<workdir>/seed_<k>) -> HF *ForSequenceClassification directory")
  cls.add_argument("seed_dir")
  cls.add_argument("hf_dir")
  args = parser.parse_args(argv)

  if args.command == "export-classifier":
    print(f"Exported the best checkpoint of {args.seed_dir} to {finetune.export(args.seed_dir, args.hf_dir)}.")
    return 0

  if args.command == "import":
    cfg, params, info = hf.import_hf(args.hf_dir, args.generator, seed=args.seed)
    hf.save_converted(args.out_dir, cfg, params, info)
    for name in hf.TOKENIZER_FILES:
      src = os.path.join(args.hf_dir, name)
      if os.path.exists(src):
        shutil.copy(src, os.path.join(args.out_dir, name))
    print(f"Imported {cfg.family} ({', '.join(info['architectures']) or 'unknown class'}) into "
          f"{args.out_dir}; freshly initialised: {info['initialized'] or 'nothing'}.")
  else:
    cfg, params = hf.load_converted(args.our_dir)
    dirs = hf.export_hf(cfg, params, args.hf_dir)
    for name in hf.TOKENIZER_FILES:
      src = os.path.join(args.our_dir, name)
      if os.path.exists(src):
        for d in dirs:
          shutil.copy(src, os.path.join(d, name))
    print(f"Exported {cfg.family} to {', '.join(dirs)}.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
