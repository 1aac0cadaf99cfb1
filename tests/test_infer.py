"""Inference commands (bert_jax.tools.infer) against transformers.

Fast: a small random BertForMaskedLM (odd sizes, own vocabulary): fill-mask top-k ids and scores
equal to transformers' fill-mask pipeline, token / sentence embeddings equal to BertModel, errors,
the command line. Slow: the all-MiniLM-L6-v2 weights: embeddings within 1e-4 of the
feature-extraction pipeline, fill-mask on MiniLM's backbone (it has no MLM head: a seeded random
BertForMaskedLM head on it), and "apple" the fruit vs the company.
"""

import json
import shutil

import numpy as np
import pytest
import torch
import transformers

from conftest import shared_path

from bert_jax.tools import infer

TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog, twice.",
    "JAX compiles numerical programs with XLA for TPUs and GPUs.",
]
FILL = [
    "The capital of France is [MASK].",
    "I [MASK] a cup of [MASK] every morning.",
    "[MASK] is the best programming language",
]


WORDS = sorted({w for t in TEXTS + FILL for w in t.lower().replace("[mask]", " ").replace(",", " , ")
                .replace(".", " . ").replace("!", " ! ").split()})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  """A 2-layer BertForMaskedLM (hidden 36, 3 heads) with perturbed weights and a small vocab."""
  out = tmp_path_factory.mktemp("tiny_mlm")
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["apple", "pie", "##s", "##ing"]
  (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
  transformers.BertTokenizer(str(out / "vocab.txt")).save_pretrained(out)
  config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=36, num_hidden_layers=2,
                                   num_attention_heads=3, intermediate_size=37,
                                   max_position_embeddings=64, architectures=["BertForMaskedLM"])
  torch.manual_seed(0)
  model = transformers.BertForMaskedLM(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  model.save_pretrained(out)
  return str(out)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
  return infer.load(tiny_dir)


def check_fill_mask(ours, hf_dir, texts, top_k=5):
  """Our top-k ids, pieces and scores for every [MASK] equal the fill-mask pipeline's."""
  got = infer.fill_mask(ours, texts, top_k=top_k)
  pipe = transformers.pipeline("fill-mask", model=hf_dir, tokenizer=hf_dir, top_k=top_k)
  for text, masks in zip(texts, got):
    ref = pipe(text)
    ref = [ref] if isinstance(ref[0], dict) else ref  # one [MASK]: a flat list
    assert len(masks) == len(ref) == text.count("[MASK]")
    for ours_k, ref_k in zip(masks, ref):
      assert [p["token_id"] for p in ours_k] == [r["token"] for r in ref_k]
      assert [p["token"] for p in ours_k] == pipe.tokenizer.convert_ids_to_tokens([r["token"] for r in ref_k])
      np.testing.assert_allclose([p["score"] for p in ours_k], [r["score"] for r in ref_k], atol=1e-4)


def check_embeddings(ours, hf_dir, texts):
  """Token embeddings equal BertModel's (and the feature-extraction pipeline's); mean and [CLS]
  pooling equal the same pooling of BertModel's hidden states."""
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  model = transformers.BertModel.from_pretrained(hf_dir, add_pooling_layer=False).eval()
  out = infer.embed(ours, texts, pooling="mean")
  cls = infer.embed(ours, texts, pooling="cls", normalize=True)["sentence"]
  pipe = transformers.pipeline("feature-extraction", model=model, tokenizer=tok)
  enc = tok(texts, padding=True, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**enc).last_hidden_state.numpy()
  mask = enc["attention_mask"].numpy()
  for i, text in enumerate(texts):
    n = int(mask[i].sum())
    assert out["input_ids"][i, :n].tolist() == enc["input_ids"][i, :n].tolist()
    assert out["input_mask"][i].sum() == n
    np.testing.assert_allclose(out["tokens"][i, :n], np.asarray(pipe(text))[0], atol=1e-4)
    np.testing.assert_allclose(out["tokens"][i, :n], hidden[i, :n], atol=1e-4)
    assert not out["tokens"][i, n:].any()
  ref_mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  np.testing.assert_allclose(out["sentence"], ref_mean, atol=1e-4)
  ref_cls = hidden[:, 0] / np.linalg.norm(hidden[:, 0], axis=-1, keepdims=True)
  np.testing.assert_allclose(cls, ref_cls, atol=1e-4)


def test_fill_mask_and_embeddings_match_transformers(tiny, tiny_dir):
  assert tiny.has_mlm_head
  check_fill_mask(tiny, tiny_dir, FILL)
  check_embeddings(tiny, tiny_dir, TEXTS)


@pytest.fixture(scope="module")
def minilm_dir():
  return str(shared_path("weights", "all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def minilm(minilm_dir):
  return infer.load(minilm_dir)


@pytest.mark.slow
def test_minilm_embeddings_match_transformers_feature_extraction(minilm, minilm_dir):
  check_embeddings(minilm, minilm_dir, TEXTS)


@pytest.mark.slow
def test_minilm_has_no_mlm_head_and_fill_mask_says_so(minilm):
  assert not minilm.has_mlm_head
  with pytest.raises(ValueError, match="no MLM head"):
    infer.fill_mask(minilm, FILL[:1])


@pytest.fixture(scope="module")
def masked_lm_dir(minilm_dir, tmp_path_factory):
  """MiniLM's backbone under a BertForMaskedLM head with seeded random transform weights (the
  decoder is tied to MiniLM's real word table), saved with MiniLM's tokenizer."""
  out = tmp_path_factory.mktemp("minilm_mlm")
  config = transformers.BertConfig.from_pretrained(minilm_dir)
  config.architectures = ["BertForMaskedLM"]
  torch.manual_seed(0)
  model = transformers.BertForMaskedLM(config).eval()
  backbone = transformers.BertModel.from_pretrained(minilm_dir, add_pooling_layer=False)
  model.bert.load_state_dict(backbone.state_dict())
  with torch.no_grad():
    model.cls.predictions.transform.dense.weight.normal_(0.0, 0.05)
    model.cls.predictions.bias.normal_(0.0, 1.0)
  model.save_pretrained(out)
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(f"{minilm_dir}/{name}", out / name)
  return str(out)


@pytest.mark.slow
def test_minilm_fill_mask_matches_transformers_pipeline(masked_lm_dir):
  check_fill_mask(infer.load(masked_lm_dir), masked_lm_dir, FILL)


def test_input_errors_name_the_problem(tiny):
  ours = tiny
  with pytest.raises(ValueError, match="Input 2 has no"):
    infer.fill_mask(ours, [FILL[0], "no mask here"])
  with pytest.raises(ValueError, match="max_masks=1"):
    infer.fill_mask(ours, [FILL[1]], max_masks=1)
  with pytest.raises(ValueError, match="does not occur"):
    infer.word_similarity(ours, "pear", ["an apple a day"])
  with pytest.raises(FileNotFoundError, match="neither a bert_jax pretraining workdir"):
    infer.load("no/such/dir")


@pytest.mark.slow
def test_word_similarity_separates_fruit_from_company(minilm, minilm_dir, tmp_path):
  tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
  model = transformers.BertModel.from_pretrained(minilm_dir).eval()
  contexts = list(infer.DEMO_CONTEXTS)
  sim, vectors = infer.word_similarity(minilm, "apple", contexts)
  # The same vectors from transformers' hidden states: the word's pieces, averaged.
  word = tok("apple", add_special_tokens=False)["input_ids"]
  for i, text in enumerate(contexts):
    enc = tok(text, return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    start = next(j for j in range(len(ids)) if ids[j:j + len(word)] == word)
    with torch.no_grad():
      h = model(**enc).last_hidden_state[0].numpy()
    np.testing.assert_allclose(vectors[i], h[start:start + len(word)].mean(0), atol=1e-4)
  np.testing.assert_allclose(sim, sim.T, atol=1e-6)
  np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
  fruit, company = slice(0, 3), slice(3, 6)
  within = np.mean([sim[fruit, fruit][np.triu_indices(3, 1)].mean(), sim[company, company][np.triu_indices(3, 1)].mean()])
  across = sim[fruit, company].mean()
  assert within > across + 0.05, (within, across)
  table = infer.similarity_table("apple", contexts, sim)
  assert f"{sim[0, 3]:7.3f}" in table and contexts[3] in table
  png = tmp_path / "apple.png"
  infer.plot_similarity("apple", contexts, sim, str(png))
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  img = matplotlib.image.imread(png)
  assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200


def test_command_line_writes_what_the_functions_return(tiny, tiny_dir, tmp_path, capsys, monkeypatch):
  """Flags, files and printing (the loaded model is the fixture's: loading is tested above)."""
  ours, masked_lm_dir = tiny, tiny_dir
  monkeypatch.setattr(infer, "load", lambda path, checkpoint="latest": ours if path == tiny_dir else None)
  inputs = tmp_path / "in.txt"
  inputs.write_text("\n".join(FILL[:2]) + "\n\n")
  assert infer.main(["fill-mask", f"--model={masked_lm_dir}", f"--file={inputs}", "--top_k=3",
                     f"--json={tmp_path / 'p.jsonl'}"]) == 0
  lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
  assert [line["masks"] for line in lines] == infer.fill_mask(ours, FILL[:2], top_k=3)
  assert "[MASK] 2:" in capsys.readouterr().out
  assert infer.main(["embed", f"--model={masked_lm_dir}", f"--file={inputs}", "--pooling=cls",
                     f"--out={tmp_path / 's.npy'}", f"--tokens_out={tmp_path / 't.npz'}"]) == 0
  want = infer.embed(ours, FILL[:2], pooling="cls")
  np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), want["sentence"])
  saved = np.load(tmp_path / "t.npz")
  np.testing.assert_array_equal(saved["embeddings"], want["tokens"])
  np.testing.assert_array_equal(saved["input_ids"], want["input_ids"])
  assert infer.main(["similarity", f"--model={masked_lm_dir}", "--word=apple",
                     f"--png={tmp_path / 'a.png'}"]) == 0
  assert (tmp_path / "a.png").stat().st_size > 1000
  assert "cosine similarity of 'apple'" in capsys.readouterr().out
