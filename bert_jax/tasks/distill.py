r"""Knowledge distillation: a frozen teacher's soft targets train a smaller student.

Task distillation (config.objective.name=classify with config.distill.teacher set):

  python -m bert_jax.main --config=configs/finetune.py:sst2,distill --workdir=runs/sst2_student \
      --config.distill.teacher=runs/sst2_minilm/seed_0 \
      --config.init.hf_checkpoint=../shared/weights/all-MiniLM-L6-v2 \
      --config.distill.student_layers=2 --config.finetune.data_dir=../shared/data/glue/SST-2

  loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
         + (1 - alpha) * hard-label loss                                   (Hinton et al. 2015)
         + hidden_weight * MSE(student hidden @ W, teacher hidden)          (TinyBERT, learned W)
         + attention_weight * MSE(student attention scores, teacher's)      (TinyBERT)
  Regression tasks use MSE(student, teacher) as the soft term (no temperature).

MLM distillation (config.objective.name=mlm with config.distill.teacher set): the same soft
term over the masked positions' vocabulary distributions (DistilBERT), (1 - alpha) * (MLM +
NSP/SOP), and the optional hidden / attention terms.

The teacher (config.distill.teacher) is one of
  a bert_jax fine-tuning seed directory (<workdir>/seed_<k>: its best checkpoint),
  a bert_jax pretraining workdir (MLM distillation: its latest checkpoint),
  an HF directory (task distillation: *ForSequenceClassification with its head; MLM
  distillation: *ForPreTraining / *ForMaskedLM) or a converted one.
It is frozen state of the task contract (bert_jax.tasks.base.Task.frozen_params): placed on the mesh
once with the student's logical sharding rules, passed to the train and eval steps, never
in the optimizer state and never in the student's checkpoints.

The student is config.model (fine-tuning: the starting point's architecture) with
config.distill.student_layers layers (0: as is). Its weights come from config.init (the
starting point) or, with config.distill.student_init=teacher, from the teacher; in both
cases student layer i takes layer i * k of the source (k = source layers / student layers),
as DistilBERT takes every other teacher layer. The hidden / attention terms pair student
layer m (1-based) with teacher layer m * k' (k' = teacher layers / student layers), and the
embedding outputs with each other, as TinyBERT.

alpha = 0 with no hidden / attention term trains the student on the labels alone; the
teacher is then not loaded (the label-only baseline of the same student).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import models
from bert_jax import starts
from bert_jax.interop import hf
from bert_jax.models import layers
from bert_jax.tasks import base
from bert_jax.tasks import classification
from bert_jax.tasks import pretraining

STUDENT_INITS = ("start", "teacher")
EXTRA_LAYERS = ("", "random")  # config.distill.student_init_extra_layers


def enabled(config) -> bool:
  """True when config.distill asks for a teacher."""
  d = config.get("distill")
  return d is not None and bool(d.teacher) and (
      d.alpha > 0 or d.hidden_weight > 0 or d.attention_weight > 0)


def active(config) -> bool:
  """True when config.distill shapes the student or names a teacher (the task of get_task)."""
  d = config.get("distill")
  return d is not None and (bool(d.teacher) or d.student_layers > 0)


def validate(config) -> None:
  """Cheap checks of config.distill (before anything is loaded or compiled)."""
  d = config.get("distill")
  if d is None:
    return
  if not 0.0 <= d.alpha <= 1.0:
    raise ValueError(f"config.distill.alpha={d.alpha} must be in [0, 1] (weight of the soft targets).")
  if d.temperature <= 0:
    raise ValueError(f"config.distill.temperature={d.temperature} must be > 0.")
  if d.hidden_weight < 0 or d.attention_weight < 0:
    raise ValueError("config.distill.hidden_weight and attention_weight must be >= 0.")
  if d.student_layers < 0:
    raise ValueError(f"config.distill.student_layers={d.student_layers} must be >= 0 (0: as the model).")
  if d.student_init not in STUDENT_INITS:
    raise ValueError(f"config.distill.student_init={d.student_init!r}; choose one of {STUDENT_INITS}.")
  if d.get("student_init_extra_layers", "") not in EXTRA_LAYERS:
    raise ValueError(f"config.distill.student_init_extra_layers={d.student_init_extra_layers!r}; choose one of "
                     f"{EXTRA_LAYERS} ('': refuse a student deeper than its source).")
  if d.student_init == "teacher" and not d.teacher:
    raise ValueError("config.distill.student_init='teacher' needs config.distill.teacher (a fine-tuning seed "
                     "dir, a pretraining workdir or an HF dir).")
  if d.teacher and "://" not in d.teacher and not os.path.isdir(d.teacher):
    raise ValueError(f"config.distill.teacher={d.teacher!r} is not a directory.")


def shape_student(config) -> None:
  """config.model.num_hidden_layers = config.distill.student_layers (when set)."""
  d = config.get("distill")
  if d is None:
    return
  validate(config)
  if d.student_layers:
    _check_depth(config)
    config.model.num_hidden_layers = int(d.student_layers)
    if config.model.num_hidden_groups and config.model.num_hidden_groups > d.student_layers:
      config.model.num_hidden_groups = int(d.student_layers)


def _check_depth(config) -> None:
  """A student deeper than the model its layers come from (the teacher with student_init=teacher,
  else the starting point) would train its extra layers from random: refused unless
  config.distill.student_init_extra_layers=random says so."""
  d = config.distill
  if d.student_init == "teacher":
    source = f"config.distill.teacher={d.teacher!r}"
    layers = load_teacher(d.teacher, "classify" if "finetune" in config else "mlm")[0].num_hidden_layers
  elif config.init.hf_checkpoint or config.init.workdir:
    if "finetune" in config and config.finetune.random_init:
      return
    source = f"the starting point ({config.init.hf_checkpoint or config.init.workdir})"
    layers = config.model.num_hidden_layers  # the start's (bert_jax.tasks.finetuning.resolve_model)
  else:
    return  # a random student: no source layers
  if d.student_layers > layers and layers != d.student_layers:
    if d.get("student_init_extra_layers", "") != "random":
      raise ValueError(f"config.distill.student_layers={d.student_layers} is deeper than {source}, which has "
                       f"{layers} layers: layers {layers}..{d.student_layers - 1} would start random. Set "
                       f"config.distill.student_layers <= {layers}, or config.distill.student_init_extra_layers="
                       "random to train them from scratch.")
    if jax.process_index() == 0:
      print(f"Student layers {layers}..{d.student_layers - 1} start random "
            "(config.distill.student_init_extra_layers=random).", flush=True)


# ----------------------------------------------------------------------------------------------
# The teacher.
# ----------------------------------------------------------------------------------------------
def teacher_kind(path: str) -> str:
  """finetuning (a seed dir) | pretraining (a workdir) | hf (an HF or converted dir)."""
  kind = starts.kind(path)
  if kind == "hf" and not os.path.exists(os.path.join(path, starts.CONFIG_FILE)) and os.path.exists(
      os.path.join(path, "results.json")):
    raise ValueError(f"config.distill.teacher={path!r} is a fine-tuning run with several seeds; "
                     "pass one seed directory (<workdir>/seed_<k>).")
  return kind


@functools.lru_cache(maxsize=2)
def load_teacher(path: str, task_kind: str) -> tuple[Any, Any, dict[str, Any]]:
  """(model config, params as numpy, info) of a teacher; task_kind: classify | mlm.

  info: kind, num_labels (classify), tokenizer (path of the teacher's tokenizer or "").
  """
  kind = teacher_kind(path)
  if task_kind == "classify":
    if kind == "finetuning":
      config, params = starts.finetuned_params(path)
      return (models.validate(config.model), params,
              dict(kind=kind, num_labels=starts.num_outputs(params), tokenizer=config.data.tokenizer.path))
    if kind == "hf":
      cfg, params, head = hf.load_classifier(path)
      if head is None:
        raise ValueError(f"config.distill.teacher={path!r} has no sequence-classification head: a task "
                         "teacher must be fine-tuned first (bert_jax.finetune, or an HF "
                         "*ForSequenceClassification directory).")
      return cfg, params, dict(kind=kind, num_labels=head["num_labels"], tokenizer=starts.hf_tokenizer(path))
    raise ValueError(f"config.distill.teacher={path!r} is a pretraining workdir; task distillation needs a "
                     "fine-tuned teacher (a fine-tuning seed dir or an HF *ForSequenceClassification dir).")
  if kind == "pretraining":
    return _restore_pretraining(path)
  if kind == "hf":
    cfg, params, imported = hf.import_hf(path)
    if cfg.family == "electra" or any(k.startswith("mlm/") for k in imported["initialized"]):
      raise ValueError(f"config.distill.teacher={path!r} holds no BERT/ALBERT MLM head; MLM distillation "
                       "needs a *ForPreTraining / *ForMaskedLM checkpoint.")
    return cfg, params, dict(kind=kind, tokenizer=starts.hf_tokenizer(path))
  raise ValueError(f"config.distill.teacher={path!r} is a fine-tuning run; MLM distillation needs a "
                   "pretraining workdir or an HF *ForPreTraining / *ForMaskedLM directory.")


def _restore_pretraining(workdir: str):
  """Full params (backbone and heads) of a pretraining workdir's latest checkpoint."""
  pre = starts.run_config(workdir)
  if pre.model.family == "electra":
    raise ValueError(f"config.distill.teacher={workdir!r} is an ELECTRA run; MLM distillation needs a "
                     "BERT/ALBERT teacher.")
  _, params, _ = starts.run_params(workdir, key="config.distill.teacher")
  tok = pre.data.tokenizer.path or os.path.join(workdir, "tokenizer", "spm.model")
  return models.validate(pre.model), params, dict(kind="pretraining", tokenizer=tok)


def _file_hash(path: str) -> str | None:
  if not path or not os.path.exists(path):
    return None
  with open(path, "rb") as f:
    return hashlib.sha1(f.read()).hexdigest()


def check_teacher(config, teacher_cfg, info: dict[str, Any], num_labels: int | None) -> None:
  """The teacher must read the student's inputs: same vocabulary (and labels, and heads for
  the attention term, layer counts that divide for the hidden / attention terms)."""
  src = f"config.distill.teacher={config.distill.teacher!r}"
  if teacher_cfg.vocab_size != config.model.vocab_size:
    raise ValueError(f"{src} has vocab_size {teacher_cfg.vocab_size} but the student has "
                     f"{config.model.vocab_size}: teacher and student must share the tokenizer.")
  a, b = _file_hash(info.get("tokenizer", "")), _file_hash(config.data.tokenizer.path)
  if a is not None and b is not None and a != b:
    raise ValueError(f"{src} was trained with the tokenizer {info['tokenizer']} but the student reads "
                     f"{config.data.tokenizer.path}: teacher and student must share the tokenizer.")
  if num_labels is not None and info.get("num_labels") != num_labels:
    raise ValueError(f"{src} has {info.get('num_labels')} outputs but task {config.finetune.task!r} has "
                     f"{num_labels}.")
  d = config.distill
  if d.hidden_weight > 0 or d.attention_weight > 0:
    for who, c in (("teacher", teacher_cfg), ("student", models.validate(config.model))):
      if c.num_groups != c.num_hidden_layers or c.inner_group_num != 1:
        raise ValueError(f"config.distill.hidden_weight / attention_weight: the {who} shares layers "
                         "(ALBERT); the layer-wise terms need one parameter set per layer.")
    if teacher_cfg.num_hidden_layers % config.model.num_hidden_layers:
      raise ValueError(f"config.distill.hidden_weight / attention_weight: the teacher's "
                       f"{teacher_cfg.num_hidden_layers} layers are not a multiple of the student's "
                       f"{config.model.num_hidden_layers} (config.distill.student_layers).")
  if d.attention_weight > 0 and teacher_cfg.num_attention_heads != config.model.num_attention_heads:
    raise ValueError(f"config.distill.attention_weight > 0 compares attention maps head by head, but the "
                     f"teacher has {teacher_cfg.num_attention_heads} heads and the student "
                     f"{config.model.num_attention_heads}; set config.distill.attention_weight=0.")


# ----------------------------------------------------------------------------------------------
# Student init from every k-th layer.
# ----------------------------------------------------------------------------------------------
_LAYER = re.compile(r"^group_(\d+)_layer_(\d+)$")


def every_kth_layer(source_params, num_student_layers: int):
  """`source_params` with encoder layer group_{i*k} renamed group_i for i < num_student_layers
  (k = source layers // student layers) and the other layers dropped: DistilBERT's init.
  Scanned sources are unstacked first; starts.overwrite restacks for a scanned student."""

  def remap(encoder):
    groups = sorted({int(m.group(1)) for k in encoder if (m := _LAYER.match(k))})
    n = len(groups)
    if n <= num_student_layers:
      return encoder
    k = n // num_student_layers
    out = {key: v for key, v in encoder.items() if not _LAYER.match(key)}
    for key, v in encoder.items():
      m = _LAYER.match(key)
      if m and int(m.group(1)) % k == 0 and int(m.group(1)) // k < num_student_layers:
        out[f"group_{int(m.group(1)) // k}_layer_{m.group(2)}"] = v
    return out

  def walk(tree):
    if not isinstance(tree, dict):
      return tree
    return {k: remap(walk(v)) if k == "encoder" else walk(v) for k, v in tree.items()}

  return walk(models.unstack_layers(source_params))


# ----------------------------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------------------------
def soft_cross_entropy_kl(student_logits, teacher_logits, temperature: float):
  """Per-row KL(softmax(t / T) || softmax(s / T)) * T^2 (Hinton et al.'s gradient scale)."""
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, -1)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, -1)
  return jnp.sum(jnp.exp(t) * (t - s), -1) * temperature ** 2


