"""What every fine-tuning task shares: the starting point, batching, PEFT, and the driver's questions.

A `FinetuneTask` is a Task whose data come as feature arrays per split (`arrays(split)`, cut into
batches here), whose model is warm-started from config.init, and whose trainable parameters
follow config.finetune.method. The seed driver (bert_jax.finetune) asks every such task the
same questions and names none:
  configure(config)        (classmethod) config.model and config.data.tokenizer from the
                           starting point; checks of the method
  prepare_data(config)     (classmethod) reads and checks every split before anything is
                           compiled; returns the number of training examples
  eval_splits(config), metric_names(config)   (classmethods) what is scored and reported
  eval_batches(split, batch_size)             every example of a split once, padded
  write_outputs(split, out_dir)               after scoring a split: files written, by kind
  write_test_predictions(predict, out_dir)    unlabelled test splits: files written, by kind
  export(params, hf_dir)                      the fine-tuned model as an HF directory

Starting point (the tokenizer comes with it):
  config.init.workdir         a bert_jax pretraining workdir: its config.json (model), its
                              tokenizer/, its newest / best / given checkpoint (config.init.checkpoint);
                              ELECTRA fine-tunes its discriminator
  config.init.hf_checkpoint   an HF directory (BertModel, *ForPreTraining, *ForMaskedLM, or
                              the task's *For<Head> with its head) or a converted one
  config.finetune.random_init the architecture and tokenizer of the starting point, random weights
Method (config.finetune.method): full | lora (config.model.lora_*) | adapters (config.model.adapter_*).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from bert_jax import models
from bert_jax import starts
from bert_jax.interop import hf
from bert_jax.models import config as model_config_lib
from bert_jax.models import peft
from bert_jax.tasks import base

METHODS = ("full", "lora", "adapters")
_KEPT_KEYS = model_config_lib.RUN_KEYS  # this run's, not the start's


# ----------------------------------------------------------------------------------------------
# Starting point: model config, tokenizer.
# ----------------------------------------------------------------------------------------------
def start_kind(config) -> str:
  init = config.init
  if init.workdir and init.hf_checkpoint:
    raise ValueError("Set one of config.init.workdir (a bert_jax pretraining workdir) and "
                     "config.init.hf_checkpoint (an HF or converted directory), not both.")
  return "workdir" if init.workdir else "hf" if init.hf_checkpoint else "none"


def resolve_model(config) -> None:
  """Sets config.model from the starting point (its architecture), keeping the PEFT keys and
  dropout of this config; and config.data.tokenizer to the starting point's tokenizer."""
  kind = start_kind(config)
  keep = {k: config.model[k] for k in _KEPT_KEYS}
  if kind == "workdir":
    pre = starts.run_config(config.init.workdir)
    if not config.finetune.random_init:  # a checkpoint that is not there: refused before anything is built
      starts.checkpoint_step(config.init.workdir, pre, config.init.checkpoint)
    model = dict(pre.model)
    tok = dict(pre.data.tokenizer)
    if not tok.get("path"):
      tok.update(path=os.path.join(config.init.workdir, "tokenizer", "spm.model"), kind="sentencepiece")
      settings = os.path.join(config.init.workdir, "tokenizer", "tokenizer.json")
      if os.path.exists(settings):
        tok["lower_case"] = starts.read_json(settings).get("lower_case", tok.get("lower_case", True))
  elif kind == "hf":
    cfg, _, _ = starts.hf_classifier(config.init.hf_checkpoint)
    model = dataclasses.asdict(cfg)
    try:
      path, kind, lower = hf.tokenizer_file(config.init.hf_checkpoint)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r}: {e} The tokenizer comes "
                              "with the starting point.") from None
    tok = dict(kind=kind, path=path, lower_case=lower)
  else:
    model, tok = None, None
  if model is not None:
    for k in list(model):
      if k in config.model and k not in _KEPT_KEYS:
        config.model[k] = model[k]
  config.model.update(keep)
  m = config.finetune.method
  if m not in METHODS:
    raise ValueError(f"Unknown config.finetune.method={m!r}; choose one of {METHODS}.")
  if m == "lora" and not config.model.lora_rank:
    raise ValueError("config.finetune.method='lora' needs config.model.lora_rank > 0 (e.g. 8).")
  if m == "adapters" and not config.model.adapter_size:
    raise ValueError("config.finetune.method='adapters' needs config.model.adapter_size > 0 (e.g. 64).")
  if m == "full" and (config.model.lora_rank or config.model.adapter_size):
    raise ValueError("config.model.lora_rank / adapter_size are set but config.finetune.method='full'; "
                     "set config.finetune.method to lora or adapters (or the sizes to 0).")
  if tok is not None:
    config.data.tokenizer.update({k: v for k, v in tok.items() if k in config.data.tokenizer})
  if not config.data.tokenizer.path:
    raise ValueError("No tokenizer: set config.init.workdir or config.init.hf_checkpoint (the tokenizer "
                     "comes with the starting point) or config.data.tokenizer.path.")


