"""Small model directories written without training (test_cli.py, test_convert_overwrite.py).

Params are seeded random numpy arrays of the model's abstract shapes (jax.eval_shape: nothing is
compiled); the directories are what the tools read: an HF directory (transformers' config.json +
model.safetensors, from bert_jax.interop.hf.export_hf) with a vocab.txt and/or a tokenizer.json,
a pretraining workdir (config.json + an Orbax checkpoint, as the train loop writes them) and a
fine-tuning seed directory.
"""

import json
import pathlib

import jax
import numpy as np

from bert_jax import checkpointing
from bert_jax import configs
from bert_jax import models
from bert_jax.interop import hf

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a of to and in is it that for on with as was he she they we you this be at by not are from "
         "or have an but what all were when there can more if will one about up out who so them some "
         "could time apple pie bank river rates sat capital france cup tea every morning best language "
         "hello world quick brown fox jumps over lazy dog twice . , ! ?").split()


def vocab(size: int) -> list[str]:
  """[PAD] [UNK] [CLS] [SEP] [MASK], WORDS, then ##-pieces up to `size` entries."""
  pieces = SPECIALS + WORDS
  pieces += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
  pieces += [f"w{i}" for i in range(size - len(pieces))]
  return pieces[:size]


def model_config(vocab_size: int = 128, hidden: int = 32, layers: int = 1, positions: int = 32):
  return models.validate(dict(
      family="bert", vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
      num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=positions,
      hidden_act="gelu"))


def random_params(module, cfg, seed: int = 0) -> dict:
  abstract = models.abstract_params(module, models.dummy_batch(cfg, 1, 8, 2))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.05).astype(np.float32), abstract)


def write_tokenizer_json(directory: pathlib.Path, pieces: list[str]) -> None:
  """transformers' fast-tokenizer file for a WordPiece vocabulary (BERT's normaliser, pre-tokenizer
  and [CLS] ... [SEP] template), written with the `tokenizers` library."""
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  from tokenizers import normalizers, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top
  from tokenizers.models import WordPiece  # pylint: disable=g-import-not-at-top

  tk = Tokenizer(WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
  tk.normalizer = normalizers.BertNormalizer(lowercase=True)
  tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tk.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", pieces.index("[CLS]")), ("[SEP]", pieces.index("[SEP]"))])
  tk.add_special_tokens(SPECIALS)
  tk.save(str(directory / "tokenizer.json"))


def write_hf(directory: pathlib.Path, *, vocab_size: int = 128, hidden: int = 32, seed: int = 0,
             tokenizer: str = "vocab", extra: dict[str, str] | None = None) -> pathlib.Path:
  """An HF BertForPreTraining directory; tokenizer: vocab (vocab.txt) | json (tokenizer.json
  only) | both. `extra`: more files (name -> text)."""
  cfg = model_config(vocab_size, hidden)
  hf.export_hf(cfg, random_params(models.build(cfg), cfg, seed), str(directory))
  pieces = vocab(vocab_size)
  if tokenizer in ("vocab", "both"):
    (directory / "vocab.txt").write_text("\n".join(pieces) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  if tokenizer in ("json", "both"):
    write_tokenizer_json(directory, pieces)
  for name, text in (extra or {}).items():
    (directory / name).write_text(text)
  return directory


def _save(run_dir: pathlib.Path, config, params) -> None:
  run_dir.mkdir(parents=True, exist_ok=True)
  (run_dir / "config.json").write_text(config.to_json(indent=2))
  ckpt = checkpointing.Checkpointer(str(run_dir / "checkpoints"), config.checkpoint)
  ckpt.save(1, {"params": jax.tree.map(np.asarray, params)}, {"step": 1, "data_batches": 1,
                                                              "family": config.model.family})
  ckpt.close()


def _run_config(spec: str, cfg, vocab_file: pathlib.Path):
  """The packaged config `spec` with the tiny model's sizes and the WordPiece vocab_file."""
  config = configs.load(spec)
  for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings"):
    config.model[k] = getattr(cfg, k)
  config.data.tokenizer.update(path=str(vocab_file), kind="wordpiece")
  return config


def write_pretraining_workdir(run_dir: pathlib.Path, vocab_file: pathlib.Path, seed: int = 1):
  """A BERT pretraining workdir with a checkpoint at step 1; returns its params (numpy)."""
  cfg = model_config()
  config = _run_config("bert.py:tiny,runlocal", cfg, vocab_file)
  params = random_params(models.build(cfg), cfg, seed)
  _save(run_dir, config, params)
  return params


def write_finetuning_seed(seed_dir: pathlib.Path, vocab_file: pathlib.Path, seed: int = 2):
  """A fine-tuning seed directory (SST-2's labels) with a checkpoint at step 1; returns its params."""
  cfg = model_config()
  config = _run_config("finetune.py:sst2", cfg, vocab_file)
  params = random_params(models.ForSequenceClassification(cfg, 2), cfg, seed)
  _save(seed_dir, config, params)
  return params


def snapshot(directory: pathlib.Path) -> dict[str, bytes]:
  """Every file under `directory` (relative path -> bytes)."""
  return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
