"""HuggingFace <-> bert_jax checkpoints, through PyTorch-layout state dicts (no torch needed).

transformers v5 has no Flax models, so we read and write the PyTorch checkpoint files
directly: `config.json` + `model.safetensors` (or a sharded `model.safetensors.index.json`,
or `pytorch_model.bin`, which needs torch). Supported HF classes:

  bert     BertModel, BertForPreTraining, BertForMaskedLM (and any Bert* backbone)
  albert   AlbertModel, AlbertForPreTraining, AlbertForMaskedLM
  electra  ElectraForPreTraining (discriminator) + optionally ElectraForMaskedLM (generator)
  and [Bert|Albert|Electra]ForSequenceClassification <-> our models.ForSequenceClassification
  (`load_classifier`, `export_classifier`; a backbone-only checkpoint also loads).

An ELECTRA pair is imported from the discriminator directory plus the generator directory
(`generator_dir`, or `<dir>/generator` when it exists); the shared embeddings come from the
discriminator. Export writes the discriminator to `<dir>` and the generator to
`<dir>/generator` with the shared tables copied into both (HF keeps one per model).

Parameters the checkpoint lacks (e.g. the MLM/NSP heads of a BertModel, the generator of a
lone discriminator) are freshly initialised by `import_hf` and listed in its info; the
loader for warm starts (`load_hf_checkpoint`) returns only what the checkpoint holds.
All conversions are transposes/reshapes, so import -> export is bit-exact for float32.

Files hold the unrolled layer layout (group_{g}_layer_{j}): exports unstack the params of a
model with config.model.scan_layers (models.unstack_layers) and write its config without it;
imports give the unrolled tree, which warm starts (starts.overwrite) restack as needed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Iterable

import numpy as np

from bert_jax import models
from bert_jax.models import config as config_lib
from bert_jax.models import layers
from bert_jax.models import peft

ModelConfig = config_lib.ModelConfig
Params = dict[str, Any]

# Keys HF stores for tied weights or buffers: expected in checkpoints, never parameters here.
_TIED_OR_BUFFERS = ("position_ids", "token_type_ids", "cls.predictions.decoder.weight",
                    "cls.predictions.decoder.bias", "predictions.decoder.weight",
                    "predictions.decoder.bias", "generator_lm_head.weight")

ARCHITECTURES = {"bert": "BertForPreTraining", "albert": "AlbertForPreTraining",
                 "electra": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
CLASSIFIER_ARCHITECTURES = {"bert": "BertForSequenceClassification",
                            "albert": "AlbertForSequenceClassification",
                            "electra": "ElectraForSequenceClassification"}
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


# ---------------------------------------------------------------------------------------------
# Name map: (our param path, HF key, conversion kind) for one model.
# kinds: copy (same layout), dense (kernel = W.T), qkv (W.T -> [H, N, D]), qkv_bias ([N*D] ->
# [N, D]), attn_out (W.T -> [N, D, H]).
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Entry:
  path: tuple[str, ...]
  hf_key: str
  kind: str
  heads: int = 0


def _linear(hf: str, path: tuple[str, ...], kind: str = "dense", heads: int = 0) -> list[Entry]:
  bias_kind = "qkv_bias" if kind == "qkv" else "copy"
  return [Entry(path + ("kernel",), hf + ".weight", kind, heads),
          Entry(path + ("bias",), hf + ".bias", bias_kind, heads)]


def _norm(hf: str, path: tuple[str, ...]) -> list[Entry]:
  return [Entry(path + ("scale",), hf + ".weight", "copy"),
          Entry(path + ("bias",), hf + ".bias", "copy")]


def _embeddings(hf: str, path: tuple[str, ...]) -> list[Entry]:
  out = [Entry(path + (f"{t}_embeddings", "embedding"), f"{hf}.{t}_embeddings.weight", "copy")
         for t in ("word", "position", "token_type")]
  return out + _norm(hf + ".LayerNorm", path + ("LayerNorm",))


def _layer(hf: str, path: tuple[str, ...], n: int, albert: bool) -> list[Entry]:
  if albert:
    names = dict(q="attention.query", k="attention.key", v="attention.value",
                 o="attention.dense", ln1="attention.LayerNorm", i="ffn", out="ffn_output",
                 ln2="full_layer_layer_norm")
  else:
    names = dict(q="attention.self.query", k="attention.self.key", v="attention.self.value",
                 o="attention.output.dense", ln1="attention.output.LayerNorm",
                 i="intermediate.dense", out="output.dense", ln2="output.LayerNorm")
  h = lambda k: f"{hf}.{names[k]}"  # noqa: E731
  return (_linear(h("q"), path + ("attention", "query"), "qkv", n)
          + _linear(h("k"), path + ("attention", "key"), "qkv", n)
          + _linear(h("v"), path + ("attention", "value"), "qkv", n)
          + _linear(h("o"), path + ("attention", "output"), "attn_out", n)
          + _norm(h("ln1"), path + ("attention_LayerNorm",))
          + _linear(h("i"), path + ("intermediate",))
          + _linear(h("out"), path + ("output",))
          + _norm(h("ln2"), path + ("output_LayerNorm",)))


def _encoder(cfg: ModelConfig, hf: str, path: tuple[str, ...], project_key: str) -> list[Entry]:
  n = cfg.num_attention_heads
  out = []
  if cfg.family == "albert" or cfg.emb_size != cfg.hidden_size:
    out += _linear(project_key, path + ("embeddings_project",))
  if cfg.family == "albert":
    for g in range(cfg.num_groups):
      for j in range(cfg.inner_group_num):
        out += _layer(f"{hf}.encoder.albert_layer_groups.{g}.albert_layers.{j}",
                      path + (f"group_{g}_layer_{j}",), n, albert=True)
  else:
    for i in range(cfg.num_hidden_layers):
      out += _layer(f"{hf}.encoder.layer.{i}", path + (f"group_{i}_layer_0",), n, albert=False)
  return out


# HF key names of the BERT / ALBERT pretraining models around the shared encoder layout.
_MLM_FAMILY_KEYS = {
    "bert": dict(prefix="bert", project=None, pooler="pooler.dense",
                 transform="cls.predictions.transform.dense",
                 transform_norm="cls.predictions.transform.LayerNorm",
                 bias="cls.predictions.bias", sentence="cls.seq_relationship"),
    "albert": dict(prefix="albert", project="encoder.embedding_hidden_mapping_in",
                   pooler="pooler", transform="predictions.dense",
                   transform_norm="predictions.LayerNorm", bias="predictions.bias",
                   sentence="sop_classifier.classifier"),
}


def name_map(cfg: ModelConfig, part: str, prefix: str | None = None) -> list[Entry]:
  """Entries of one HF model: part is bert | albert | electra (discriminator) | generator."""
  if part in _MLM_FAMILY_KEYS:
    k = _MLM_FAMILY_KEYS[part]
    p = k["prefix"] if prefix is None else prefix
    hf = lambda key: f"{p}.{key}" if p else key  # noqa: E731
    out = _embeddings(hf("embeddings"), ("bert", "embeddings"))
    out += _encoder(cfg, p, ("bert", "encoder"), hf(k["project"]) if k["project"] else "")
    out = [dataclasses.replace(e, hf_key=e.hf_key.lstrip(".")) for e in out]
    if cfg.use_pooler:
      out += _linear(hf(k["pooler"]), ("bert", "encoder", "pooler"))
    out += _linear(k["transform"], ("mlm", "transform"))
    out += _norm(k["transform_norm"], ("mlm", "transform_LayerNorm"))
    out += [Entry(("mlm", "bias"), k["bias"], "copy")]
    if cfg.use_pooler:
      out += _linear(k["sentence"], ("sentence", "dense"))
    return out
  if part in ("electra", "generator"):
    p = "electra" if prefix is None else prefix
    hf = lambda k: f"{p}.{k}" if p else k  # noqa: E731
    sub = cfg if part == "electra" else config_lib.generator_config(cfg)
    tower = "discriminator_encoder" if part == "electra" else "generator_encoder"
    out = _embeddings(hf("embeddings"), ("embeddings",))
    out += [dataclasses.replace(e, hf_key=e.hf_key.lstrip(".")) for e in _encoder(
        sub, p, (tower,), hf("embeddings_project"))]
    if part == "electra":
      out += _linear("discriminator_predictions.dense", ("discriminator_head", "dense"))
      out += _linear("discriminator_predictions.dense_prediction",
                     ("discriminator_head", "prediction"))
    else:
      out += _linear("generator_predictions.dense", ("generator_mlm", "transform"))
      out += _norm("generator_predictions.LayerNorm", ("generator_mlm", "transform_LayerNorm"))
      out += [Entry(("generator_mlm", "bias"), "generator_lm_head.bias", "copy")]
    return out
  raise ValueError(f"Unknown part {part!r}.")


def classifier_name_map(cfg: ModelConfig, prefix: str | None = None) -> list[Entry]:
  """Entries of HF <Family>ForSequenceClassification for our ForSequenceClassification tree.

  BERT/ALBERT: the backbone (pooler included) + `classifier` -> classifier/dense. ELECTRA:
  the discriminator backbone under bert/, `classifier.dense` -> pre_classifier and
  `classifier.out_proj` -> classifier/dense. `prefix` as in name_map ("" for a bare backbone).
  """
  if cfg.family in _MLM_FAMILY_KEYS:
    out = [e for e in name_map(cfg, cfg.family, prefix) if e.path[0] == "bert"]
    return out + _linear("classifier", ("classifier", "dense"))
  rename = {"embeddings": ("bert", "embeddings"), "discriminator_encoder": ("bert", "encoder")}
  out = [dataclasses.replace(e, path=rename[e.path[0]] + e.path[1:])
         for e in name_map(cfg, "electra", prefix) if e.path[0] in rename]
  return (out + _linear("classifier.dense", ("pre_classifier",))
          + _linear("classifier.out_proj", ("classifier", "dense")))


def to_ours(e: Entry, w: np.ndarray) -> np.ndarray:
  w = np.asarray(w, np.float32)
  if e.kind == "copy":
    return w
  if e.kind == "dense":
    return np.ascontiguousarray(w.T)
  if e.kind == "qkv":
    return np.ascontiguousarray(w.T).reshape(w.shape[1], e.heads, -1)
  if e.kind == "qkv_bias":
    return w.reshape(e.heads, -1)
  if e.kind == "attn_out":
    return np.ascontiguousarray(w.T).reshape(e.heads, -1, w.shape[0])
  raise ValueError(e.kind)


def to_hf(e: Entry, w: np.ndarray) -> np.ndarray:
  w = np.asarray(w, np.float32)
  if e.kind == "copy":
    return w
  if e.kind == "dense":
    return np.ascontiguousarray(w.T)
  if e.kind == "qkv":
    return np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
  if e.kind == "qkv_bias":
    return w.reshape(-1)
  if e.kind == "attn_out":
    return np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)
  raise ValueError(e.kind)


# ---------------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------------
def read_state_dict(hf_dir: str) -> dict[str, np.ndarray]:
  """All tensors of an HF checkpoint directory as float32/int numpy arrays (an ERNIE checkpoint's
  as BERT's: `ernie_as_bert`)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  single = os.path.join(hf_dir, "model.safetensors")
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  binary = os.path.join(hf_dir, "pytorch_model.bin")
  if os.path.exists(single):
    return ernie_as_bert(hf_dir, dict(load_file(single)))
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for name in files:
      out.update(load_file(os.path.join(hf_dir, name)))
    return ernie_as_bert(hf_dir, out)
  if os.path.exists(binary):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as err:
      raise ImportError(f"{binary} is a PyTorch pickle and needs torch; install it or convert "
                        "the checkpoint to model.safetensors.") from err
    sd = torch.load(binary, map_location="cpu", weights_only=True)
    return ernie_as_bert(hf_dir, {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                                  for k, v in sd.items()})
  raise FileNotFoundError(f"{hf_dir} has no model.safetensors, model.safetensors.index.json or "
                          "pytorch_model.bin.")


def tensor_shapes(hf_dir: str) -> dict[str, tuple[int, ...]]:
  """Name -> shape of every tensor of an HF directory, from the safetensors headers (no tensor is
  read; a pytorch_model.bin is loaded); an ERNIE checkpoint's names as BERT's."""
  single = os.path.join(hf_dir, "model.safetensors")
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  files = []
  if os.path.exists(single):
    files = [single]
  elif os.path.exists(index):
    with open(index) as f:
      files = [os.path.join(hf_dir, n) for n in sorted(set(json.load(f)["weight_map"].values()))]
  if not files:
    return {k: tuple(v.shape) for k, v in read_state_dict(hf_dir).items()}
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  out: dict[str, Any] = {}
  for file in files:
    with safe_open(file, framework="numpy") as f:
      for k in f.keys():
        out[k] = tuple(f.get_slice(k).get_shape())
  if _raw_config(hf_dir).get("model_type") == "ernie":
    out = {_ERNIE_RENAME(k): v for k, v in out.items() if not k.endswith(_ERNIE_TASK_TYPE)}
  return out


# ---------------------------------------------------------------------------------------------
# Checkpoints whose config.json does not say BERT but whose weights are BERT's.
#   model_type "roberta" with bert.* tensors and a vocab.txt (hfl's chinese-roberta-wwm-ext),
#   no model_type at all (early ERNIE 1.0 conversions): read as BERT, with a one-line notice.
#   model_type "ernie" (transformers' ErnieModel): BERT plus, with use_task_id, a task-type
#   embedding whose row of the task id (0, transformers' default) is added at every position
#   before the embedding LayerNorm, exactly as a token-type row is: it is folded into every
#   token-type row, so the model is BERT's.
#   A real RoBERTa (roberta.* tensors, byte-level BPE vocab.json + merges.txt) is refused.
# ---------------------------------------------------------------------------------------------
_ERNIE_TASK_TYPE = "embeddings.task_type_embeddings.weight"
_ERNIE_RENAME = lambda k: "bert." + k[len("ernie."):] if k.startswith("ernie.") else k  # noqa: E731
_NOTICES_SHOWN: set[str] = set()


def _raw_config(hf_dir: str) -> dict[str, Any]:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def ernie_as_bert(hf_dir: str, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """An ERNIE state dict as BERT's: ernie.* -> bert.*, and with use_task_id the task-type row of
  task id 0 added to every token-type row (both are added at every position before the
  LayerNorm). Other checkpoints are returned as they are."""
  hf_cfg = _raw_config(hf_dir)
  if hf_cfg.get("model_type") != "ernie":
    return sd
  out = {_ERNIE_RENAME(k): v for k, v in sd.items() if not k.endswith(_ERNIE_TASK_TYPE)}
  task = [k for k in sd if k.endswith(_ERNIE_TASK_TYPE)]
  if hf_cfg.get("use_task_id") and task:
    key = _ERNIE_RENAME(task[0]).replace("task_type_embeddings", "token_type_embeddings")
    row = np.asarray(sd[task[0]], np.float32)[0]
    out[key] = np.asarray(out[key], np.float32) + row[None, :]
  return out


def _tensor_names(hf_dir: str) -> list[str]:
  single = os.path.join(hf_dir, "model.safetensors")
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.exists(single):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with safe_open(single, framework="numpy") as f:
      return list(f.keys())
  if os.path.exists(index):
    with open(index) as f:
      return list(json.load(f)["weight_map"])
  return []


def _model_type(hf_dir: str, hf: dict[str, Any]) -> tuple[str | None, str]:
  """(the family the weights are read as, a one-line notice or "")."""
  model_type = hf.get("model_type")
  if model_type in ("bert", "albert", "electra"):
    return model_type, ""
  has = lambda name: os.path.exists(os.path.join(hf_dir, name))  # noqa: E731
  names = _tensor_names(hf_dir)
  if model_type == "ernie":
    folded = " (its task-type row folded into the token-type rows)" if hf.get("use_task_id") else ""
    return "bert", f"Note: {hf_dir} is an ERNIE checkpoint: read as BERT{folded}."
  if model_type not in ("roberta", None):
    return model_type, ""
  roberta_names = any(n.startswith("roberta.") for n in names)
  bpe = has("vocab.json") and has("merges.txt")
  if roberta_names or (bpe and not has("vocab.txt")):
    raise ValueError(
        f"{hf_dir} holds a RoBERTa model ({'roberta.* tensors' if roberta_names else 'no bert.* tensors'}"
        f"{', a byte-level BPE vocab.json + merges.txt' if bpe else ''}): bert_jax reads BERT, ALBERT and "
        "ELECTRA checkpoints, and RoBERTa's byte-level BPE tokenizer and offset position ids are not BERT's; "
        "use a BERT-style checkpoint (bert.* tensors and a WordPiece vocab.txt).")
  bert_names = any(n.startswith(("bert.", "embeddings.word_embeddings")) for n in names)
  if has("vocab.txt") and (bert_names or not names):
    said = f"says model_type={model_type!r}" if model_type else "has no model_type"
    return "bert", (f"Note: {hf_dir}/config.json {said}, but the weights are BERT's (bert.* tensors, a "
                    "WordPiece vocab.txt): read as BERT.")
  if model_type is None:
    raise ValueError(f"{hf_dir}/config.json has no model_type and the directory is not a BERT checkpoint "
                     "(no bert.* tensors with a vocab.txt): add \"model_type\": \"bert\" (or albert / "
                     "electra) to config.json if the weights are one of those.")
  return model_type, ""


def read_hf_config(hf_dir: str) -> dict[str, Any]:
  """config.json of an HF directory, with model_type as the weights are read (`_model_type`: a
  BERT checkpoint typed roberta or untyped, ERNIE; a notice printed once per directory)."""
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: not a HuggingFace checkpoint directory.")
  with open(path) as f:
    hf = json.load(f)
  model_type, notice = _model_type(hf_dir, hf)
  if notice and notice not in _NOTICES_SHOWN:
    _NOTICES_SHOWN.add(notice)
    print(notice, flush=True)
  return dict(hf, model_type=model_type)


_COMMON_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "hidden_act", "hidden_dropout_prob",
                "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                "layer_norm_eps", "initializer_range")


def config_from_hf(hf: dict[str, Any], gen: dict[str, Any] | None = None) -> ModelConfig:
  """Our ModelConfig from an HF config.json dict (and the ELECTRA generator's)."""
  model_type = hf.get("model_type")
  if model_type not in ("bert", "albert", "electra"):
    raise ValueError(f"config.json model_type={model_type!r}: only bert, albert and electra "
                     "checkpoints are supported.")
  pet = hf.get("position_embedding_type", "absolute")
  if pet != "absolute":
    raise ValueError(f"config.json position_embedding_type={pet!r}: only 'absolute' is supported.")
  kw = {k: hf[k] for k in _COMMON_KEYS if k in hf}
  kw["family"] = model_type
  if model_type == "albert":
    kw.update(embedding_size=hf.get("embedding_size", 128),
              num_hidden_groups=hf.get("num_hidden_groups", 1),
              inner_group_num=hf.get("inner_group_num", 1))
  if model_type == "electra":
    kw.update(embedding_size=hf.get("embedding_size", 128), use_pooler=False)
    if gen is not None:
      for key in ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size",
                  "hidden_act", "layer_norm_eps"):
        if gen.get(key) != hf.get(key):
          raise ValueError(f"ELECTRA generator config.json {key}={gen.get(key)!r} differs from "
                           f"the discriminator's {hf.get(key)!r}; they must match.")
      kw.update(generator_hidden_size=gen["hidden_size"] / hf["hidden_size"],
                generator_layers=gen["num_hidden_layers"] / hf["num_hidden_layers"],
                generator_num_attention_heads=gen["num_attention_heads"],
                generator_intermediate_size=gen["intermediate_size"])
  if kw.get("hidden_act") == "gelu_python":
    kw["hidden_act"] = "gelu"
  return config_lib.validate(kw)


def config_to_hf(cfg: ModelConfig, part: str) -> dict[str, Any]:
  """config.json for the HF model of `part` (bert | albert | electra | generator)."""
  sub = config_lib.generator_config(cfg) if part == "generator" else cfg
  out = {k: getattr(sub, k) for k in _COMMON_KEYS}
  arch = ARCHITECTURES[part]
  if not cfg.use_pooler and part in ("bert", "albert"):
    arch = arch.replace("ForPreTraining", "ForMaskedLM")  # no pooler, no sentence head
  out.update(architectures=[arch], model_type=cfg.family, pad_token_id=0,
             position_embedding_type="absolute", tie_word_embeddings=True, dtype="float32")
  if cfg.family == "albert":
    out.update(embedding_size=cfg.emb_size, num_hidden_groups=cfg.num_groups,
               inner_group_num=cfg.inner_group_num, classifier_dropout_prob=0.1)
  if cfg.family == "electra":
    out.update(embedding_size=cfg.emb_size)
  return out


def _detect_prefix(sd: dict[str, np.ndarray], default: str) -> str:
  if f"{default}.embeddings.word_embeddings.weight" in sd:
    return default
  if "embeddings.word_embeddings.weight" in sd:
    return ""  # saved from the bare backbone class (BertModel / AlbertModel / ElectraModel)
  raise ValueError(f"No '{default}.embeddings.word_embeddings.weight' (or bare "
                   "'embeddings.word_embeddings.weight') in the checkpoint: not a "
                   f"{default} model.")


def _set(tree: Params, path: tuple[str, ...], value) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def _get(tree: Params, path: tuple[str, ...]):
  for k in path:
    tree = tree[k]
  return tree


def _convert_in(entries: Iterable[Entry], sd: dict[str, np.ndarray], params: Params,
                expected: Params | None, where: str) -> set[str]:
  used = set()
  for e in entries:
    if e.hf_key not in sd:
      continue
    value = to_ours(e, sd[e.hf_key])
    if expected is not None:
      want = _get(expected, e.path).shape
      if value.shape != tuple(want):
        raise ValueError(f"{where}: {e.hf_key} has shape {sd[e.hf_key].shape}, which does not "
                         f"match config.json (expected {want} for {'/'.join(e.path)}).")
    _set(params, e.path, value)
    used.add(e.hf_key)
  return used


def find_generator_dir(hf_dir: str, generator_dir: str | None = None) -> str | None:
  """The ELECTRA generator directory: `generator_dir` when given, else <hf_dir>/generator if it holds
  a config.json, else None."""
  if generator_dir:
    return generator_dir
  sub = os.path.join(hf_dir, "generator")
  return sub if os.path.exists(os.path.join(sub, "config.json")) else None


def load_hf_checkpoint(hf_dir: str, generator_dir: str | None = None
                       ) -> tuple[dict[str, Any], Params]:
  """(config.model dict, params holding ONLY the tensors found) of an HF or converted dir.

  This is what config.init.hf_checkpoint uses: the caller keeps its own values for the rest.
  """
  if os.path.exists(os.path.join(hf_dir, CONVERTED_PARAMS)):
    cfg, params = load_converted(hf_dir)
    return dataclasses.asdict(cfg), params
  cfg, params, _ = _import(hf_dir, generator_dir, fill_missing=False)
  return dataclasses.asdict(cfg), params


def import_hf(hf_dir: str, generator_dir: str | None = None, seed: int = 0
              ) -> tuple[ModelConfig, Params, dict[str, Any]]:
  """Full params of our pretraining model; missing ones freshly initialised (see info)."""
  return _import(hf_dir, generator_dir, fill_missing=True, seed=seed)


def _import(hf_dir, generator_dir, fill_missing, seed=0):

  hf_cfg = read_hf_config(hf_dir)
  archs = hf_cfg.get("architectures") or []
  if "ElectraForMaskedLM" in archs or "ElectraGenerator" in "".join(archs):
    raise ValueError(f"{hf_dir} is an ELECTRA generator (ElectraForMaskedLM); import the "
                     "discriminator directory and pass this one as the generator.")
  gen_dir = find_generator_dir(hf_dir, generator_dir) if hf_cfg.get("model_type") == "electra" else None
  gen_cfg = read_hf_config(gen_dir) if gen_dir else None
  cfg = config_from_hf(hf_cfg, gen_cfg)
  model = models.build(cfg)
  batch = models.dummy_batch(cfg, 1, 8, 2)
  expected = models.abstract_params(model, batch)

  params: Params = {}
  info: dict[str, Any] = {"source": os.path.basename(os.path.normpath(hf_dir)),
                          "architectures": archs, "unused": [], "initialized": []}
  parts = [(hf_dir, cfg.family)] + ([(gen_dir, "generator")] if gen_dir else [])
  for directory, part in parts:
    sd = read_state_dict(directory)
    default = {"bert": "bert", "albert": "albert"}.get(part, "electra")
    entries = name_map(cfg, part, _detect_prefix(sd, default))
    shared = set()
    if part == "generator":
      # Shared embeddings come from the discriminator; a real pair has equal copies.
      for e in entries:
        if e.path[0] == "embeddings" and e.hf_key in sd:
          shared.add(e.hf_key)
          if not np.array_equal(to_ours(e, sd[e.hf_key]), _get(params, e.path)):
            info.setdefault("generator_embeddings_differ", []).append(e.hf_key)
            logging.warning("%s: %s differs from the discriminator's; using the "
                            "discriminator's (ELECTRA shares one table).", directory, e.hf_key)
      entries = [e for e in entries if e.path[0] != "embeddings"]
    used = _convert_in(entries, sd, params, expected, directory) | shared
    unused = sorted(k for k in sd if k not in used and not k.endswith(_TIED_OR_BUFFERS))
    info["unused"] += unused
    if unused:
      logging.warning("%s: %d tensors not used (e.g. fine-tuning heads): %s", directory,
                      len(unused), unused[:8])
  flat_expected = _flatten(expected)
  missing = sorted(k for k in flat_expected if k not in _flatten(params))
  info["initialized"] = missing
  if missing and fill_missing:
    logging.info("Freshly initialised (not in the checkpoint): %s", missing)
    rng = np.random.default_rng(seed)
    for k in missing:
      _set(params, tuple(k.split("/")), _fresh(k, flat_expected[k].shape, cfg, rng))
  return cfg, params, info


def _fresh(name: str, shape, cfg: ModelConfig, rng: np.random.Generator) -> np.ndarray:
  """The models' init distributions in numpy (a full jax init of a big model is slow on CPU):
  biases 0, LayerNorm scales 1, the rest truncated normal (2 sigma) with std initializer_range."""
  leaf = name.rsplit("/", 1)[-1]
  if leaf == "bias":
    return np.zeros(shape, np.float32)
  if leaf == "scale":
    return np.ones(shape, np.float32)
  z = rng.standard_normal(shape)
  while np.any(bad := np.abs(z) > 2):
    z[bad] = rng.standard_normal(int(bad.sum()))
  # jax's truncated_normal rescales so the truncated distribution has the asked-for std.
  return (z * cfg.initializer_range / 0.87962566103423978).astype(np.float32)


def _unrolled(model_config: Any, params: Params) -> tuple[ModelConfig, Params]:
  """(validated config without scan_layers, params in the unrolled layer layout)."""
  cfg = config_lib.validate(model_config)
  return dataclasses.replace(cfg, scan_layers=False), layers.unstack_layers(params)


def export_hf(cfg: Any, params: Params, hf_dir: str) -> list[str]:
  """Writes config.json + model.safetensors (ELECTRA: also <hf_dir>/generator); returns dirs."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  cfg, params = _unrolled(cfg, params)
  parts = [(hf_dir, cfg.family)]
  if cfg.family == "electra":
    parts.append((os.path.join(hf_dir, "generator"), "generator"))
  for directory, part in parts:
    os.makedirs(directory, exist_ok=True)
    tensors = {e.hf_key: to_hf(e, np.asarray(_get(params, e.path)))
               for e in name_map(cfg, part)}
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(config_to_hf(cfg, part), f, indent=2, sort_keys=True)
  return [d for d, _ in parts]


# ---------------------------------------------------------------------------------------------
# Sequence classification: HF *ForSequenceClassification <-> models.ForSequenceClassification.
# ---------------------------------------------------------------------------------------------
def _head_info(num_labels: int, problem_type: str | None, id2label: dict | None,
               where: str) -> dict[str, Any]:
  problem_type = problem_type or ("regression" if num_labels == 1
                                  else "single_label_classification")
  if problem_type not in PROBLEM_TYPES:
    raise ValueError(f"{where}: problem_type={problem_type!r}; choose one of {PROBLEM_TYPES}.")
  if problem_type == "single_label_classification" and num_labels < 2:
    raise ValueError(f"{where}: single_label_classification needs num_labels >= 2 (got "
                     f"{num_labels}); use num_labels=2 for binary tasks or "
                     "problem_type='regression'.")
  if id2label:
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if sorted(id2label) != list(range(num_labels)):
      raise ValueError(f"{where}: id2label has ids {sorted(id2label)}, but the classifier has "
                       f"{num_labels} labels; give one name per label id 0..{num_labels - 1}.")
  else:
    id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
  return {"num_labels": num_labels, "problem_type": problem_type, "id2label": id2label}


def load_classifier(hf_dir: str) -> tuple[ModelConfig, Params, dict[str, Any] | None]:
  """(config, params in the ForSequenceClassification layout, head) of a checkpoint dir.

  params hold ONLY the tensors found (a backbone checkpoint gives just "bert"; the caller
  initialises the rest). head is {num_labels, problem_type, id2label} when the checkpoint has
  a sequence-classification head, else None. Accepts HF *ForSequenceClassification, bare
  backbones (with or without the family prefix), *ForPreTraining / *ForMaskedLM (ELECTRA:
  the discriminator's backbone) and our converted directories (`load_converted`).
  """

  if os.path.exists(os.path.join(hf_dir, CONVERTED_PARAMS)):
    cfg, params = load_converted(hf_dir)
    if "classifier" in params:  # already a ForSequenceClassification tree
      out = {k: params[k] for k in ("bert", "pre_classifier", "classifier") if k in params}
      n = out["classifier"]["dense"]["kernel"].shape[-1]
      return cfg, out, _head_info(n, None, None, hf_dir)
    return cfg, models.backbone_params(params), None

  hf_cfg = read_hf_config(hf_dir)
  archs = hf_cfg.get("architectures") or []
  cfg = config_from_hf(hf_cfg)
  sd = read_state_dict(hf_dir)
  entries = classifier_name_map(cfg, _detect_prefix(sd, cfg.family))
  is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
  head = None
  num_labels = 2
  if is_classifier:
    out_key = next(e.hf_key for e in entries if e.path == ("classifier", "dense", "kernel"))
    if out_key not in sd:
      raise ValueError(f"{hf_dir}: config.json says {archs} but {out_key} is missing from the "
                       "weights; re-save the model with save_pretrained.")
    num_labels = int(sd[out_key].shape[0])
    head = _head_info(num_labels, hf_cfg.get("problem_type"), hf_cfg.get("id2label"), hf_dir)
  else:
    entries = [e for e in entries if e.path[0] == "bert"]
  model = models.ForSequenceClassification(cfg, num_labels)
  expected = models.abstract_params(model, models.dummy_batch(cfg, 1, 8))
  params: Params = {}
  used = _convert_in(entries, sd, params, expected, hf_dir)
  unused = sorted(k for k in sd if k not in used and not k.endswith(_TIED_OR_BUFFERS))
  if unused:
    logging.warning("%s: %d tensors not used (pretraining heads, ...): %s", hf_dir, len(unused),
                    unused[:8])
  if "bert" not in params:
    raise ValueError(f"{hf_dir}: no backbone tensors matched (architectures {archs}); expected "
                     f"keys like {entries[0].hf_key}.")
  return cfg, params, head


def export_classifier(model_config: Any, params: Params, num_labels: int, hf_dir: str,
                      problem_type: str = "single_label_classification",
                      id2label: dict[int, str] | None = None) -> str:
  """Writes an HF [Bert|Albert|Electra]ForSequenceClassification (config.json +
  model.safetensors) from ForSequenceClassification params; LoRA is merged first."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  cfg, params = _unrolled(model_config, params)
  if cfg.lora_rank or peft.has_lora(params):
    cfg, params = peft.merge_lora(cfg, params)
  if cfg.adapter_size:
    raise ValueError(f"config.model.adapter_size={cfg.adapter_size}: HF "
                     f"{CLASSIFIER_ARCHITECTURES[cfg.family]} has no adapters, so they cannot be "
                     "exported; fine-tune with LoRA (merged on export) or full fine-tuning.")
  if cfg.family != "electra" and not cfg.use_pooler:
    raise ValueError(f"config.model.use_pooler=False: HF {CLASSIFIER_ARCHITECTURES[cfg.family]}"
                     " classifies the pooled output; train with use_pooler=True.")
  head = _head_info(num_labels, problem_type, id2label, "export_classifier")
  entries = classifier_name_map(cfg)
  tensors = {}
  for e in entries:
    try:
      value = np.asarray(_get(params, e.path))
    except (KeyError, TypeError) as err:
      raise ValueError(f"export_classifier: params lack {'/'.join(e.path)}; pass the params of "
                       "models.ForSequenceClassification (bert/, classifier/"
                       f"{', pre_classifier/' if cfg.family == 'electra' else ''}).") from err
    tensors[e.hf_key] = to_hf(e, value)
  out_key = next(e.hf_key for e in entries if e.path == ("classifier", "dense", "kernel"))
  got = tensors[out_key].shape[0]  # HF weight [num_labels, H]
  if got != num_labels:
    raise ValueError(f"export_classifier: num_labels={num_labels} but the classifier kernel "
                     f"has {got} outputs.")
  os.makedirs(hf_dir, exist_ok=True)
  save_file(tensors, os.path.join(hf_dir, "model.safetensors"), metadata={"format": "pt"})
  out = config_to_hf(cfg, cfg.family)
  out.update(architectures=[CLASSIFIER_ARCHITECTURES[cfg.family]],
             problem_type=head["problem_type"],
             id2label={str(k): v for k, v in head["id2label"].items()},
             label2id={v: k for k, v in head["id2label"].items()})
  # Our head's dropout is hidden_dropout_prob.
  out["classifier_dropout_prob" if cfg.family == "albert" else "classifier_dropout"] = (
      cfg.hidden_dropout_prob)
  with open(os.path.join(hf_dir, "config.json"), "w") as f:
    json.dump(out, f, indent=2, sort_keys=True)
  return hf_dir


# ---------------------------------------------------------------------------------------------
# Span and token heads: HF *ForQuestionAnswering <-> models.ForQuestionAnswering (qa_outputs),
# HF *ForTokenClassification <-> models.ForTokenClassification (classifier/dense). Neither HF
# model has a pooler, so ours (unused by these heads) is neither read nor written.
# ---------------------------------------------------------------------------------------------
HEAD_KINDS = {"question_answering": "ForQuestionAnswering", "token_classification": "ForTokenClassification"}
_FAMILY_NAMES = {"bert": "Bert", "albert": "Albert", "electra": "Electra"}


def _check_kind(kind: str) -> str:
  if kind not in HEAD_KINDS:
    raise ValueError(f"Unknown head kind {kind!r}; choose one of {sorted(HEAD_KINDS)}.")
  return HEAD_KINDS[kind]


def head_name_map(cfg: ModelConfig, kind: str, prefix: str | None = None) -> list[Entry]:
  """Entries of HF <Family>ForQuestionAnswering / ForTokenClassification for our trees."""
  _check_kind(kind)
  backbone = [e for e in classifier_name_map(cfg, prefix)
              if e.path[0] == "bert" and e.path[:3] != ("bert", "encoder", "pooler")]
  if kind == "question_answering":
    return backbone + _linear("qa_outputs", ("qa_outputs",))
  return backbone + _linear("classifier", ("classifier", "dense"))


def head_model(cfg: ModelConfig, kind: str, num_labels: int = 2):
  _check_kind(kind)
  if kind == "question_answering":
    return models.ForQuestionAnswering(cfg)
  return models.ForTokenClassification(cfg, num_labels)


def load_head(hf_dir: str, kind: str) -> tuple[ModelConfig, Params, dict[str, Any] | None]:
  """(config, params holding only the tensors found, head) of a checkpoint dir for a span
  (kind "question_answering") or token ("token_classification") model.

  head is {num_labels, id2label} when the checkpoint is an HF <Family>For<Kind> (its head is
  read too), else None: a backbone (BertModel, *ForPreTraining, ...; ELECTRA's discriminator)
  or our converted directory gives the backbone only.
  """
  suffix = _check_kind(kind)
  if os.path.exists(os.path.join(hf_dir, CONVERTED_PARAMS)):
    cfg, params = load_converted(hf_dir)
    return cfg, models.backbone_params(params) if "bert" not in params else {"bert": params["bert"]}, None
  hf_cfg = read_hf_config(hf_dir)
  archs = hf_cfg.get("architectures") or []
  cfg = config_from_hf(hf_cfg)
  sd = read_state_dict(hf_dir)
  entries = head_name_map(cfg, kind, _detect_prefix(sd, cfg.family))
  head, num_labels = None, 2
  if any(a.endswith(suffix) for a in archs):
    out_key = entries[-2].hf_key
    if out_key not in sd:
      raise ValueError(f"{hf_dir}: config.json says {archs} but {out_key} is missing from the weights.")
    num_labels = int(sd[out_key].shape[0])
    if kind == "question_answering" and num_labels != 2:
      raise ValueError(f"{hf_dir}: {out_key} has {num_labels} outputs; a span head has 2 (start, end).")
    id2label = {int(k): str(v) for k, v in (hf_cfg.get("id2label") or {}).items()}
    if sorted(id2label) != list(range(num_labels)):
      id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    head = {"num_labels": num_labels, "id2label": id2label}
  else:
    entries = [e for e in entries if e.path[0] == "bert"]
  expected = models.abstract_params(head_model(cfg, kind, num_labels), models.dummy_batch(cfg, 1, 8))
  params: Params = {}
  used = _convert_in(entries, sd, params, expected, hf_dir)
  unused = sorted(k for k in sd if k not in used and not k.endswith(_TIED_OR_BUFFERS))
  if unused:
    logging.warning("%s: %d tensors not used (pooler, other heads, ...): %s", hf_dir, len(unused), unused[:8])
  if "bert" not in params:
    raise ValueError(f"{hf_dir}: no backbone tensors matched (architectures {archs}); expected keys like "
                     f"{entries[0].hf_key}.")
  return cfg, params, head


def export_head(model_config: Any, params: Params, hf_dir: str, kind: str,
                id2label: dict[int, str] | None = None) -> str:
  """Writes an HF <Family>ForQuestionAnswering / ForTokenClassification (config.json +
  model.safetensors) from ForQuestionAnswering / ForTokenClassification params (LoRA merged)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  suffix = _check_kind(kind)
  cfg, params = _unrolled(model_config, params)
  if cfg.lora_rank or peft.has_lora(params):
    cfg, params = peft.merge_lora(cfg, params)
  if cfg.adapter_size:
    raise ValueError(f"config.model.adapter_size={cfg.adapter_size}: HF {suffix} models have no adapters, "
                     "so they cannot be exported; fine-tune with LoRA (merged on export) or fully.")
  entries = head_name_map(cfg, kind)
  tensors = {}
  for e in entries:
    try:
      tensors[e.hf_key] = to_hf(e, np.asarray(_get(params, e.path)))
    except (KeyError, TypeError) as err:
      raise ValueError(f"export_head: params lack {'/'.join(e.path)}; pass the params of models.{suffix}.") from err
  num_labels = int(tensors[entries[-2].hf_key].shape[0])
  id2label = {int(k): str(v) for k, v in (id2label or {i: f"LABEL_{i}" for i in range(num_labels)}).items()}
  if sorted(id2label) != list(range(num_labels)):
    raise ValueError(f"export_head: id2label has ids {sorted(id2label)} but the head has {num_labels} outputs.")
  os.makedirs(hf_dir, exist_ok=True)
  save_file(tensors, os.path.join(hf_dir, "model.safetensors"), metadata={"format": "pt"})
  out = config_to_hf(cfg, cfg.family)
  out.update(architectures=[_FAMILY_NAMES[cfg.family] + suffix], id2label={str(k): v for k, v in id2label.items()},
             label2id={v: k for k, v in id2label.items()})
  out["classifier_dropout_prob" if cfg.family == "albert" else "classifier_dropout"] = cfg.hidden_dropout_prob
  with open(os.path.join(hf_dir, "config.json"), "w") as f:
    json.dump(out, f, indent=2, sort_keys=True)
  return hf_dir


# ---------------------------------------------------------------------------------------------
# Our on-disk format: model_config.json (config.model keys) + params.safetensors, whose keys
# are the "/"-joined param paths (e.g. "bert/encoder/group_0_layer_0/attention/query/kernel").
# ---------------------------------------------------------------------------------------------
CONVERTED_CONFIG = "model_config.json"
CONVERTED_PARAMS = "params.safetensors"
TOKENIZER_FILES = ("vocab.txt", "spiece.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


def _flatten(tree: Params, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    key = f"{prefix}/{k}" if prefix else k
    if isinstance(v, dict):
      out.update(_flatten(v, key))
    else:
      out[key] = v
  return out


def save_converted(out_dir: str, cfg: Any, params: Params, info: dict[str, Any] | None = None):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  cfg, params = _unrolled(cfg, params)
  os.makedirs(out_dir, exist_ok=True)
  flat = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in _flatten(params).items()}
  save_file(flat, os.path.join(out_dir, CONVERTED_PARAMS))
  with open(os.path.join(out_dir, CONVERTED_CONFIG), "w") as f:
    json.dump(dataclasses.asdict(cfg), f, indent=2, sort_keys=True)
  if info is not None:
    with open(os.path.join(out_dir, "conversion_info.json"), "w") as f:
      json.dump(info, f, indent=2, sort_keys=True)


def load_converted(path: str) -> tuple[ModelConfig, Params]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  for name in (CONVERTED_CONFIG, CONVERTED_PARAMS):
    if not os.path.exists(os.path.join(path, name)):
      raise FileNotFoundError(f"{os.path.join(path, name)} is missing: not a bert_jax model "
                              "directory (make one with `python -m bert_jax.tools.convert import`).")
  with open(os.path.join(path, CONVERTED_CONFIG)) as f:
    cfg = config_lib.validate(json.load(f))
  params: Params = {}
  for k, v in load_file(os.path.join(path, CONVERTED_PARAMS)).items():
    _set(params, tuple(k.split("/")), v)
  return cfg, params


# ---------------------------------------------------------------------------------------------
# Tokenizer files of HF directories (bert_jax.data.tokenizers reads them): vocab.txt, spiece.model,
# or transformers' tokenizer.json alone (through the `tokenizers` library).
# ---------------------------------------------------------------------------------------------
HF_TOKENIZER_JSON = "tokenizer.json"
def tokenizer_file(hf_dir: str) -> tuple[str, str, bool]:
  """(path, kind, lower_case) of an HF directory's tokenizer: vocab.txt (wordpiece; lower case
  from tokenizer_config.json's do_lower_case), spiece.model (sentencepiece) or, with neither,
  tokenizer.json (tokenizer_json: bert_jax.data.tokenizers.JsonTokenizer). Raises naming the directory."""
  vocab, spm = os.path.join(hf_dir, "vocab.txt"), os.path.join(hf_dir, "spiece.model")
  if os.path.exists(vocab):
    lower = True
    tc = os.path.join(hf_dir, "tokenizer_config.json")
    if os.path.exists(tc):
      with open(tc, encoding="utf-8") as f:
        lower = bool(json.load(f).get("do_lower_case", True))
    return vocab, "wordpiece", lower
  if os.path.exists(spm):
    return spm, "sentencepiece", True
  tj = os.path.join(hf_dir, HF_TOKENIZER_JSON)
  if os.path.exists(tj):
    return tj, "tokenizer_json", True
  raise FileNotFoundError(f"{hf_dir} has no tokenizer (vocab.txt, spiece.model or tokenizer.json): copy the "
                          "model's tokenizer files into it (tokenizer.save_pretrained).")


def tokenizer_size(path: str, kind: str) -> int:
  """Ids of a tokenizer file, read without building the tokenizer: the lines of a vocab.txt, the
  pieces of a spiece.model, the vocabulary (added tokens included) of a tokenizer.json."""
  if kind == "wordpiece":
    with open(path, encoding="utf-8") as f:
      return sum(1 for _ in f)
  if kind == "sentencepiece":
    import sentencepiece  # pylint: disable=g-import-not-at-top
    return sentencepiece.SentencePieceProcessor(model_file=path).get_piece_size()
  from tokenizers import Tokenizer as _Tokenizer  # pylint: disable=g-import-not-at-top
  return _Tokenizer.from_file(path).get_vocab_size(with_added_tokens=True)


# What a pretraining model holds, by part: (part, first key of its param path).
_PARTS = {"bert": "encoder", "embeddings": "encoder", "discriminator_encoder": "encoder",
          "mlm": "MLM head", "sentence": "sentence head", "discriminator_head": "discriminator head",
          "generator_encoder": "generator", "generator_mlm": "generator"}


def _part(path: tuple[str, ...]) -> str:
  if path[:3] == ("bert", "encoder", "pooler"):
    return "pooler"
  return _PARTS.get(path[0], path[0])


def inspect(hf_dir: str, generator_dir: str | None = None) -> dict[str, Any]:
  """What a checkpoint directory (HF, or converted by `bert-jax-convert import`) holds, read from
  config.json and the tensor headers (no weights are read):
    config       our ModelConfig (model_type quirks as `read_hf_config`)
    generator    whether an ELECTRA generator comes with it
    parts        {part: True when all its tensors are there}: encoder, pooler, MLM head, sentence
                 head (NSP / SOP), discriminator head, generator
    missing      encoder tensors the checkpoint lacks (HF names)
    vocab_rows   rows of the word-embedding table
  Raises FileNotFoundError (no config.json) or ValueError (a RoBERTa, an unknown model type)."""
  if os.path.exists(os.path.join(hf_dir, CONVERTED_PARAMS)):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with open(os.path.join(hf_dir, CONVERTED_CONFIG)) as f:
      cfg = config_lib.validate(json.load(f))
    with safe_open(os.path.join(hf_dir, CONVERTED_PARAMS), framework="numpy") as f:
      shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    model = models.build(cfg)
    expected = _flatten(models.abstract_params(model, models.dummy_batch(cfg, 1, 8, 2)))
    parts: dict[str, bool] = {}
    for key in expected:
      part = _part(tuple(key.split("/")))
      parts[part] = parts.get(part, True) and key in shapes
    missing = sorted(k for k in expected if _part(tuple(k.split("/"))) == "encoder" and k not in shapes)
    word = next((k for k in shapes if k.endswith("word_embeddings/embedding")), None)
    return {"config": cfg, "generator": parts.get("generator", False), "parts": parts, "missing": missing,
            "vocab_rows": shapes[word][0] if word else 0}
  hf_cfg = read_hf_config(hf_dir)
  gen_dir = find_generator_dir(hf_dir, generator_dir) if hf_cfg.get("model_type") == "electra" else None
  cfg = config_from_hf(hf_cfg, read_hf_config(gen_dir) if gen_dir else None)
  shapes = tensor_shapes(hf_dir)
  default = {"bert": "bert", "albert": "albert"}.get(cfg.family, "electra")
  prefix = _detect_prefix(shapes, default)
  entries = name_map(cfg, cfg.family, prefix)
  if gen_dir:
    gen_shapes = tensor_shapes(gen_dir)
    entries_gen = [e for e in name_map(cfg, "generator", _detect_prefix(gen_shapes, "electra"))
                   if e.path[0] != "embeddings"]
  parts = {}
  for e in entries:
    parts[_part(e.path)] = parts.get(_part(e.path), True) and e.hf_key in shapes
  if cfg.family == "electra":
    parts["generator"] = bool(gen_dir) and all(e.hf_key in gen_shapes for e in entries_gen)
  if cfg.family != "electra" and not any(e.hf_key in shapes for e in entries if _part(e.path) == "pooler"):
    parts["pooler"] = parts["sentence head"] = False
  missing = [e.hf_key for e in entries if _part(e.path) == "encoder" and e.hf_key not in shapes]
  word = entries[0].hf_key  # the word embeddings come first
  return {"config": cfg, "generator": bool(gen_dir), "parts": parts, "missing": missing,
          "vocab_rows": shapes[word][0] if word in shapes else 0}
