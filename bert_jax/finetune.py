r"""Fine-tuning: GLUE-style sequence classification and regression through the one train loop.

  python -m bert_jax.main --config=configs/finetune.py:sst2 --workdir=runs/sst2 \
      --config.init.hf_checkpoint=path/to/hf_or_converted_dir --config.finetune.seeds=5

`run(config, workdir)` trains config.finetune.seeds runs (seed k in <workdir>/seed_<k>, each a
resumable train loop with per-epoch eval and its best epoch kept by the task's metric), scores
the best checkpoint of each on every eval split, writes GLUE test predictions, and writes
<workdir>/results.json with every seed and the median. A seed that finished (or early-stopped)
writes <seed dir>/finished.json; the same command again only re-scores it.

Starting point (the tokenizer comes with it):
  config.init.workdir         a bert_jax pretraining workdir: its config.json (model), its
                              tokenizer/, its newest / best / given checkpoint (config.init.checkpoint);
                              ELECTRA fine-tunes its discriminator
  config.init.hf_checkpoint   an HF directory (BertModel, *ForPreTraining, *ForMaskedLM,
                              *ForSequenceClassification with its head) or a converted one
  config.finetune.random_init the architecture and tokenizer of the starting point, random weights
Method (config.finetune.method): full | lora (config.model.lora_*) | adapters (config.model.adapter_*).
Tasks: GLUE-style classification here; SQuAD (bert_jax.qa) and token classification
(bert_jax.tagging) by config.finetune.task through TASK_KINDS, with the same driver.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax import batch as batch_lib
from bert_jax import models
from bert_jax import objectives
from bert_jax import warm_start

METHODS = ("full", "lora", "adapters")
CONFIG_FILE = "config.json"


def _print(*args) -> None:
  if jax.process_index() == 0:
    print(*args, flush=True)


# ----------------------------------------------------------------------------------------------
# Starting point: model config, tokenizer, weights.
# ----------------------------------------------------------------------------------------------
def _read_json(path: str) -> dict:
  from etils import epath  # pylint: disable=g-import-not-at-top
  return json.loads(epath.Path(path).read_text())


def start_kind(config) -> str:
  init = config.init
  if init.workdir and init.hf_checkpoint:
    raise ValueError("Set one of config.init.workdir (a bert_jax pretraining workdir) and "
                     "config.init.hf_checkpoint (an HF or converted directory), not both.")
  return "workdir" if init.workdir else "hf" if init.hf_checkpoint else "none"


def pretraining_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  from etils import epath  # pylint: disable=g-import-not-at-top
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"config.init.workdir={workdir!r} has no {CONFIG_FILE}: not a bert_jax "
                            "pretraining workdir (the train loop writes it at start).")
  return ml_collections.ConfigDict(_read_json(path))


@functools.lru_cache(maxsize=4)
def _hf_start(path: str):
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise ValueError(f"config.init.hf_checkpoint={path!r} is not a directory.")
  return hf.load_classifier(path)


_PEFT_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_size", "adapter_placement")
_KEPT_KEYS = _PEFT_KEYS + ("dtype", "remat", "remat_policy", "scan_layers", "attention_impl", "hidden_dropout_prob",
                           "attention_probs_dropout_prob")  # this run's, not the start's


def resolve_model(config) -> None:
  """Sets config.model from the starting point (its architecture), keeping the PEFT keys and
  dropout of this config; and config.data.tokenizer to the starting point's tokenizer."""
  kind = start_kind(config)
  keep = {k: config.model[k] for k in _KEPT_KEYS}
  if kind == "workdir":
    pre = pretraining_config(config.init.workdir)
    model = dict(pre.model)
    tok = dict(pre.data.tokenizer)
    if not tok.get("path"):
      tok.update(path=os.path.join(config.init.workdir, "tokenizer", "spm.model"), kind="sentencepiece")
      settings = os.path.join(config.init.workdir, "tokenizer", "tokenizer.json")
      if os.path.exists(settings):
        tok["lower_case"] = _read_json(settings).get("lower_case", tok.get("lower_case", True))
  elif kind == "hf":
    cfg, _, _ = _hf_start(config.init.hf_checkpoint)
    model = dataclasses.asdict(cfg)
    path = config.init.hf_checkpoint
    vocab, spm = os.path.join(path, "vocab.txt"), os.path.join(path, "spiece.model")
    if os.path.exists(vocab):
      lower = True
      tc = os.path.join(path, "tokenizer_config.json")
      if os.path.exists(tc):
        lower = bool(_read_json(tc).get("do_lower_case", True))
      tok = dict(kind="wordpiece", path=vocab, lower_case=lower)
    elif os.path.exists(spm):
      tok = dict(kind="sentencepiece", path=spm, lower_case=True)
    else:
      raise FileNotFoundError(f"config.init.hf_checkpoint={path!r} has no vocab.txt or spiece.model: "
                              "the tokenizer comes with the starting point.")
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