def _is_hidden_module(module, method_name: str) -> bool:
  return method_name == "__call__" and isinstance(module, (layers.Embeddings, layers.TransformerLayer))


def apply_with_intermediates(model, params, inputs: dict, *, deterministic: bool, rng=None, method=None):
  """(outputs, embedding output, [layer outputs], [attention scores]) of one forward pass.

  Scanned layers (config.model.scan_layers) sow one stacked value under `layers`: layer i is
  its row i."""
  out, state = model.apply({"params": params}, **inputs, deterministic=deterministic, method=method,
                           rngs=None if deterministic else {"dropout": rng},
                           capture_intermediates=_is_hidden_module, mutable=["intermediates"])
  inter = state["intermediates"]
  flat = jax.tree_util.tree_flatten_with_path(inter)[0]
  emb, hidden, scores = None, {}, {}
  for path, value in flat:
    keys = [str(getattr(p, "key", p)) for p in path]
    layer = next((int(m.group(1)) for k in keys if (m := _LAYER.match(k))), None)
    if layers.SCANNED in keys:
      if "attention_scores" in keys:
        scores.update(enumerate(value))
      elif keys[-2] == "__call__":
        hidden.update(enumerate(value))
    elif "attention_scores" in keys:
      scores[layer] = value
    elif layer is not None and keys[-2] == "__call__":
      hidden[layer] = value
    elif "embeddings" in keys and keys[-2] == "__call__":
      emb = value
  return out, emb, [hidden[i] for i in sorted(hidden)], [scores[i] for i in sorted(scores)]


