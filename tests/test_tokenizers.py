"""Tokenizers: sentencepiece training/loading and WordPiece vocab.txt (vs HF as a reference)."""

import json
import os
import pathlib
import sys

import numpy as np
import pytest
import sentencepiece as spm

from bert_jax.configs import common  # noqa: E402
from conftest import shared_path  # noqa: E402
from test_masking import real_text_config  # noqa: E402

from bert_jax.data import tokenizers  # noqa: E402

TEXTS = ["The quick brown fox, unaffable as ever, jumps over 13 lazy dogs!",
         "Héllo wörld: naïve café (résumé) -- don't stop.",
         "  Tabs\tand\nnewlines  ", "中文字符 and ｆｕｌｌ width", "", "a" * 150]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def trained(request, tmp_path_factory):
  cache = os.environ.get("BERT_JAX_CACHE") or tmp_path_factory.mktemp("cache")
  c = real_text_config(cache)
  c.tokenizer.model_type = request.param
  c.tokenizer.vocab_size = 1000
  c.tokenizer.train_sentences = 3000
  wd = tmp_path_factory.mktemp("wd")
  return c, wd, tokenizers.build_or_load(c, str(wd), process_index=0)


def test_sentencepiece_specials_settings_and_reload(trained):
  c, wd, tok = trained
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert 500 < tok.vocab_size <= 1000
  settings = json.loads((wd / "tokenizer" / "tokenizer.json").read_text())
  assert settings["model_type"] == c.tokenizer.model_type and settings["lower_case"]
  # Loading (another process, or path given explicitly) gives the same tokenizer.
  again = tokenizers.build_or_load(c, str(wd), process_index=1)
  c2 = c.copy_and_resolve_references()
  c2.tokenizer.path = str(wd / "tokenizer" / "spm.model")
  explicit = tokenizers.build_or_load(c2, "unused")
  for text in TEXTS:
    ids = tok.encode(text)
    assert again.encode(text) == ids == explicit.encode(text)
    assert not set(ids) & set(tok.special_ids)  # text never yields control tokens
  assert tok.decode(tok.encode("The quick brown fox.")) == "the quick brown fox."
  np.testing.assert_array_equal(again.is_word_start, tok.is_word_start)


def test_sentencepiece_training_is_reproducible_across_processes(trained, tmp_path):
  """Same config, another Python process: the same pieces and scores (the sample is ours)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  c, _, tok = trained
  (tmp_path / "cfg.json").write_text(c.to_json())
  script = ("import json, sys, ml_collections\n"
            "from bert_jax.data import tokenizers\n"
            "c = ml_collections.ConfigDict(json.load(open(sys.argv[1])))\n"
            "p = tokenizers.train_sentencepiece(c, sys.argv[2])\n")
  root = pathlib.Path(__file__).resolve().parents[1]
  subprocess.run([sys.executable, "-c", script, str(tmp_path / "cfg.json"), str(tmp_path / "tok")],
                 check=True, cwd=root, env=dict(os.environ, PYTHONPATH=str(root)))
  other = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "spm.model"))
  assert other.get_piece_size() == tok.sp.get_piece_size()
  for i in range(other.get_piece_size()):
    assert (other.id_to_piece(i), other.get_score(i)) == (tok.sp.id_to_piece(i), tok.sp.get_score(i))


def test_reservoir_sample_is_uniform_and_seeded():
  n, total, runs = 10, 100, 2000
  hits = np.zeros(total)
  for seed in range(runs):
    sample = tokenizers.sample_sentences((str(i) for i in range(total)), n, seed)
    assert len(set(sample)) == n
    hits[[int(x) for x in sample]] += 1
  # Each item is kept with probability n / total = 0.1: 200 of 2000 runs, sd ~13.4.
  assert np.abs(hits - runs * n / total).max() < 5 * 13.4, hits
  assert tokenizers.sample_sentences(map(str, range(50)), 60, 0) == list(map(str, range(50)))
  assert tokenizers.sample_sentences(map(str, range(total)), n, 3) == \
      tokenizers.sample_sentences(map(str, range(total)), n, 3)


def test_sentencepiece_word_starts(trained):
  _, _, tok = trained
  for i in range(tok.vocab_size):
    piece = tok.sp.id_to_piece(i)
    if i not in tok.special_ids and i != tok.unk_id:
      assert tok.is_word_start[i] == piece.startswith("\u2581"), piece
  ids = tok.encode("unaffable dogs jumped")
  # Exactly three words start in this text.
  assert tok.is_word_start[ids].sum() == 3


def test_sentencepiece_missing_specials(tmp_path):
  sents = [f"sentence number {i} has some words in it." for i in range(300)]
  spm.SentencePieceTrainer.train(sentence_iterator=iter(sents), model_prefix=str(tmp_path / "m"),
                                 vocab_size=60, minloglevel=2)
  with pytest.raises(ValueError, match=r"\[PAD\].*\[MASK\]"):
    tokenizers.load(str(tmp_path / "m.model"))


def test_wordpiece_missing_specials(tmp_path):
  (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n##s\n")
  with pytest.raises(ValueError, match=r"\[MASK\]"):
    tokenizers.load(str(tmp_path / "vocab.txt"))


def test_missing_tokenizer_file():
  c = common.data_config()
  c.tokenizer.path = "no/such/vocab.txt"
  with pytest.raises(ValueError, match="tokenizer.path"):
    tokenizers.build_or_load(c, "unused")


def test_wordpiece_small_vocab(tmp_path):
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "dog", "##s",
           ",", "!", "the"]
  (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
  tok = tokenizers.load(str(tmp_path / "vocab.txt"))
  assert tok.kind == "wordpiece" and tok.vocab_size == len(vocab)
  assert tok.encode("The UNAFFABLE dogs, cats!") == [12, 5, 6, 7, 8, 9, 10, 1, 11]
  assert tok.is_word_start[[12, 5, 6, 7, 8, 9]].tolist() == [True, True, False, False, True, False]
  assert tok.decode([5, 6, 7]) == "unaffable"


def test_wordpiece_matches_hf_bert_tokenizer():
  vocab = shared_path("weights", "all-MiniLM-L6-v2", "vocab.txt")
  transformers = pytest.importorskip("transformers")
  hf = transformers.BertTokenizer(str(vocab), do_lower_case=True)
  ours = tokenizers.load(str(vocab))
  assert ours.special_ids == (0, 101, 102, 103) and ours.vocab_size == hf.vocab_size
  texts = list(TEXTS)
  wiki = pathlib.Path(str(vocab)).parents[2] / "data" / "wikitext-2-raw" / "wiki.valid.raw"
  if wiki.exists():
    texts += [l for l in wiki.read_text(encoding="utf-8").splitlines() if l.strip()][:300]
  for text in texts:
    assert ours.encode(text) == hf.encode(text, add_special_tokens=False), text