def check_head(config, num_labels: int) -> None:
  """An HF starting point's classification head must have the task's number of outputs."""
  if start_kind(config) != "hf" or config.finetune.random_init:
    return
  source = config.init.hf_checkpoint
  _, _, head = _hf_start(source)
  if head is not None and head["num_labels"] != num_labels:
    raise ValueError(f"config.init.hf_checkpoint={source!r} has a {head['num_labels']}-label head but task "
                     f"{config.finetune.task!r} has {num_labels} labels; use a backbone checkpoint.")


def _abstract_state_on_one_device(config):
  """The train state's ShapeDtypeStructs of a run's config, as train.setup builds it, placed on
  this process's first device (each host reads whole arrays; warm_start.overwrite reshards)."""
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  s = train.setup(config, devices=jax.devices()[:1], check=False)
  return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), s["abstract"], s["state_sh"])


def restore_pretrained(workdir: str, which: str, backbone: bool = True):
  """Params of a pretraining workdir's checkpoint (latest | best | a step), as numpy: the
  backbone ({"bert": ...}), or with backbone=False the whole pretraining model's (heads too).
  Always in the unrolled layout (a run with config.model.scan_layers is unstacked)."""
  from bert_jax import checkpointing  # pylint: disable=g-import-not-at-top
  pre = pretraining_config(workdir)
  task = objectives.get_task(pre)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), pre.checkpoint, read_only=True,
                                    best_metric=task.best_metric, best_mode=task.best_mode)
  steps = ckpt.all_steps()
  if not steps:
    raise FileNotFoundError(f"config.init.workdir={workdir!r} holds no checkpoint under checkpoints/.")
  if which == "latest":
    step = None
  elif which == "best":
    step = ckpt.best_step()
    if step is None:
      raise ValueError(f"config.init.checkpoint='best': {workdir} has no checkpoint with eval metrics.")
  else:
    step = int(which)
    if step not in steps:
      raise ValueError(f"config.init.checkpoint={which!r}: {workdir} has steps {steps}.")
  restored = ckpt.restore(_abstract_state_on_one_device(pre), step)
  ckpt.close()
  if restored is None:
    raise ValueError(f"No readable checkpoint in {workdir}/checkpoints.")
  state, _, at = restored
  _print(f"Pretrained weights: step {at} of {workdir}")
  params = models.unstack_layers(jax.device_get(state["params"]))
  return models.backbone_params(params) if backbone else params


# ----------------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _load(task_name, source, path, split, labels, tok_kind, tok_path, lower, max_len, truncation,
          subset, subset_seed):
  from bert_jax.data import glue, tokenizers  # pylint: disable=g-import-not-at-top  # TF only there
  info = glue.get_task(task_name)
  ex = glue.read_examples(info, source, path, split, labels=labels or None)
  if subset and subset < len(ex):
    keep = np.sort(np.random.default_rng(subset_seed).permutation(len(ex))[:subset])
    ex = glue.Examples([ex.text_a[i] for i in keep], None if ex.text_b is None else [ex.text_b[i] for i in keep],
                       ex.label[keep], ex.idx[keep])
  tok = tokenizers.load(tok_path, tok_kind, lower)
  return glue.featurize(ex, tok, max_len, truncation=truncation), tok.vocab_size


