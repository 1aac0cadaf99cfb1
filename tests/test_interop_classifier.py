"""HF *ForSequenceClassification <-> models.ForSequenceClassification (import and export).

Tiny random HF models (every parameter perturbed), a padded two-segment batch, fp32, eval
mode: logits within 1e-4 both ways; backbone-only checkpoints load with head None.
"""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

from bert_jax import models  # noqa: E402
from bert_jax.interop import hf  # noqa: E402
from test_interop import V, make_inputs, perturbed  # noqa: E402  # same tiny batches and perturbation

ATOL = 1e-4
COMMON = dict(vocab_size=V, num_hidden_layers=2, intermediate_size=37, max_position_embeddings=40,
              attn_implementation="eager")
HF = {
    "bert": (transformers.BertConfig, dict(hidden_size=36, num_attention_heads=3)),
    "albert": (transformers.AlbertConfig, dict(embedding_size=10, hidden_size=30,
                                               num_attention_heads=5, hidden_act="gelu_new")),
    "electra": (transformers.ElectraConfig, dict(embedding_size=10, hidden_size=30,
                                                 num_attention_heads=5)),
}
CLASSES = {"bert": transformers.BertForSequenceClassification,
           "albert": transformers.AlbertForSequenceClassification,
           "electra": transformers.ElectraForSequenceClassification}


def hf_config(family, **kw):
  cls, extra = HF[family]
  return cls(**COMMON, **extra, **kw)


def inputs(seed=0):
  """test_interop's padded two-segment batch, without the MLM positions."""
  x = make_inputs(seed)
  del x["masked_lm_positions"]
  return x


def hf_logits(model, x):
  with torch.no_grad():
    return model.eval()(input_ids=torch.tensor(x["input_ids"], dtype=torch.long),
                        attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
                        token_type_ids=torch.tensor(x["token_type_ids"], dtype=torch.long)
                        ).logits.numpy()


def ours(cfg, params, num_labels, x):
  return np.asarray(models.ForSequenceClassification(cfg, num_labels).apply(
      {"params": params}, **x))


def close(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  assert a.shape == b.shape, (a.shape, b.shape)
  diff = np.abs(a - b).max()
  assert diff < ATOL, diff
  return diff


@pytest.mark.parametrize("family", sorted(HF))
@pytest.mark.parametrize("num_labels", [3, 1])
def test_classifier_import_export_parity(tmp_path, family, num_labels):
  kw = dict(num_labels=num_labels)
  if num_labels == 1:
    kw["problem_type"] = "regression"
  else:
    kw["id2label"] = {0: "neg", 1: "neutral", 2: "pos"}
  ref = perturbed(CLASSES[family](hf_config(family, **kw)))
  ref.save_pretrained(tmp_path / "hf")
  cfg, params, head = hf.load_classifier(str(tmp_path / "hf"))
  assert cfg.family == family
  want_problem = "regression" if num_labels == 1 else "single_label_classification"
  assert head["num_labels"] == num_labels and head["problem_type"] == want_problem
  if num_labels == 3:
    assert head["id2label"] == {0: "neg", 1: "neutral", 2: "pos"}
  # Every parameter of our model came from the checkpoint.
  expected = models.abstract_params(models.ForSequenceClassification(cfg, num_labels), inputs())
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  x = inputs(1)
  logits = ours(cfg, params, num_labels, x)
  close(logits, hf_logits(ref, x))

  out = hf.export_classifier(cfg, params, num_labels, str(tmp_path / "export"),
                             problem_type=head["problem_type"], id2label=head["id2label"])
  conf = json.loads((tmp_path / "export" / "config.json").read_text())
  assert conf["architectures"] == [CLASSES[family].__name__]
  assert conf["problem_type"] == want_problem
  back, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      out, output_loading_info=True)
  assert type(back) is CLASSES[family]
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert back.config.num_labels == num_labels and back.config.problem_type == want_problem
  assert back.config.id2label == head["id2label"]
  close(hf_logits(back, x), logits)
  # Import -> export is bit-exact.
  a, b = hf.read_state_dict(str(tmp_path / "hf")), hf.read_state_dict(out)
  for k, v in a.items():
    if not k.endswith(hf._TIED_OR_BUFFERS):  # pylint: disable=protected-access
      assert np.array_equal(b[k], v), k


