r"""Inference on any starting point: fill-mask, embeddings, and one word's meaning in context.

  bert-jax-infer fill-mask --model=runs/demo --text="the [MASK] of the [MASK] module." --top_k=5
  bert-jax-infer fill-mask --model=path/to/hf_dir --file=inputs.txt --json=preds.jsonl
  bert-jax-infer embed --model=path/to/hf_dir --file=sentences.txt --out=sentences.npy \
      --pooling=mean --tokens_out=tokens.npz
  bert-jax-infer similarity --model=path/to/hf_dir --word=apple --png=apple.png   # built-in contexts
  bert-jax-infer similarity --model=runs/demo --word=bank --context="the river bank" \
      --context="the bank raised rates" --context="she sat on the bank"

(`python -m bert_jax.tools.infer ...` without installing.) `--model` is a bert_jax pretraining workdir
(its config.json, tokenizer and checkpoint `--checkpoint` = latest | best | <step>), an HF
directory (BertModel, *ForPreTraining, *ForMaskedLM, ELECTRA discriminator with its generator in
<dir>/generator) or a converted directory (`bert-jax-convert import`); the tokenizer comes with it
(bert_jax.tasks.finetuning.resolve_model). ELECTRA fills masks with its generator and embeds with its
discriminator.

- fill-mask: every [MASK] of an input (several per input allowed) gets the top-k tokens with
  their softmax probabilities, as transformers' fill-mask pipeline does. Inputs from --text
  (repeatable) or --file (one per line).
- embed: contextual token embeddings (last layer, [CLS] and [SEP] included) and a sentence
  embedding per input: `mean` (over real tokens, as sentence-transformers) or `cls` pooling,
  optionally L2-normalised. --out writes the sentence embeddings [N, H] (.npy); --tokens_out an
  .npz with `embeddings` [N, L, H] (zeros past each input's length), `input_ids`, `input_mask`.
- similarity: the contextual embedding of one word (the mean of its pieces) in each context,
  their cosine-similarity matrix printed and drawn as a heatmap (--png). Without --context the
  word "apple" comes with fruit and company contexts (DEMO_CONTEXTS).

Batches have static shapes: --batch_size rows of one length (the longest input rounded up to
a multiple of 16, at most --max_length), so a file compiles once or twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import sys
from typing import Any, Sequence

from etils import epath
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import cli as cli_lib
from bert_jax import configs
from bert_jax import models
from bert_jax import rundir
from bert_jax import starts
from bert_jax.interop import hf
from bert_jax.models import heads
from bert_jax.tasks import finetuning

MASK = "[MASK]"
DEMO_CONTEXTS = (
    "I ate an apple for breakfast.",
    "She picked a ripe apple from the tree.",
    "The apple pie was still warm.",
    "Apple announced a new iPhone today.",
    "He bought shares of Apple last year.",
    "Apple reported record quarterly revenue.",
)


@dataclasses.dataclass
class Model:
  """A loaded starting point: the pretraining model's config and params, and its tokenizer."""
  config: Any              # models.ModelConfig
  params: dict[str, Any]   # the pretraining model's tree (models.build); see `missing`
  tokenizer: Any           # bert_jax.data.tokenizers.Tokenizer
  source: str
  missing: tuple[str, ...] = ()  # "/"-joined param paths the source lacks (freshly initialised)

  @functools.cached_property
  def module(self):
    return models.build(self.config)

  @functools.cached_property
  def encode_fn(self):
    """jitted (params, ids [B, L], mask) -> last hidden states [B, L, H]."""
    return jax.jit(lambda p, i, m: self.module.apply({"params": p}, i, m, method=_sequence_output))

  @functools.cached_property
  def fill_fn(self):
    """jitted (params, ids, mask, positions [B, P], top_k) -> (probabilities, ids) [B, P, k]."""
    def fn(p, i, m, pos, top_k):
      logits = self.module.apply({"params": p}, i, m, pos, method=_mlm_logits)
      return jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), top_k)
    return jax.jit(fn, static_argnums=4)

  @property
  def has_mlm_head(self) -> bool:
    head = "generator" if self.config.family == "electra" else "mlm/"
    return not any(k.startswith(head) for k in self.missing)