def task_info(config):
  from bert_jax.data import glue  # pylint: disable=g-import-not-at-top
  return glue.get_task(config.finetune.task)


def label_names(config) -> tuple[str, ...] | None:
  from bert_jax.data import glue  # pylint: disable=g-import-not-at-top
  info = task_info(config)
  if config.finetune.labels:
    return tuple(s.strip() for s in config.finetune.labels.split(","))
  return glue.load_labels(info, config.finetune.data_dir) if info.labels is not None else None


def load_split(config, split: str) -> dict[str, np.ndarray]:
  f, t = config.finetune, config.data.tokenizer
  is_train = split == "train"
  feats, vocab = _load(f.task, f.source, f.data_dir, split, label_names(config) if f.task == "tsv" else None,
                       t.kind, t.path, bool(t.lower_case), int(config.data.max_seq_length), f.truncation,
                       int(f.train_examples) if is_train else 0, int(f.subset_seed))
  if vocab > config.model.vocab_size:
    raise ValueError(f"The tokenizer has {vocab} ids but config.model.vocab_size={config.model.vocab_size}: "
                     "the tokenizer does not belong to the starting point's model.")
  return feats


def eval_splits(config) -> tuple[str, ...]:
  if config.finetune.task in TASK_KINDS:
    return task_class(config).eval_splits(config)
  info = task_info(config)
  return (config.finetune.eval_split,) if config.finetune.eval_split else tuple(info.eval_splits)


# Fine-tuning tasks beside GLUE classification, by config.finetune.task: "module:Class", imported
# lazily. Such a class gives the driver classmethods prepare_data(config) -> number of training
# examples (checking data and head first), eval_splits(config), metric_names(config); and methods
# eval_batches(split, batch_size), write_outputs(out_dir) (after scoring), export(params, hf_dir).
TASK_KINDS = {"squad": "bert_jax.qa:QuestionAnswering", "squad_v2": "bert_jax.qa:QuestionAnswering",
              "conll2003": "bert_jax.tagging:TokenClassification", "conll": "bert_jax.tagging:TokenClassification"}


def task_class(config):
  """The Task class of config.finetune.task (a bad task name fails here)."""
  name = config.finetune.task
  if name in TASK_KINDS:
    import importlib  # pylint: disable=g-import-not-at-top
    module, cls = TASK_KINDS[name].split(":")
    return getattr(importlib.import_module(module), cls)
  task_info(config)
  return Classification


def get_task(config) -> objectives.Task:
  return task_class(config)(config)


def train_size(config) -> int:
  kind = task_class(config)
  return kind.prepare_data(config) if kind is not Classification else len(load_split(config, "train")["label"])


def metric_names(config) -> tuple[str, ...]:
  kind = task_class(config)
  return kind.metric_names(config) if kind is not Classification else tuple(task_info(config).metrics)