def test_lora_model_exports_merged_and_adapters_refuse(tmp_path):
  ref = perturbed(CLASSES["electra"](hf_config("electra", num_labels=3)))
  ref.save_pretrained(tmp_path / "hf")
  cfg, params, _ = hf.load_classifier(str(tmp_path / "hf"))
  lora_cfg = dataclasses.replace(cfg, lora_rank=2, lora_targets="q,k,v,out,ffn")
  x = inputs(2)
  model = models.ForSequenceClassification(lora_cfg, 3)
  rng = np.random.default_rng(0)  # LoRA leaves random (numpy: an eager init is slow on CPU)
  flat = hf._flatten(models.abstract_params(model, x))  # pylint: disable=protected-access
  flat_base = hf._flatten(params)  # pylint: disable=protected-access
  tree = {}
  for k, v in flat.items():
    value = flat_base.get(k, rng.normal(0, 0.1, v.shape).astype(np.float32))
    hf._set(tree, tuple(k.split("/")), value)  # pylint: disable=protected-access
  logits = np.asarray(model.apply({"params": tree}, **x))
  assert np.abs(logits - ours(cfg, params, 3, x)).max() > 1e-3  # LoRA changed the model
  hf.export_classifier(lora_cfg, tree, 3, str(tmp_path / "lora"))
  back = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "lora"))
  close(hf_logits(back, x), logits)
  with pytest.raises(ValueError, match="adapter_size=4"):
    hf.export_classifier(dataclasses.replace(cfg, adapter_size=4), params, 3,
                         str(tmp_path / "adapters"))
  with pytest.raises(ValueError, match="num_labels=2 but the classifier kernel has 3"):
    hf.export_classifier(cfg, params, 2, str(tmp_path / "bad"))
  with pytest.raises(ValueError, match="single_label_classification needs num_labels >= 2"):
    hf.export_classifier(cfg, params, 1, str(tmp_path / "bad"))


@pytest.mark.parametrize("family,cls,prefix", [
    ("bert", transformers.BertForPreTraining, "bert"),
    ("albert", transformers.AlbertForMaskedLM, "albert"),
    ("electra", transformers.ElectraForPreTraining, "electra"),
    ("electra", transformers.ElectraModel, "")])
def test_backbone_checkpoints_load_with_no_head(tmp_path, family, cls, prefix):
  ref = perturbed(cls(hf_config(family)))
  ref.save_pretrained(tmp_path / "hf")
  cfg, params, head = hf.load_classifier(str(tmp_path / "hf"))
  assert head is None and set(params) == {"bert"}
  sd = ref.state_dict()
  key = f"{prefix}.embeddings.word_embeddings.weight".lstrip(".")
  np.testing.assert_array_equal(params["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                sd[key].numpy())
  # The backbone is the same network: our hidden states equal the HF backbone's.
  backbone = ref if not prefix else getattr(ref, prefix)
  x = inputs(3)
  with torch.no_grad():
    want = backbone(input_ids=torch.tensor(x["input_ids"], dtype=torch.long),
                    attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
                    token_type_ids=torch.tensor(x["token_type_ids"], dtype=torch.long)
                    ).last_hidden_state.numpy()
  enc = params["bert"]["encoder"]
  if family == "albert":  # AlbertForMaskedLM has no pooler: not returned, not needed here
    assert "pooler" not in enc
    cfg = dataclasses.replace(cfg, use_pooler=False)
  got = models.BertModel(cfg).apply({"params": params["bert"]}, **x)[0]
  close(np.asarray(got) * x["input_mask"][..., None], want * x["input_mask"][..., None])


def test_converted_directory_loads_as_backbone(tmp_path):
  cfg = models.validate(dict(family="electra", vocab_size=V, embedding_size=10, hidden_size=30,
                             num_hidden_layers=1, num_attention_heads=5, intermediate_size=37,
                             max_position_embeddings=40, use_pooler=False))
  x = models.dummy_batch(cfg, 1, 8, 2)
  pre = jax.tree.map(np.zeros_like, models.abstract_params(models.build(cfg), x))
  hf.save_converted(str(tmp_path / "ours"), cfg, pre)
  cfg2, params, head = hf.load_classifier(str(tmp_path / "ours"))
  assert cfg2 == cfg and head is None
  assert set(params) == {"bert"} and set(params["bert"]) == {"embeddings", "encoder"}
  assert jax.tree.structure(params) == jax.tree.structure(models.backbone_params(pre))


def test_minilm_backbone_loads_with_no_head():
  from conftest import shared_path  # pylint: disable=g-import-not-at-top
  weights = shared_path("weights", "all-MiniLM-L6-v2")
  cfg, params, head = hf.load_classifier(str(weights))
  assert head is None and set(params) == {"bert"}
  assert cfg.family == "bert" and cfg.hidden_size == 384 and cfg.num_hidden_layers == 6
  # Backbone + pooler complete: a fresh head on top is all a fine-tuning run initialises.
  model = models.ForSequenceClassification(cfg, 2)
  expected = models.abstract_params(model, models.dummy_batch(cfg, 1, 8))
  assert jax.tree.structure(params["bert"]) == jax.tree.structure(expected["bert"])