def check_vocab(vocab_size: int, config) -> None:
  if vocab_size > config.model.vocab_size:
    raise ValueError(f"The tokenizer has {vocab_size} ids but config.model.vocab_size={config.model.vocab_size}: "
                     "the tokenizer does not belong to the starting point's model.")


def subset(n: int, size: int, seed: int) -> np.ndarray | None:
  """Sorted indices of a fixed random subset of `size` of `n` examples (None: all of them)."""
  if not size or size >= n:
    return None
  return np.sort(np.random.default_rng(seed).permutation(n)[:size])


# ----------------------------------------------------------------------------------------------
# Batches of feature arrays.
# ----------------------------------------------------------------------------------------------
def _host_rows(batch_size: int) -> slice:
  pi, pc = jax.process_index(), jax.process_count()
  return slice(pi * batch_size // pc, (pi + 1) * batch_size // pc)


def epoch_batches(feats: dict[str, np.ndarray], batch_size: int, start_batch: int, seed: int):
  """This host's rows of global batches from `start_batch`: the concatenation of per-epoch
  permutations (seeded by (seed, epoch)) cut into batches, so batch k is fixed by (seed, k)."""
  n = len(feats["input_ids"])
  rows = _host_rows(batch_size)
  k = start_batch
  while True:
    first = k * batch_size
    idx = np.concatenate([np.random.default_rng([seed, e]).permutation(n)
                          for e in range(first // n, (first + batch_size - 1) // n + 1)])
    idx = idx[first % n:first % n + batch_size][rows]
    yield {**{key: v[idx] for key, v in feats.items() if key != "idx"}, "weight": np.ones(len(idx), np.float32)}
    k += 1


def padded_batches(feats: dict[str, np.ndarray], batch_size: int):
  """Every example once, in order; the last batch padded with weight-0 rows (static shapes)."""
  n = len(feats["input_ids"])
  rows = _host_rows(batch_size)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    weight = (idx < n).astype(np.float32)
    idx = np.minimum(idx, n - 1)[rows]
    yield {**{k: v[idx] for k, v in feats.items() if k != "idx"}, "weight": weight[rows]}


# ----------------------------------------------------------------------------------------------
# The base task.
# ----------------------------------------------------------------------------------------------
class FinetuneTask(base.Task):
  """Base of Classification, QuestionAnswering and TokenClassification (subclasses set the model,
  features, loss, eval_step, host_metrics, `arrays` and the driver classmethods)."""

  best_mode = "max"
  finetuning = True
  head_kind = ""  # bert_jax.interop.hf.HEAD_KINDS; "" reads an HF start as a sequence classifier

  def __init__(self, config):
    super().__init__(config)
    self._eval_split = self.eval_splits(config)[0]

  # --- the seed driver's questions ------------------------------------------------------------
  @classmethod
  def configure(cls, config) -> None:
    """config.model and config.data.tokenizer from the starting point; the method's checks."""
    resolve_model(config)

  @classmethod
  def prepare_data(cls, config) -> int:
    raise NotImplementedError

  @classmethod
  def check_data(cls, config) -> None:
    """Reads the task's local files (train and eval splits) without a tokenizer, so a plan of
    runs (bert_jax.tools.ablate) is refused before its first pretraining, not after it."""
    raise NotImplementedError

  @classmethod
  def eval_splits(cls, config) -> tuple[str, ...]:
    return (config.finetune.eval_split or "validation",)

  @classmethod
  def metric_names(cls, config) -> tuple[str, ...]:
    raise NotImplementedError

  def arrays(self, split: str) -> dict[str, np.ndarray]:
    """The feature arrays of a split (rows of the batch spec's keys)."""
    raise NotImplementedError

  def eval_batches(self, split, batch_size):
    self._eval_split = split  # what host_metrics scores
    return padded_batches(self.arrays(split), batch_size)

  def write_outputs(self, split: str, out_dir: str) -> dict[str, list[str]]:
    """Files written after scoring `split` (e.g. SQuAD's predictions.json), by results key."""
    del split, out_dir
    return {}

  def write_test_predictions(self, predict, out_dir: str) -> dict[str, list[str]]:
    """Predictions of unlabelled test splits; `predict(batches)` gives the eval outputs."""
    del predict, out_dir
    return {}

  def export(self, params, hf_dir: str) -> str:
    raise NotImplementedError

  # --- starting point -------------------------------------------------------------------------
  @classmethod
  def hf_start(cls, path: str):
    """(model config, params, head info or None) of an HF starting point, read for this head."""
    return starts.hf_head(path, cls.head_kind) if cls.head_kind else starts.hf_classifier(path)

  @classmethod
  def check_start_head(cls, config, num_labels: int) -> None:
    """An HF starting point with this task's head must have the task's number of outputs."""
    if start_kind(config) != "hf" or config.finetune.random_init:
      return
    head = cls.hf_start(config.init.hf_checkpoint)[2]
    if head is not None and head["num_labels"] != num_labels:
      raise ValueError(f"config.init.hf_checkpoint={config.init.hf_checkpoint!r} has a {head['num_labels']}-label "
                       f"head but task {config.finetune.task!r} has {num_labels} labels; use a backbone checkpoint.")

  def start_params(self):
    """(source name, numpy params) of the starting point, or None (random init)."""
    config = self.config
    kind = start_kind(config)
    if kind == "none" or config.finetune.random_init:
      return None
    if kind == "workdir":
      return config.init.workdir, starts.pretrained_params(config.init.workdir, config.init.checkpoint)
    self.check_start_head(config, self.num_labels)
    return config.init.hf_checkpoint, self.hf_start(config.init.hf_checkpoint)[1]

  def warm_start(self, params):
    start = self.start_params()
    if start is None:
      return params
    return starts.overwrite(params, start[1], start[0], "the starting point does not fit config.model.")[0]

  # --- the contract -----------------------------------------------------------------------------
  def logits(self, params, batch, rng=None, deterministic=True):
    return self.model.apply({"params": params}, **models.model_inputs(self.model, batch),
                            deterministic=deterministic, rngs=None if deterministic else {"dropout": rng})

  def inputs(self, workdir, start_batch):
    del workdir
    c = self.config
    ebs = c.eval.batch_size or c.train.batch_size
    split = self.eval_splits(c)[0]
    return (epoch_batches(self.arrays("train"), c.train.batch_size, start_batch, c.data.seed),
            lambda: self.eval_batches(split, ebs))

  def trainable(self, params):
    """full: everything; lora: LoRA factors + task head; adapters: adapters, LayerNorms, head
    (Houlsby et al. train the layer norms too)."""
    method = self.config.finetune.method
    if method == "full":
      return None
    mask = peft.trainable_mask(params)
    if method == "adapters":
      norm = lambda p, m: m or any("LayerNorm" in str(getattr(k, "key", k)) for k in p)  # noqa: E731
      mask = jax.tree_util.tree_map_with_path(norm, mask)
    return mask

  def num_params(self, abstract_params):
    mask = self.trainable(abstract_params)
    total = models.param_count(abstract_params)
    if mask is None:
      return f"{total / 1e6:.2f}M params (all trainable)"
    n = sum(int(np.prod(x.shape)) for x, m in zip(jax.tree.leaves(abstract_params), jax.tree.leaves(mask)) if m)
    return f"{n / 1e6:.3f}M trainable of {total / 1e6:.2f}M params ({100 * n / total:.2f}%)"