def hidden_mse(student_h, teacher_h, kernel, mask):
  """mean over real tokens and teacher width of (student_h @ kernel - teacher_h)^2."""
  proj = jnp.einsum("bld,de->ble", student_h.astype(jnp.float32), kernel)
  err = jnp.mean(jnp.square(proj - teacher_h.astype(jnp.float32)), -1)
  w = mask.astype(jnp.float32)
  return jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)


def attention_mse(student_s, teacher_s, mask):
  """MSE of [B, N, L, L] attention scores over real (query, key) pairs (TinyBERT)."""
  m = mask.astype(jnp.float32)
  w = m[:, None, :, None] * m[:, None, None, :]
  err = jnp.square(student_s.astype(jnp.float32) - teacher_s.astype(jnp.float32)) * w
  return jnp.sum(err) / jnp.maximum(jnp.sum(w) * student_s.shape[1], 1.0)


class Distiller:
  """The distillation terms shared by the task and MLM variants: teacher model + params,
  the learned projections (params["distill"]) and the layer pairing."""

  def __init__(self, config, student_model, teacher_model, teacher_cfg):
    self.config = config
    d = config.distill
    self.alpha, self.temperature = float(d.alpha), float(d.temperature)
    self.hidden_weight, self.attention_weight = float(d.hidden_weight), float(d.attention_weight)
    self.layerwise = self.hidden_weight > 0 or self.attention_weight > 0
    self.student_model, self.teacher_model = student_model, teacher_model
    self.student_cfg, self.teacher_cfg = models.validate(config.model), teacher_cfg
    self.k = teacher_cfg.num_hidden_layers // max(1, self.student_cfg.num_hidden_layers)

  def projection_params(self, rng):
    """{"hidden_proj": [student width, teacher width]} per paired hidden state (embeddings, layers)."""
    if self.hidden_weight <= 0:
      return None
    sw, tw = self.student_cfg.hidden_size, self.teacher_cfg.hidden_size
    se = self.student_cfg.embedding_size or sw
    te = self.teacher_cfg.embedding_size or tw
    init = nn.initializers.normal(self.student_cfg.initializer_range)
    r_emb, r_h = jax.random.split(rng)
    return {"embedding_proj": init(r_emb, (se, te), jnp.float32), "hidden_proj": init(r_h, (sw, tw), jnp.float32)}

  def projection_specs(self):
    if self.hidden_weight <= 0:
      return None
    P = jax.sharding.PartitionSpec
    return {"embedding_proj": P(None, None), "hidden_proj": P(None, None)}

  def layerwise_loss(self, proj, s_emb, s_hidden, s_scores, t_emb, t_hidden, t_scores, mask):
    """(hidden term, attention term): student layer m <-> teacher layer m * k (1-based)."""
    pairs = [(i, (i + 1) * self.k - 1) for i in range(len(s_hidden))]
    h = a = jnp.zeros((), jnp.float32)
    if self.hidden_weight > 0:
      h = hidden_mse(s_emb, t_emb, proj["embedding_proj"], mask)
      for i, j in pairs:
        h = h + hidden_mse(s_hidden[i], jax.lax.stop_gradient(t_hidden[j]), proj["hidden_proj"], mask)
      h = h / (len(pairs) + 1)
    if self.attention_weight > 0:
      for i, j in pairs:
        a = a + attention_mse(s_scores[i], jax.lax.stop_gradient(t_scores[j]), mask)
      a = a / len(pairs)
    return h, a