# ----------------------------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------------------------
_RUN_KEYS = ("dtype", "remat", "remat_policy", "scan_layers", "attention_impl")


def is_workdir(path: str) -> bool:
  p = epath.Path(path)
  return (p / "checkpoints").exists() and (p / "config.json").exists()


def load(path: str, checkpoint: str = "latest") -> Model:
  """A bert_jax pretraining workdir, an HF directory or a converted directory (see module doc)."""
  from bert_jax.data import tokenizers  # pylint: disable=g-import-not-at-top  # TensorFlow: only to load

  workdir = is_workdir(path)
  if not workdir and not os.path.isdir(path):
    raise FileNotFoundError(f"--model={path!r} is neither a bert_jax pretraining workdir (config.json + "
                            "checkpoints/) nor an HF or converted model directory.")
  if not workdir and os.path.exists(os.path.join(path, rundir.IDENTITY_FILE)):
    raise FileNotFoundError(f"--model={path!r} is a bert_jax run directory without checkpoints/ (the run saved "
                            "none yet): train it first, or point --model at a run that has checkpoints.")
  missing: list[str] = []
  if workdir:
    # The run's architecture and tokenizer, as fine-tuning resolves them.
    c = configs.load("finetune.py")
    c.init.workdir = path
    finetuning.resolve_model(c)
    c.model.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    tok = tokenizers.load(c.data.tokenizer.path, c.data.tokenizer.kind, c.data.tokenizer.lower_case)
    cfg = models.validate(c.model)
    params = starts.pretrained_params(path, checkpoint, backbone=False)
    # A fine-tuning run's workdir holds a classifier: its backbone embeds, it has no MLM head.
    expected = models.abstract_params(models.build(cfg), models.dummy_batch(cfg, 1, 8, 2))
    have = set(traverse_util.flatten_dict(params, sep="/"))
    missing = sorted(k for k in traverse_util.flatten_dict(expected, sep="/") if k not in have)
    return Model(cfg, params, tok, path, tuple(missing))
  # An HF or converted directory: the whole pretraining model (its MLM head included, which
  # fill-mask uses), read once; what the directory lacks is freshly initialised and listed.
  if os.path.exists(os.path.join(path, hf.CONVERTED_PARAMS)):
    cfg, params = hf.load_converted(path)
    info = os.path.join(path, "conversion_info.json")
    if os.path.exists(info):
      with open(info) as f:
        missing = json.load(f).get("initialized", [])
  else:
    cfg, params, info = hf.import_hf(path)
    missing = info["initialized"]
  file, kind, lower = hf.tokenizer_file(path)
  tok = tokenizers.load(file, kind, lower)
  if tok.vocab_size > cfg.vocab_size:
    raise ValueError(f"{file} has {tok.vocab_size} ids but {path}'s model has vocab_size={cfg.vocab_size}: "
                     "the tokenizer does not belong to this model.")
  # How this process runs the model is not the directory's (as fine-tuning from it keeps its own).
  run = {f.name: f.default for f in dataclasses.fields(cfg) if f.name in _RUN_KEYS}
  cfg = dataclasses.replace(cfg, **run, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  return Model(models.validate(cfg), params, tok, path, tuple(missing))


# ----------------------------------------------------------------------------------------------
# Tokenization with [MASK] and marked words.
# ----------------------------------------------------------------------------------------------
def encode_segments(tok, segments: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
  """[CLS] + each segment's pieces + [SEP]; the (start, end) token span of every segment.

  Segments are tokenized one by one and joined, so a [MASK] or a chosen word stays one unit
  (WordPiece splits on whitespace first, so this equals tokenizing the whole text; sentencepiece
  gives each segment its word-start piece).
  """
  ids, spans = [tok.cls_id], []
  for s in segments:
    piece_ids = [tok.mask_id] if s == MASK else tok.encode(s)
    spans.append((len(ids), len(ids) + len(piece_ids)))
    ids += piece_ids
  ids.append(tok.sep_id)
  return ids, spans


def encode_with_masks(tok, text: str) -> tuple[list[int], list[int]]:
  """Token ids of `text` with every literal [MASK] as the mask id; the masks' positions."""
  parts = [p for p in re.split(r"(\[MASK\])", text) if p.strip()]
  ids, spans = encode_segments(tok, [p.strip() if p != MASK else p for p in parts])
  return ids, [a for (a, _), p in zip(spans, parts) if p == MASK]


def encode_word(tok, text: str, word: str) -> tuple[list[int], tuple[int, int]]:
  """Token ids of `text` and the token span of the first whole-word occurrence of `word`
  (case-insensitive)."""
  m = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE)
  if m is None:
    raise ValueError(f"The word {word!r} does not occur in the context {text!r}.")
  parts = [text[:m.start()].strip(), m.group(0), text[m.end():].strip()]
  ids, spans = encode_segments(tok, [p for p in parts if p])
  span = spans[1] if parts[0] else spans[0]
  if span[0] == span[1]:
    raise ValueError(f"The word {word!r} has no tokens in {text!r} for this tokenizer.")
  return ids, span


def _padded_length(lengths: Sequence[int], max_length: int) -> int:
  return min(max_length, -(-max(lengths) // 16) * 16)


def _pad(rows: Sequence[Sequence[int]], length: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  n = -(-len(rows) // batch_size) * batch_size
  ids, mask = np.zeros((n, length), np.int32), np.zeros((n, length), np.int32)
  for i, r in enumerate(rows):
    ids[i, :len(r)], mask[i, :len(r)] = r, 1
  return ids, mask


# ----------------------------------------------------------------------------------------------
# Model functions (jitted once per shape).
# ----------------------------------------------------------------------------------------------
def _sequence_output(module, ids, mask):
  """Last hidden states [B, L, H] of the backbone (ELECTRA: the discriminator)."""
  if module.config.family == "electra":
    return module.discriminator_logits_and_states(ids, mask)[1]
  return module.bert(ids, mask)[0]


def _mlm_logits(module, ids, mask, positions):
  """MLM logits [B, P, V] at positions (ELECTRA: the generator's)."""
  if module.config.family == "electra":
    return module.generator(ids, mask, masked_lm_positions=positions)
  seq, _ = module.bert(ids, mask)
  return module.mlm(heads.gather_positions(seq, positions), module.bert.embeddings)


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield slice(start, start + batch_size)


# ----------------------------------------------------------------------------------------------
# The three commands as functions.
# ----------------------------------------------------------------------------------------------
def piece(tok, i: int) -> str:
  """The vocabulary entry of id i (a WordPiece piece or a sentencepiece piece)."""
  return tok.pieces[i] if hasattr(tok, "pieces") else tok.sp.id_to_piece(int(i))


def fill_mask(model: Model, texts: Sequence[str], top_k: int = 5, max_length: int = 128,
              max_masks: int = 20, batch_size: int = 32) -> list[list[list[dict[str, Any]]]]:
  """For each text, for each of its [MASK]s: top_k {"token", "token_id", "score"}, best first."""
  if not model.has_mlm_head:
    raise ValueError(f"{model.source} has no MLM head (e.g. a BertModel or sentence-transformers "
                     "checkpoint): fill-mask needs *ForMaskedLM / *ForPreTraining weights or a bert_jax "
                     "pretraining workdir (ELECTRA: the generator).")
  if not 1 <= top_k <= model.config.vocab_size:
    raise ValueError(f"--top_k={top_k}: give 1 to the vocabulary size ({model.config.vocab_size}).")
  rows, positions = [], []
  for n, text in enumerate(texts):
    ids, pos = encode_with_masks(model.tokenizer, text)
    if not pos:
      raise ValueError(f"Input {n + 1} has no {MASK}: {text!r}.")
    if len(pos) > max_masks:
      raise ValueError(f"Input {n + 1} has {len(pos)} {MASK}s, more than --max_masks={max_masks}.")
    if len(ids) > max_length:
      raise ValueError(f"Input {n + 1} is {len(ids)} tokens long, more than --max_length={max_length}.")
    rows.append(ids)
    positions.append(pos)
  length = _padded_length([len(r) for r in rows], max_length)
  ids, mask = _pad(rows, length, batch_size)
  pos = np.zeros((len(ids), max_masks), np.int32)
  for i, p in enumerate(positions):
    pos[i, :len(p)] = p
  scores, top = [], []
  for s in _batches(len(ids), batch_size):
    sc, tp = model.fill_fn(model.params, ids[s], mask[s], pos[s], top_k)
    scores.append(np.asarray(sc))
    top.append(np.asarray(tp))
  scores, top = np.concatenate(scores), np.concatenate(top)
  return [[[{"token": piece(model.tokenizer, int(t)), "token_id": int(t), "score": float(v)}
            for t, v in zip(top[i, j], scores[i, j])] for j in range(len(p))]
          for i, p in enumerate(positions)]


def _run_encoder(model: Model, rows: Sequence[Sequence[int]], max_length: int, batch_size: int):
  """Last hidden states [N, L, H] (zeros past each row's length), input ids and mask."""
  length = _padded_length([len(r) for r in rows], max_length)
  ids, mask = _pad(rows, length, batch_size)
  out = np.concatenate([np.asarray(model.encode_fn(model.params, ids[s], mask[s]), np.float32)
                        for s in _batches(len(ids), batch_size)])
  n = len(rows)
  return out[:n] * mask[:n, :, None], ids[:n], mask[:n]


def embed(model: Model, texts: Sequence[str], pooling: str = "mean", normalize: bool = False,
          max_length: int = 128, batch_size: int = 32) -> dict[str, np.ndarray]:
  """{"sentence": [N, H], "tokens": [N, L, H], "input_ids": [N, L], "input_mask": [N, L]}.

  Inputs longer than max_length tokens are truncated (their last token stays [SEP]).
  """
  if pooling not in ("mean", "cls"):
    raise ValueError(f"--pooling={pooling!r}: use mean or cls.")
  rows = []
  for text in texts:
    ids, _ = encode_segments(model.tokenizer, [text])
    rows.append(ids if len(ids) <= max_length else ids[:max_length - 1] + [model.tokenizer.sep_id])
  tokens, ids, mask = _run_encoder(model, rows, max_length, batch_size)
  if pooling == "mean":
    sentence = tokens.sum(1) / mask.sum(1, keepdims=True)
  else:
    sentence = tokens[:, 0]
  if normalize:
    sentence = sentence / np.maximum(np.linalg.norm(sentence, axis=-1, keepdims=True), 1e-12)
  return {"sentence": sentence.astype(np.float32), "tokens": tokens, "input_ids": ids,
          "input_mask": mask}


def word_similarity(model: Model, word: str, contexts: Sequence[str], max_length: int = 128,
                    batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """(cosine-similarity matrix [C, C], the word's embeddings [C, H]) over the contexts."""
  rows, spans = [], []
  for text in contexts:
    ids, span = encode_word(model.tokenizer, text, word)
    if len(ids) > max_length:
      raise ValueError(f"The context {text!r} is {len(ids)} tokens long, more than --max_length={max_length}.")
    rows.append(ids)
    spans.append(span)
  tokens, _, _ = _run_encoder(model, rows, max_length, batch_size)
  vectors = np.stack([tokens[i, a:b].mean(0) for i, (a, b) in enumerate(spans)])
  unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
  return unit @ unit.T, vectors


def similarity_table(word: str, contexts: Sequence[str], sim: np.ndarray) -> str:
  """The matrix as text: one row per context, columns numbered like the rows."""
  lines = [f"cosine similarity of {word!r} in context:"]
  lines += [f"  [{i}] {c}" for i, c in enumerate(contexts)]
  lines.append("      " + "".join(f"{f'[{j}]':>7}" for j in range(len(contexts))))
  lines += [f"  [{i}] " + "".join(f"{v:7.3f}" for v in row) for i, row in enumerate(sim)]
  return "\n".join(lines)


def plot_similarity(word: str, contexts: Sequence[str], sim: np.ndarray, path: str | None = None,
                    max_label: int = 40):
  """A heatmap of the matrix (matplotlib); written to `path` (PNG) when given. Returns the figure."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  labels = [c if len(c) <= max_label else c[:max_label - 1] + "\u2026" for c in contexts]
  n = len(contexts)
  width = max(len(l) for l in labels) * 0.075 + 1.0  # the row labels, in inches
  fig, ax = plt.subplots(figsize=(width + 1.5 + 0.8 * n, 1.5 + 0.6 * n))
  im = ax.imshow(sim, vmin=min(0.0, float(sim.min())), vmax=1.0, cmap="viridis")
  ax.set_xticks(range(n), [f"[{i}]" for i in range(n)])
  ax.set_yticks(range(n), [f"[{i}] {l}" for i, l in enumerate(labels)])
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center",
              color="black" if sim[i, j] > 0.6 else "white", fontsize=8)
  ax.set_title(f"cosine similarity of '{word}' in context")
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=120, bbox_inches="tight")
  return fig


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------
PROG = "bert-jax-infer"
# embed without --out prints the vectors of at most this many inputs (else a summary).
PRINT_MAX_INPUTS = 16
DEFAULT_MAX_LENGTH = 128


class InputError(ValueError):
  """A flag or input file the command refuses."""


def _inputs(args, flag: str = "--text") -> list[str]:
  texts = list(args.text or [])
  if args.file:
    try:
      with open(args.file, encoding="utf-8") as f:
        texts += [line.rstrip("\n") for line in f if line.strip()]
    except UnicodeDecodeError as e:
      raise InputError(f"--file={args.file}: not UTF-8 text ({e.reason} at byte {e.start}); give one input per "
                       "line of UTF-8 text.") from e
    except OSError as e:
      raise InputError(f"--file={args.file}: {e.strerror or e}; give a text file with one input per line.") from e
  if not texts:
    raise InputError(f"no inputs: give {flag} (repeatable) or --file (one input per line).")
  return texts


def _positive(name: str):
  def parse(value: str) -> int:
    try:
      n = int(value)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
      raise argparse.ArgumentTypeError(f"{n} is less than 1; {name} counts from 1")
    return n
  return parse


def _max_length(model: Model, max_length: int | None) -> int:
  """--max_length, checked against the model's positions (by default: 128 or the positions)."""
  if max_length is None:
    return min(DEFAULT_MAX_LENGTH, model.config.max_position_embeddings)
  if max_length > model.config.max_position_embeddings:
    raise InputError(f"--max_length={max_length} is longer than {model.source}'s model takes "
                     f"(max_position_embeddings={model.config.max_position_embeddings}); use "
                     f"--max_length={model.config.max_position_embeddings} or less.")
  return max_length


def print_vectors(texts: Sequence[str], vectors: np.ndarray, limit: int = PRINT_MAX_INPUTS) -> None:
  """The sentence vectors, one input per block (at most `limit` inputs, else nothing)."""
  for text, v in zip(texts[:limit], vectors[:limit]):
    print(text)
    print("  " + np.array2string(v, precision=4, separator=" ", max_line_width=100, threshold=v.size + 1,
                                 suppress_small=True).replace("\n", "\n  "))


def main(argv: list[str] | None = None) -> int:
  parser = cli_lib.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
  parser.add_argument("--debug", action="store_true", help="show the traceback of a refused input")
  sub = parser.add_subparsers(dest="command", required=True)
  for name, help_text in (("fill-mask", "top-k tokens for every [MASK]"),
                          ("embed", "token and sentence embeddings: printed, or to .npy / .npz"),
                          ("similarity", "one word in several contexts: cosine-similarity heatmap")):
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--model", required=True,
                   help="bert_jax pretraining workdir, HF directory or converted directory")
    p.add_argument("--checkpoint", default="latest", help="workdir checkpoint: latest | best | <step>")
    p.add_argument("--max_length", type=_positive("--max_length"), default=None,
                   help=f"longest input in tokens (default {DEFAULT_MAX_LENGTH}, or the model's positions if fewer)")
    p.add_argument("--batch_size", type=_positive("--batch_size"), default=32)
    p.add_argument("--file", default=None, help="inputs, one per line")
    p.add_argument("--debug", action="store_true", help="show the traceback of a refused input")
    if name == "similarity":
      p.add_argument("--word", required=True)
      p.add_argument("--context", dest="text", action="append",
                     help="a sentence holding the word (repeatable; default: DEMO_CONTEXTS for 'apple')")
      p.add_argument("--png", default=None, help="write the heatmap here")
    else:
      p.add_argument("--text", action="append", help="an input (repeatable)")
    if name == "fill-mask":
      p.add_argument("--top_k", type=_positive("--top_k"), default=5)
      p.add_argument("--max_masks", type=_positive("--max_masks"), default=20, help="most [MASK]s in one input")
      p.add_argument("--json", default=None, help="write one JSON line per input here")
    if name == "embed":
      p.add_argument("--pooling", choices=("mean", "cls"), default="mean")
      p.add_argument("--normalize", action="store_true", help="L2-normalise the sentence embeddings")
      p.add_argument("--out", default=None,
                     help=f"sentence embeddings [N, H] (.npy); without it (and --tokens_out) the vectors of up "
                          f"to {PRINT_MAX_INPUTS} inputs are printed")
      p.add_argument("--tokens_out", default=None,
                     help="token embeddings [N, L, H] with input_ids and input_mask (.npz)")
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return cli_lib.run_command(PROG, args, _command)


def _command(args) -> int:
  if args.command == "similarity":
    contexts = list(args.text or [])
    if args.file:
      contexts = _inputs(args, "--context")
    if not contexts:
      if args.word.lower() != "apple":
        raise InputError("give --context (repeatable) or --file: the built-in contexts are for --word=apple.")
      contexts = list(DEMO_CONTEXTS)
    model = load(args.model, args.checkpoint)
    args.max_length = _max_length(model, args.max_length)
    sim, _ = word_similarity(model, args.word, contexts, args.max_length, args.batch_size)
    print(similarity_table(args.word, contexts, sim))
    if args.png:
      import matplotlib  # pylint: disable=g-import-not-at-top
      matplotlib.use("Agg")  # a file, no display
      plot_similarity(args.word, contexts, sim, args.png)
      print(f"Heatmap: {args.png}")
    return 0

  texts = _inputs(args)
  model = load(args.model, args.checkpoint)
  args.max_length = _max_length(model, args.max_length)
  if args.command == "fill-mask":
    results = fill_mask(model, texts, args.top_k, args.max_length, args.max_masks, args.batch_size)
    for text, masks in zip(texts, results):
      print(text)
      for j, preds in enumerate(masks):
        print(f"  {MASK} {j + 1}: " + " | ".join(f"{p['token']} {p['score']:.4f}" for p in preds))
    if args.json:
      with open(args.json, "w", encoding="utf-8") as f:
        for text, masks in zip(texts, results):
          f.write(json.dumps({"text": text, "masks": masks}) + "\n")
    return 0

  out = embed(model, texts, args.pooling, args.normalize, args.max_length, args.batch_size)
  if args.out:
    np.save(args.out, out["sentence"])
  if args.tokens_out:
    np.savez(args.tokens_out, embeddings=out["tokens"], input_ids=out["input_ids"],
             input_mask=out["input_mask"])
  written = args.out or args.tokens_out
  if not written and len(texts) <= PRINT_MAX_INPUTS:
    print_vectors(texts, out["sentence"])
  print(f"{len(texts)} inputs: sentence embeddings {out['sentence'].shape} ({args.pooling} pooling"
        f"{', normalised' if args.normalize else ''})"
        + (f" -> {args.out}" if args.out else "") + (f"; tokens -> {args.tokens_out}" if args.tokens_out else "")
        + ("" if written else (" printed above" if len(texts) <= PRINT_MAX_INPUTS else
                               f": more than {PRINT_MAX_INPUTS} inputs, not printed")
           + "; --out=FILE.npy writes them, --tokens_out=FILE.npz the token embeddings"))
  return 0


def cli() -> None:
  """Console entry point `bert-jax-infer`."""
  sys.exit(main())


if __name__ == "__main__":
  cli()