# ----------------------------------------------------------------------------------------------
# The task.
# ----------------------------------------------------------------------------------------------
class Classification(objectives.Task):
  """Sequence classification (softmax cross-entropy) or regression (MSE, one output)."""

  best_mode = "max"

  def __init__(self, config):
    super().__init__(config)
    self.info = task_info(config)
    self.labels = label_names(config)
    self.regression = self.labels is None
    self.num_labels = 1 if self.regression else len(self.labels)
    self.model = models.ForSequenceClassification(models.validate(config.model), self.num_labels)
    L = config.data.max_seq_length
    tok = batch_lib.Feature((L,), "int32", ("length",))
    self.features = {"input_ids": tok, "input_mask": tok, "token_type_ids": tok,
                     "label": batch_lib.Feature((), "float32" if self.regression else "int32"),
                     "weight": batch_lib.Feature((), "float32")}
    self.best_metric = f"eval/{self.info.main_metric}"

  def logits(self, params, batch, rng=None, deterministic=True):
    return self.model.apply({"params": params}, **models.model_inputs(self.model, batch),
                            deterministic=deterministic, rngs=None if deterministic else {"dropout": rng})

  def loss(self, params, batch, rng, deterministic=False, frozen=None):
    del frozen
    logits = self.logits(params, batch, rng, deterministic)
    w = batch["weight"]
    if self.regression:
      per = jnp.square(logits[:, 0] - batch["label"])
      metrics = {}
    else:
      logp = jax.nn.log_softmax(logits, -1)
      per = -jnp.take_along_axis(logp, batch["label"][:, None], -1)[:, 0]
      correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
      metrics = {"accuracy": objectives._pair(w * correct, w)}  # pylint: disable=protected-access
    loss = jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1e-6)
    metrics["loss"] = objectives._pair(w * per, w)  # pylint: disable=protected-access
    return loss, metrics

  def eval_step(self, params, batch, rng, frozen=None):
    metrics = self.loss(params, batch, rng, deterministic=True, frozen=frozen)[1]
    logits = self.logits(params, batch)
    pred = logits[:, 0] if self.regression else jnp.argmax(logits, -1)
    return metrics, {"pred": pred, "label": batch["label"], "weight": batch["weight"]}

  def host_metrics(self, outputs):
    from bert_jax import metrics  # pylint: disable=g-import-not-at-top
    real = outputs["weight"] > 0
    return metrics.compute(self.info.metrics, outputs["pred"][real], outputs["label"][real])

  def train_line(self, values):
    return f"loss {values['loss']:.4f}" + (f" | accuracy {values['accuracy']:.3f}" if "accuracy" in values else "")

  def eval_line(self, values):
    return " | ".join(f"{k} {values[k]:.4f}" for k in (*self.info.metrics, "loss"))

  def trainable(self, params):
    """full: everything; lora: LoRA factors + task head; adapters: adapters, LayerNorms, head
    (Houlsby et al. train the layer norms too)."""
    method = self.config.finetune.method
    if method == "full":
      return None
    from bert_jax.models import peft  # pylint: disable=g-import-not-at-top
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

  def start_params(self):
    """(source name, numpy params) of the starting point, or None (random init)."""
    config = self.config
    kind = start_kind(config)
    if kind == "none" or config.finetune.random_init:
      return None
    if kind == "workdir":
      return config.init.workdir, restore_pretrained(config.init.workdir, config.init.checkpoint)
    check_head(config, self.num_labels)
    return config.init.hf_checkpoint, _hf_start(config.init.hf_checkpoint)[1]

  def warm_start(self, params):
    start = self.start_params()
    if start is None:
      return params
    return warm_start.overwrite(params, start[1], start[0], "the starting point does not fit config.model.")[0]

  def inputs(self, workdir, start_batch):
    del workdir
    c = self.config
    train = load_split(c, "train")
    ebs = c.eval.batch_size or c.train.batch_size
    split = eval_splits(c)[0]
    return (epoch_batches(train, c.train.batch_size, start_batch, c.data.seed),
            lambda: padded_batches(load_split(c, split), ebs))


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
# The driver: seeds, best checkpoint scoring, test predictions, results.json.
# ----------------------------------------------------------------------------------------------
def prepare(config) -> ml_collections.ConfigDict:
  """A copy of `config` with the model and tokenizer of the starting point and the step
  counts of the data (epochs, warmup proportion, one eval and checkpoint per epoch)."""
  config = copy.deepcopy(config)
  f = config.finetune
  if f.seeds < 1 or f.epochs <= 0:
    raise ValueError(f"config.finetune.seeds={f.seeds} must be >= 1 and config.finetune.epochs={f.epochs} > 0.")
  if not 0 <= f.warmup_proportion < 1:
    raise ValueError(f"config.finetune.warmup_proportion={f.warmup_proportion} must be in [0, 1).")
  kind = task_class(config)  # a bad task name fails here
  resolve_model(config)
  if config.get("distill") is not None:  # the student's depth (bert_jax.distill)
    from bert_jax import distill  # pylint: disable=g-import-not-at-top
    distill.shape_student(config)
  models.validate(config.model)
  if kind is not Classification:
    n = kind.prepare_data(config)
  else:
    labels = label_names(config)
    check_head(config, 1 if labels is None else len(labels))  # before anything is compiled
    n = len(load_split(config, "train")["label"])
    for split in eval_splits(config):
      load_split(config, split)
  per_epoch = max(1, -(-n // config.train.batch_size))
  num_steps = int(round(f.epochs * per_epoch))
  config.train.num_steps = num_steps
  config.optimizer.warmup_steps = int(round(f.warmup_proportion * num_steps))
  config.eval.every_steps = config.checkpoint.every_steps = per_epoch
  config.log.every_steps = min(config.log.every_steps, per_epoch)
  return config


DONE_FILE = "finished.json"  # in a seed directory: the seed trained to its end or early-stopped


class Incomplete(RuntimeError):
  """A seed's training stopped before its end; `status` is train_and_evaluate's (e.g. preempted)."""

  def __init__(self, status: str, message: str):
    super().__init__(message)
    self.status = status


def _write_json(path: str, value) -> None:
  if jax.process_index() == 0:
    from etils import epath  # pylint: disable=g-import-not-at-top
    epath.Path(path).write_text(json.dumps(value, indent=2))


def _finished(seed_dir: str, config) -> dict | None:
  """The seed's finish record if it finished with this config's step count, else None."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  path = os.path.join(seed_dir, DONE_FILE)
  if not epath.Path(path).exists():
    return None
  done = _read_json(path)
  return done if done.get("num_steps") == int(config.train.num_steps) else None


def _median(values):
  return float(np.median(values)) if values else float("nan")


def run(config, workdir: str) -> dict[str, Any]:
  """Fine-tunes config.finetune.seeds times; returns (and writes) the results dict."""
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  config = prepare(config)
  seeds = []
  for k in range(int(config.finetune.seeds)):
    c = copy.deepcopy(config)
    c.seed = config.seed + k
    c.data.seed = config.data.seed + k
    seed_dir = os.path.join(workdir, f"seed_{k}")
    _print(f"--- {config.finetune.task}: seed {k + 1}/{config.finetune.seeds} in {seed_dir}")
    done = _finished(seed_dir, c)
    if done:
      # Not train_and_evaluate again: it would resume an early-stopped seed and train on.
      _print(f"Seed {k} already finished ({done['status']} at step {done['step']}); scoring its best checkpoint.")
    else:
      out = train.train_and_evaluate(c, seed_dir)
      if out["status"] not in ("done", "early_stopped"):
        raise Incomplete(out["status"], f"Seed {k} stopped with status {out['status']!r}; re-run the same command "
                         "to resume.")
      _write_json(os.path.join(seed_dir, DONE_FILE),
                  {"status": out["status"], "step": int(out["step"]), "num_steps": int(c.train.num_steps)})
    seeds.append(score(c, seed_dir))
  splits = eval_splits(config)
  names = metric_names(config)
  median = {s: {m: _median([r["eval"][s][m] for r in seeds]) for m in names} for s in splits}
  results = {
      "task": config.finetune.task, "source": config.finetune.source,
      "start": config.init.workdir or config.init.hf_checkpoint or "random",
      "random_init": bool(config.finetune.random_init), "method": config.finetune.method,
      "train_examples": train_size(config), "epochs": config.finetune.epochs,
      "num_steps": config.train.num_steps, "learning_rate": config.optimizer.learning_rate,
      "seeds": seeds, "median": median,
  }
  _write_json(os.path.join(workdir, "results.json"), results)  # local or gs://
  for split in splits:
    for m in names:
      each = ", ".join(f"{r['eval'][split][m]:.4f}" for r in seeds)
      _print(f"{config.finetune.task} {split} {m}: median {median[split][m]:.4f} (seeds: {each})")
  return results


def score(config, seed_dir: str) -> dict[str, Any]:
  """Eval metrics of the best checkpoint on every eval split, and GLUE test predictions."""
  from bert_jax import checkpointing, train  # pylint: disable=g-import-not-at-top
  from bert_jax.data import glue  # pylint: disable=g-import-not-at-top
  s, (_, eval_step, _) = train._setup_cached(config)  # pylint: disable=protected-access
  task = copy.copy(s["task"])  # the cached task may come from a config with other data paths
  task.config = config
  ckpt = checkpointing.Checkpointer(os.path.join(seed_dir, "checkpoints"), config.checkpoint,
                                    best_metric=task.best_metric, best_mode=task.best_mode)
  abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), s["abstract"],
                          s["state_sh"])
  ebs = config.eval.batch_size or config.train.batch_size
  frozen = train.frozen_args(s, task)
  best = ckpt.best_step() or ckpt.latest_step()
  state, _, _ = ckpt.restore(abstract, best)
  ckpt.close()
  out = {"best_step": int(best), "eval": {}}
  with train.mesh_context(s["mesh"], s["rules"]):
    for split in eval_splits(config):
      batches = ((lambda sp=split: task.eval_batches(sp, ebs)) if not isinstance(task, Classification) else
                 (lambda sp=split: padded_batches(load_split(config, sp), ebs)))
      out["eval"][split] = train.evaluate(eval_step, state["params"], batches, s, task, frozen)
      if not isinstance(task, Classification) and jax.process_index() == 0:
        out.setdefault("predictions", []).extend(task.write_outputs(os.path.join(seed_dir, "predictions", split)))
    if not isinstance(task, Classification):
      return out
    info = task_info(config)
    for split in info.test_splits:
      try:
        feats = load_split(config, split)
      except FileNotFoundError:
        continue
      preds = []
      for b in padded_batches(feats, ebs):
        preds.append(jax.device_get(eval_step(state["params"], train._to_global(b, s), *frozen)[1]["pred"]))  # pylint: disable=protected-access
      pred = np.concatenate(preds)[:len(feats["label"])]
      if jax.process_index() == 0:
        out.setdefault("test_predictions", []).append(glue.write_predictions(
            info, split, feats["idx"], pred, os.path.join(seed_dir, "predictions"), labels=task.labels))
  return out


def load_best(seed_dir: str):
  """(config, task, params as numpy) of a fine-tuned run's best checkpoint (<seed_dir>/config.json)."""
  from bert_jax import checkpointing  # pylint: disable=g-import-not-at-top
  path = os.path.join(seed_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: pass a fine-tuning seed directory (<workdir>/seed_<k>).")
  config = ml_collections.ConfigDict(_read_json(path))
  if config.objective.name != "classify":
    raise ValueError(f"{seed_dir} is a {config.objective.name!r} run, not a fine-tuning run.")
  task = objectives.get_task(config)
  abstract = _abstract_state_on_one_device(config)
  ckpt = checkpointing.Checkpointer(os.path.join(seed_dir, "checkpoints"), config.checkpoint, read_only=True,
                                    best_metric=task.best_metric, best_mode=task.best_mode)
  step = ckpt.best_step() or ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"{seed_dir}/checkpoints holds no checkpoint.")
  state, _, _ = ckpt.restore(abstract, step)
  ckpt.close()
  return config, task, jax.device_get(state["params"])


def export(seed_dir: str, hf_dir: str) -> str:
  """The best checkpoint of a fine-tuned run as an HF *ForSequenceClassification directory
  (LoRA merged), with the tokenizer's vocab.txt when it is a WordPiece one."""
  import shutil  # pylint: disable=g-import-not-at-top
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top
  config, task, params = load_best(seed_dir)
  if not isinstance(task, Classification):  # *ForQuestionAnswering, *ForTokenClassification
    task.export(params, hf_dir)
  else:
    problem = "regression" if task.regression else "single_label_classification"
    id2label = None if task.regression else dict(enumerate(task.labels))
    hf.export_classifier(config.model, params, task.num_labels, hf_dir, problem_type=problem, id2label=id2label)
  tok = config.data.tokenizer
  if tok.kind == "wordpiece" and os.path.exists(tok.path):
    shutil.copy(tok.path, os.path.join(hf_dir, "vocab.txt"))
  return hf_dir