# ----------------------------------------------------------------------------------------------
# Task distillation.
def _student(params):
  """The student's own params: without the hidden term's projections (params["distill"])."""
  return {k: v for k, v in params.items() if k != "distill"}


# ----------------------------------------------------------------------------------------------
class _TeacherState:
  """What both distillation tasks add to their base task: the student's params plus the learned
  projections of the hidden term ("distill"), and the frozen teacher (`teacher_task` kind)."""

  teacher_task: str

  def init_params(self, rng):
    r_model, r_proj = jax.random.split(rng)
    params = super().init_params(r_model)
    proj = self.distiller.projection_params(r_proj) if self.use_teacher else None
    return params if proj is None else {**params, "distill": proj}

  def logical_specs(self):
    specs = super().logical_specs()
    proj = self.distiller.projection_specs() if self.use_teacher else None
    return specs if proj is None else {**specs, "distill": proj}

  def frozen_params(self):
    return load_teacher(self.teacher_path, self.teacher_task)[1] if self.use_teacher else None

  def frozen_logical_specs(self):
    return models.logical_specs(self.distiller.teacher_model, self.dummy_batch()) if self.use_teacher else None


class TaskDistillation(_TeacherState, classification.Classification):
  """Classification whose loss adds the teacher's soft targets (see the module docstring)."""

  teacher_task = "classify"

  def __init__(self, config):
    super().__init__(config)
    validate(config)
    self.teacher_path = config.distill.teacher
    self.distiller = None
    if config.distill.teacher:
      t_cfg, _, info = load_teacher(self.teacher_path, "classify")
      check_teacher(config, t_cfg, info, self.num_labels)
      self.distiller = Distiller(config, self.model, models.ForSequenceClassification(t_cfg, self.num_labels),
                                 t_cfg)
    self.use_teacher = enabled(config)

  @classmethod
  def configure(cls, config) -> None:
    """The start's model and tokenizer, then the student's depth (config.distill.student_layers)."""
    super().configure(config)
    shape_student(config)

  def logits(self, params, batch, rng=None, deterministic=True):
    return super().logits(_student(params), batch, rng, deterministic)

  def loss(self, params, batch, rng, deterministic=False, frozen=None):
    if not self.use_teacher or frozen is None:
      return super().loss(params, batch, rng, deterministic)
    dist = self.distiller
    student = _student(params)
    inputs = models.model_inputs(self.model, batch)
    t_inputs = models.model_inputs(dist.teacher_model, batch)
    if dist.layerwise:
      logits, s_emb, s_h, s_a = apply_with_intermediates(self.model, student, inputs,
                                                         deterministic=deterministic, rng=rng)
      t_logits, t_emb, t_h, t_a = apply_with_intermediates(dist.teacher_model, frozen, t_inputs,
                                                           deterministic=True)
    else:
      logits = self.logits(student, batch, rng, deterministic)
      t_logits = dist.teacher_model.apply({"params": frozen}, **t_inputs, deterministic=True)
    t_logits = jax.lax.stop_gradient(t_logits.astype(jnp.float32))
    logits = logits.astype(jnp.float32)
    w = batch["weight"]
    norm = jnp.maximum(jnp.sum(w), 1e-6)
    if self.regression:
      hard = jnp.square(logits[:, 0] - batch["label"])
      soft = jnp.square(logits[:, 0] - t_logits[:, 0])
      metrics = {}
    else:
      logp = jax.nn.log_softmax(logits, -1)
      hard = -jnp.take_along_axis(logp, batch["label"][:, None], -1)[:, 0]
      soft = soft_cross_entropy_kl(logits, t_logits, dist.temperature)
      pred = jnp.argmax(logits, -1)
      metrics = {"accuracy": base.pair(w * (pred == batch["label"]), w),
                 "teacher_accuracy": base.pair(w * (jnp.argmax(t_logits, -1) == batch["label"]), w),
                 "teacher_agreement": base.pair(w * (pred == jnp.argmax(t_logits, -1)), w)}
    hard_loss, soft_loss = jnp.sum(w * hard) / norm, jnp.sum(w * soft) / norm
    loss = dist.alpha * soft_loss + (1 - dist.alpha) * hard_loss
    metrics.update(hard_loss=base.pair(w * hard, w), soft_loss=base.pair(w * soft, w))
    if dist.layerwise:
      h, a = dist.layerwise_loss(params.get("distill"), s_emb, s_h, s_a, t_emb, t_h, t_a, batch["input_mask"])
      loss = loss + dist.hidden_weight * h + dist.attention_weight * a
      metrics.update(hidden_mse=base.pair(h, 1.0), attention_mse=base.pair(a, 1.0))
    metrics["loss"] = base.pair(loss * norm, norm)
    return loss, metrics

  def eval_step(self, params, batch, rng, frozen=None):
    """The student's task metrics; the teacher's accuracy and agreement only with
    config.distill.eval_teacher (a teacher forward over every eval batch)."""
    return super().eval_step(params, batch, rng, frozen if self.config.distill.eval_teacher else None)

  def train_line(self, values):
    line = super().train_line(values)
    if "soft_loss" in values:
      line += f" | soft {values['soft_loss']:.4f} hard {values['hard_loss']:.4f}"
    return line

  def eval_line(self, values):
    line = super().eval_line(values)
    if "teacher_accuracy" in values:
      line += f" | teacher accuracy {values['teacher_accuracy']:.4f} agreement {values['teacher_agreement']:.4f}"
    return line

  def trainable(self, params):
    mask = super().trainable(_student(params))
    if mask is None or "distill" not in params:
      return mask
    return {**mask, "distill": jax.tree.map(lambda _: True, params["distill"])}

  def warm_start(self, params):
    n = self.config.model.num_hidden_layers
    if self.config.distill.student_init == "teacher":
      source, new = f"config.distill.teacher={self.teacher_path!r}", load_teacher(self.teacher_path, "classify")[1]
    else:
      start = self.start_params()
      if start is None:
        return params
      source, new = start
    return starts.overwrite(params, every_kth_layer(new, n), source,
                                "the student does not fit the widths of its source.")[0]



