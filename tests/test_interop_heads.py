"""HF *ForQuestionAnswering / *ForTokenClassification <-> models.ForQuestionAnswering /
ForTokenClassification (bert_jax.interop.hf.load_head / export_head).

Tiny random HF models of every family (every parameter perturbed), test_interop's padded
two-segment batch, fp32, eval mode: start/end and token logits within 1e-4 of transformers,
both ways (import, then export loaded back by from_pretrained); a backbone checkpoint loads
with head None.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_jax import models  # noqa: E402
from bert_jax.interop import hf  # noqa: E402
from test_interop_classifier import close, hf_config, inputs  # noqa: E402
from test_interop import perturbed  # noqa: E402

CLASSES = {
    "question_answering": {"bert": transformers.BertForQuestionAnswering,
                           "albert": transformers.AlbertForQuestionAnswering,
                           "electra": transformers.ElectraForQuestionAnswering},
    "token_classification": {"bert": transformers.BertForTokenClassification,
                             "albert": transformers.AlbertForTokenClassification,
                             "electra": transformers.ElectraForTokenClassification},
}
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def hf_outputs(model, x, kind):
  with torch.no_grad():
    out = model.eval()(input_ids=torch.tensor(x["input_ids"], dtype=torch.long),
                       attention_mask=torch.tensor(x["input_mask"], dtype=torch.long),
                       token_type_ids=torch.tensor(x["token_type_ids"], dtype=torch.long))
  if kind == "question_answering":
    return out.start_logits.numpy(), out.end_logits.numpy()
  return (out.logits.numpy(),)


def our_outputs(cfg, params, kind, num_labels, x):
  out = hf.head_model(cfg, kind, num_labels).apply({"params": params}, **x)
  return tuple(np.asarray(o) for o in (out if isinstance(out, tuple) else (out,)))


def complete(cfg, kind, num_labels, params):
  """The loaded tree plus the parts HF does not have (our unused pooler)."""
  full = models.init_params(hf.head_model(cfg, kind, num_labels), __import__("jax").random.key(0),
                            models.dummy_batch(cfg, 1, 8))
  def merge(a, b):
    return {k: merge(a[k], b[k]) if isinstance(a[k], dict) and k in b else b.get(k, a[k]) for k in a}
  return merge(full, params)


# BERT in the fast suite; ALBERT and ELECTRA (about 20 s each on a busy 2-core CPU) with the slow one.
@pytest.mark.parametrize("family", ["bert", pytest.param("albert", marks=pytest.mark.slow),
                                    pytest.param("electra", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", ["question_answering", "token_classification"])
def test_head_import_export_parity(tmp_path, family, kind):
  n = 2 if kind == "question_answering" else len(TAGS)
  kw = {} if kind == "question_answering" else dict(num_labels=n, id2label=TAGS)
  ref = perturbed(CLASSES[kind][family](hf_config(family, **kw)))
  ref.save_pretrained(tmp_path / "hf")
  cfg, params, head = hf.load_head(str(tmp_path / "hf"), kind)
  assert head["num_labels"] == n
  if kind == "token_classification":
    assert head["id2label"] == TAGS
  x = inputs()
  want = hf_outputs(ref, x, kind)
  params = complete(cfg, kind, n, params)
  for a, b in zip(our_outputs(cfg, params, kind, n, x), want):
    close(a, b)
  # Export, load with transformers' Auto class, same outputs.
  hf.export_head(cfg, params, str(tmp_path / "out"), kind, id2label=head["id2label"])
  auto = (transformers.AutoModelForQuestionAnswering if kind == "question_answering"
          else transformers.AutoModelForTokenClassification)
  back = auto.from_pretrained(str(tmp_path / "out"), attn_implementation="eager")
  assert type(back) is CLASSES[kind][family]
  for a, b in zip(hf_outputs(back, x, kind), want):
    close(a, b)
  written = json.loads((tmp_path / "out" / "config.json").read_text())
  assert written["architectures"] == [CLASSES[kind][family].__name__]


def test_backbone_checkpoint_loads_without_head(tmp_path):
  transformers.BertModel(hf_config("bert")).save_pretrained(tmp_path / "bb")
  cfg, params, head = hf.load_head(str(tmp_path / "bb"), "token_classification")
  assert head is None and set(params) == {"bert"} and cfg.family == "bert"
  with pytest.raises(ValueError, match="Unknown head kind"):
    hf.load_head(str(tmp_path / "bb"), "ranking")
