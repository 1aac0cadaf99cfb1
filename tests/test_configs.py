"""Config files: parameter counts of every size variant (jax.eval_shape, nothing allocated)
against published counts, and invalid model configs failing at config time."""

import dataclasses
import importlib
import json

import pytest

from bert_jax import models
from bert_jax.models import config as model_config_lib


# Published parameter counts (papers / google-research READMEs). What is counted is the HF
# *ForPreTraining equivalent: encoder + pooler + MLM and sentence heads for BERT/ALBERT; the
# discriminator with its head for ELECTRA (the generator is not counted, as in the paper).
# BERT miniatures: Turc et al. 2019 (google-research/bert README) as usually quoted.
PUBLISHED = {
    ("bert", "tiny"): 4.4e6, ("bert", "mini"): 11.3e6, ("bert", "small"): 29.1e6,
    ("bert", "medium"): 41.7e6, ("bert", "base"): 110e6, ("bert", "large"): 335e6,
    ("albert", "base"): 12e6, ("albert", "large"): 18e6, ("albert", "xlarge"): 60e6,
    # The ALBERT paper says 235M, but its own xxlarge architecture (H 4096, 12 layers, E 128,
    # FFN 16384, vocab 30000) has 223M, as the released albert-xxlarge-v2 checkpoint does.
    ("albert", "xxlarge"): 223e6,
    # The ELECTRA paper's "14M" is the 13.5M of the released electra-small-discriminator.
    ("electra", "small"): 13.5e6, ("electra", "base"): 110e6, ("electra", "large"): 335e6,
}
HEADLINE = {("albert", "xxlarge"): 235e6, ("electra", "small"): 14e6}


def variant_config(family, variant):
  return importlib.import_module(f"bert_jax.configs.{family}").get_config(variant)


def counted_params(model_config):
  model = models.build(model_config)
  abstract = models.abstract_params(model, models.dummy_batch(model_config, 1, 8, 2))
  if model_config.family == "electra":
    abstract = {k: v for k, v in abstract.items() if not k.startswith("generator")}
  return models.param_count(abstract)


@pytest.mark.parametrize("family,variant", sorted(PUBLISHED))
def test_param_count_matches_published(family, variant):
  count = counted_params(variant_config(family, variant).model)
  published = PUBLISHED[(family, variant)]
  assert abs(count - published) / published < 0.02, (count, published)
  if (family, variant) in HEADLINE:  # the rounded headline number is off for a known reason
    assert abs(count - HEADLINE[(family, variant)]) / HEADLINE[(family, variant)] < 0.06


def test_param_counts_equal_transformers_exactly():
  """Same architecture as HF: identical parameter counts for every variant (meta device)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from bert_jax.interop import hf  # pylint: disable=g-import-not-at-top
  classes = {"bert": (transformers.BertConfig, transformers.BertForPreTraining),
             "albert": (transformers.AlbertConfig, transformers.AlbertForPreTraining),
             "electra": (transformers.ElectraConfig, transformers.ElectraForPreTraining)}
  for family, variant in sorted(PUBLISHED):
    cfg = models.validate(variant_config(family, variant).model)
    conf_cls, model_cls = classes[family]
    with torch.device("meta"):
      ref = model_cls(conf_cls(**hf.config_to_hf(cfg, family)))
    assert counted_params(cfg) == sum(p.numel() for p in ref.parameters()), (family, variant)


@pytest.mark.parametrize("family", ["bert", "albert", "electra"])
def test_runlocal_configs_validate_and_unknown_variant_fails(family):
  module = importlib.import_module(f"bert_jax.configs.{family}")
  models.validate(module.get_config(next(iter(module.SIZES)) + ",runlocal").model)
  with pytest.raises(ValueError, match="variant"):
    module.get_config("nonexistent")


def test_electra_generator_sizes_follow_the_reference():
  gen = models.generator_config(variant_config("electra", "base").model)
  # google-research/electra: hidden 768/3, FFN 4x, heads hidden/64, same depth.
  assert (gen.hidden_size, gen.intermediate_size, gen.num_attention_heads,
          gen.num_hidden_layers, gen.emb_size) == (256, 1024, 4, 12, 768)


BASE = dict(family="bert", vocab_size=100, hidden_size=32, num_hidden_layers=4,
            num_attention_heads=4, intermediate_size=64)


@pytest.mark.parametrize("override,key", [
    (dict(num_attention_heads=5), "hidden_size"),
    (dict(hidden_act="gelu_fancy"), "hidden_act"),
    (dict(family="albert", num_hidden_groups=3), "num_hidden_groups"),
    (dict(family="albert", num_hidden_groups=8), "num_hidden_groups"),
    (dict(num_hidden_groups=2), "num_hidden_groups"),     # sharing needs family=albert
    (dict(hidden_size=-32), "hidden_size"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(intermediate_size=-1), "intermediate_size"),
    (dict(embedding_size=-4), "embedding_size"),
    (dict(embedding_size=16), "embedding_size"),          # factorised embedding is not BERT
    (dict(family="albert", inner_group_num=0), "inner_group_num"),
    (dict(family="gpt"), "family"),
    (dict(dtype="float16"), "dtype"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps"),
    (dict(family="electra", use_pooler=False, generator_hidden_size=1.5),
     "generator_hidden_size"),
    (dict(family="electra", use_pooler=False, generator_layers=0.0), "generator_layers"),
    (dict(family="electra", use_pooler=True), "use_pooler"),
    (dict(family="electra", use_pooler=False, generator_hidden_size=0.75,
          generator_num_attention_heads=5), "generator_hidden_size"),
])
def test_invalid_model_config_names_the_key(override, key):
  with pytest.raises(ValueError, match=rf"config\.model\.{key}="):
    models.validate({**BASE, **override})
  with pytest.raises(ValueError, match=rf"config\.model\.{key}="):
    models.build({**BASE, **override})  # build validates before anything is created


def test_unknown_model_key_is_rejected():
  with pytest.raises(ValueError, match="hidden_sizes"):
    models.validate({**BASE, "hidden_sizes": 3})


def test_config_model_is_built_from_the_model_dataclass():
  """config.model's keys, defaults, types and order are ModelConfig's fields (written once)."""
  from bert_jax.configs import common  # pylint: disable=g-import-not-at-top
  fields = [f for f in dataclasses.fields(models.ModelConfig)
            if f.name not in model_config_lib.CODE_ONLY_FIELDS]
  c = common.model_config()
  assert list(json.loads(c.to_json())) == [f.name for f in fields]  # to_json keeps the order
  for f in fields:
    assert c[f.name] == f.default and type(c[f.name]) is type(f.default), f.name
  assert models.validate(c) == models.ModelConfig()
  # Code-only fields are set by code (the ELECTRA generator's head), never by a config.
  names = {f.name for f in dataclasses.fields(models.ModelConfig)}
  assert set(model_config_lib.CODE_ONLY_FIELDS) <= names
  assert not set(model_config_lib.CODE_ONLY_FIELDS) & set(c)
  assert common.model_config(hidden_size=256).hidden_size == 256
  with pytest.raises(TypeError):  # the type of a key is its default's, as before
    common.model_config().hidden_size = "wide"