# ----------------------------------------------------------------------------------------------
# MLM distillation.
# ----------------------------------------------------------------------------------------------
class MLMDistillation(_TeacherState, pretraining.Pretraining):
  """MLM whose loss adds the teacher's soft targets over the masked positions."""

  teacher_task = "mlm"

  def __init__(self, config):
    shape_student(config)
    super().__init__(config)
    self.teacher_path = config.distill.teacher
    t_cfg, _, info = load_teacher(self.teacher_path, "mlm")
    check_teacher(config, t_cfg, info, None)
    self.distiller = Distiller(config, self.model, models.build(t_cfg), t_cfg)
    self.use_teacher = enabled(config)
    self.sentence = config.objective.sentence_loss

  def _distill_loss(self, params, batch, rng, deterministic=False, frozen=None):
    dist = self.distiller
    student = _student(params)
    inputs = models.model_inputs(self.model, batch)
    if dist.layerwise:
      out, s_emb, s_h, s_a = apply_with_intermediates(self.model, student, inputs, deterministic=deterministic,
                                                      rng=rng)
      t_out, t_emb, t_h, t_a = apply_with_intermediates(dist.teacher_model, frozen, inputs, deterministic=True)
    else:
      out = self.model.apply({"params": student}, **inputs, deterministic=deterministic,
                             rngs=None if deterministic else {"dropout": rng})
      t_out = dist.teacher_model.apply({"params": frozen}, **inputs, deterministic=True)
    hard, metrics = pretraining.mlm_loss(out["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"])
    if self.sentence != "none":
      s_loss, s_metrics = pretraining.sentence_loss(out["sentence_logits"], batch["next_sentence_labels"],
                                                   self.sentence)
      hard = hard + s_loss
      metrics.update(s_metrics)
    w = batch["masked_lm_weights"].astype(jnp.float32)
    t_logits = jax.lax.stop_gradient(t_out["mlm_logits"])
    soft = soft_cross_entropy_kl(out["mlm_logits"], t_logits, dist.temperature)
    soft_loss = jnp.sum(w * soft) / (jnp.sum(w) + 1e-5)
    loss = dist.alpha * soft_loss + (1 - dist.alpha) * hard
    metrics["soft_loss"] = base.pair(w * soft, w)
    metrics["teacher_mlm_accuracy"] = base.pair(w * (jnp.argmax(t_logits, -1) == batch["masked_lm_ids"]), w)
    if dist.layerwise:
      h, a = dist.layerwise_loss(params.get("distill"), s_emb, s_h, s_a, t_emb, t_h, t_a, batch["input_mask"])
      loss = loss + dist.hidden_weight * h + dist.attention_weight * a
      metrics.update(hidden_mse=base.pair(h, 1.0), attention_mse=base.pair(a, 1.0))
    metrics["loss"] = base.pair(loss, 1.0)
    return loss, metrics

  def loss(self, params, batch, rng, deterministic: bool = False, frozen=None):
    if not self.use_teacher or frozen is None:
      return super().loss(_student(params), batch, rng, deterministic)
    return self._distill_loss(params, batch, rng, deterministic, frozen)

  def eval_step(self, params, batch, rng, frozen=None):
    metrics, out = super().eval_step(_student(params), batch, rng)
    if self.use_teacher and frozen is not None:
      d_metrics = self._distill_loss(params, batch, rng, True, frozen)[1]
      metrics.update({k: d_metrics[k] for k in ("soft_loss", "teacher_mlm_accuracy")})
    return metrics, out

  def train_line(self, values):
    line = super().train_line(values)
    return line + (f" | soft {values['soft_loss']:.4f}" if "soft_loss" in values else "")

  def eval_line(self, values):
    line = super().eval_line(values)
    if "teacher_mlm_accuracy" in values:
      line += f" | teacher mlm accuracy {values['teacher_mlm_accuracy']:.4f}"
    return line

  def trainable(self, params):
    if "distill" not in params:
      return None
    return {k: jax.tree.map(lambda _: True, v) for k, v in params.items()}

  def warm_start(self, params):
    if self.config.distill.student_init != "teacher":
      return super().warm_start(params)
    source = every_kth_layer(load_teacher(self.teacher_path, "mlm")[1], self.config.model.num_hidden_layers)
    return starts.overwrite(params, source, f"config.distill.teacher={self.teacher_path!r}",
                                "the student does not fit the teacher's widths.")[0]
