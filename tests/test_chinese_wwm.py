"""Chinese whole-word masking: per-character CJK tokens, jieba words kept whole by masking.

Text: ChnSentiCorp reviews (../shared/data/chinese; skipped without it). A WordPiece vocab.txt
of their characters and a sentencepiece model trained on them (split_cjk) are the tokenizers;
jieba (pinned) is the segmenter, and the tests compare masks with jieba's own segmentation of
the text, not with our flags. Also: the [UNK]-inside-a-word fix of sentencepiece ("Piñera" ->
▁pi [UNK] er a with a 4,000-piece model trained on English text), and the flags through the
preprocessor's records and the streaming reader. Slow: a tiny Chinese pretraining with wwm
then ChnSentiCorp fine-tuning (bert_jax.benchmarks.chinese_wwm).
"""

import collections
import functools
import json

import conftest  # noqa: F401  # 8 fake CPU devices before jax is imported
import numpy as np
import pytest
import tensorflow as tf
from conftest import shared_path

from bert_jax.configs import common
from bert_jax.data import instances as inst_lib
from bert_jax.data import masking
from bert_jax.data import pipeline
from bert_jax.data import preprocess
from bert_jax.data import tokenizers

FLAG = tokenizers.WORD_CONTINUES
N_REVIEWS = 300


def reviews(n=N_REVIEWS):
  path = shared_path("data", "chinese", "ChnSentiCorp", "train.tsv")
  with open(path, encoding="utf-8") as f:
    return [line.split("\t")[0] for line in f.read().splitlines()[:n]]


@pytest.fixture(scope="module")
def texts():
  return reviews()


@pytest.fixture(scope="module")
def wordpiece(texts, tmp_path_factory):
  """A vocab.txt of the reviews' characters (and ##-forms of ASCII letters and digits)."""
  counts = collections.Counter(ch for t in texts for ch in t.lower() if not ch.isspace())
  ascii_ = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
  words = list(tokenizers.SPECIAL_TOKENS) + sorted(set(counts) | set(ascii_)) + [f"##{c}" for c in ascii_]
  path = tmp_path_factory.mktemp("zh_vocab") / "vocab.txt"
  path.write_text("\n".join(words) + "\n", encoding="utf-8")
  return tokenizers.load(str(path), "wordpiece", True, "jieba")


@pytest.fixture(scope="module")
def spm_zh(texts, tmp_path_factory):
  """A sentencepiece model trained on the reviews with split_cjk (the default)."""
  d = tmp_path_factory.mktemp("zh_spm")
  (d / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
  c = common.data_config(source="text", text_glob=str(d / "corpus.txt"), text_format="document_per_line")
  c.tokenizer.update(vocab_size=2000, train_sentences=20_000, word_segmenter="jieba")
  return tokenizers.build_or_load(c, str(d), process_index=0)


@functools.lru_cache(maxsize=None)
def jieba_words(text):
  import jieba  # pylint: disable=g-import-not-at-top
  return list(jieba.cut(text, HMM=True))


def cjk(ch):
  return tokenizers._is_cjk(ord(ch))  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# Tokenization.
# ---------------------------------------------------------------------------------------------
def test_wordpiece_cjk_per_character_and_jieba_flags(wordpiece, texts):
  enc = wordpiece.encode_for_masking(texts[:60])
  assert [[i & (FLAG - 1) for i in e] for e in enc] == wordpiece.encode_batch(texts[:60])
  n_flagged = 0
  for text, ids in zip(texts[:60], enc):
    # Every CJK character is one token; its flag says jieba joined it to the previous one.
    cjk_tokens = [i for i in ids if cjk(wordpiece.pieces[i & (FLAG - 1)][0]) and
                  len(wordpiece.pieces[i & (FLAG - 1)]) == 1]
    want = []
    for w in jieba_words(text.lower()):
      want += [k > 0 and cjk(w[k - 1]) for k, ch in enumerate(w) if cjk(ch)]
    assert [bool(i & FLAG) for i in cjk_tokens] == want
    n_flagged += sum(want)
  assert n_flagged > 300  # jieba joins many characters of these reviews into words


def test_sentencepiece_split_cjk_and_flags(spm_zh, texts):
  assert spm_zh.split_cjk and spm_zh.segmenter == "jieba"
  # No piece holds two CJK characters: Chinese is tokenized per character.
  for i in range(spm_zh.vocab_size):
    assert sum(cjk(ch) for ch in spm_zh.sp.id_to_piece(i)) <= 1
  enc = spm_zh.encode_for_masking(texts[:60])
  # Encoding part by part gives the ids of encoding the whole text.
  assert [[i & (FLAG - 1) for i in e] for e in enc] == spm_zh.encode_batch(texts[:60])
  assert sum(bool(i & FLAG) for e in enc for i in e) > 300
  # The settings travel with the model: a plain load of it splits CJK too.
  again = tokenizers.load(spm_zh.path, "sentencepiece", True)
  assert again.split_cjk and again.encode(texts[0]) == spm_zh.encode(texts[0])
  assert again.fingerprint() != spm_zh.fingerprint()  # the segmenter's flags key caches and records


def test_segmenter_needs_a_per_character_sentencepiece(spm_zh, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copy(spm_zh.path, tmp_path / "spm.model")  # without tokenizer.json: split_cjk unknown -> off
  with pytest.raises(ValueError, match="split_cjk"):
    tokenizers.load(str(tmp_path / "spm.model"), "sentencepiece", True, "jieba")
  with pytest.raises(ValueError, match="word_segmenter"):
    tokenizers.load(spm_zh.path, "sentencepiece", True, "ltp")


# ---------------------------------------------------------------------------------------------
# Masking statistics on ChnSentiCorp.
# ---------------------------------------------------------------------------------------------
def rows_of(tok, texts, L=128):
  """Row r: [CLS] the first L - 2 tokens of review r [SEP] (flags kept), padded."""
  ids = np.full([len(texts), L], tok.pad_id, np.int64)
  for r, e in enumerate(tok.encode_for_masking(texts)):
    e = e[:L - 2]
    ids[r, 0], ids[r, 1:len(e) + 1], ids[r, len(e) + 1] = tok.cls_id, e, tok.sep_id
  return {"input_ids": ids.astype(np.int32), "input_mask": (ids != tok.pad_id).astype(np.int32)}


def mask(tok, rows, **kw):
  c = common.data_config(max_seq_length=rows["input_ids"].shape[1], max_predictions_per_seq=40, **kw)
  spec = masking.spec_from_config(c, tok)
  keys = masking.example_keys(3, 0, np.arange(len(rows["input_ids"])))
  out = masking.mask_batch(spec, {k: tf.constant(rows[k]) for k in ("input_ids", "input_mask")}, tf.constant(keys))
  return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("strategy", ["whole_word", "ngram", "span"])
def test_masking_never_splits_a_jieba_word(wordpiece, texts, strategy):
  """jieba's words of each review (recomputed from the text) are all-or-nothing under masking;
  the rate and the [MASK] / random / keep split are as configured."""
  rows = rows_of(wordpiece, texts)
  out = mask(wordpiece, rows, masking=strategy)
  ids = rows["input_ids"] & (FLAG - 1)
  assert (out["input_ids"] < wordpiece.vocab_size).all()  # flags never reach the model
  n_words = n_multi_masked = n_split = pred_total = cand_total = 0
  replaced = collections.Counter()
  for r in range(len(ids)):
    w = out["masked_lm_weights"][r] > 0
    pos = out["masked_lm_positions"][r][w]
    np.testing.assert_array_equal(out["masked_lm_ids"][r][w], ids[r][pos])
    for p in pos:
      new = out["input_ids"][r][p]
      replaced["mask" if new == wordpiece.mask_id else "keep" if new == ids[r][p] else "random"] += 1
    pred_total += len(pos)
    cand_total += int(rows["input_mask"][r].sum()) - 2
    selected = np.zeros(ids.shape[1], bool)
    selected[pos] = True
    # The row's CJK tokens (one per character) in order, and jieba's word of each character.
    cjk_pos = [k for k in range(1, ids.shape[1]) if ids[r][k] not in wordpiece.special_ids
               and len(wordpiece.pieces[ids[r][k]]) == 1 and cjk(wordpiece.pieces[ids[r][k]])]
    word_of = [i for i, word in enumerate(jieba_words(texts[r].lower())) for ch in word if cjk(ch)][:len(cjk_pos)]
    by_word = collections.defaultdict(list)
    for k, wid in zip(cjk_pos, word_of):
      by_word[wid].append(selected[k])
    for sel in by_word.values():
      if len(sel) >= 2:
        n_words += 1
        n_split += int(0 < sum(sel) < len(sel))
        n_multi_masked += int(all(sel))
  assert n_words > 1000
  assert n_split == 0
  assert n_multi_masked > 50  # multi-character words are masked whole, not just single characters
  assert abs(pred_total / cand_total - 0.15) < 0.015, pred_total / cand_total
  total = sum(replaced.values())
  assert abs(replaced["mask"] / total - 0.8) < 0.04 and abs(replaced["random"] / total - 0.1) < 0.03, replaced


def test_token_masking_ignores_the_flags(wordpiece, texts):
  """Token masking splits words (as BERT's): the flags change nothing but are stripped."""
  rows = rows_of(wordpiece, texts[:40])
  flagged = mask(wordpiece, rows, masking="token")
  plain = mask(wordpiece, {**rows, "input_ids": rows["input_ids"] & (FLAG - 1)}, masking="token")
  for k in ("input_ids", "masked_lm_positions", "masked_lm_ids"):
    np.testing.assert_array_equal(flagged[k], plain[k])


# ---------------------------------------------------------------------------------------------
# [UNK] inside a word (sentencepiece).
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spm_en(tmp_path_factory):
  wiki = shared_path("data", "wikitext-2-raw", "wiki.valid.raw")
  c = common.data_config(source="text", text_glob=str(wiki), text_format="document_per_line")
  c.tokenizer.update(vocab_size=4000, train_sentences=8000)
  return tokenizers.build_or_load(c, str(tmp_path_factory.mktemp("en_spm")), process_index=0)


@pytest.mark.parametrize("strategy", ["whole_word", "ngram", "span"])
def test_unk_inside_a_word_is_not_a_word_start(spm_en, strategy):
  ids = spm_en.encode("Piñera")
  pieces = [spm_en.sp.id_to_piece(i) for i in ids]
  assert spm_en.unk_id in ids and pieces[0].startswith("\u2581") and len(ids) >= 3, pieces
  assert not spm_en.is_word_start[spm_en.unk_id]
  text = " ".join(["the president Piñera met Muñoz and Peña in the city"] * 6)
  row = spm_en.encode(text)[:60]
  L = 64
  base = np.full([256, L], spm_en.pad_id, np.int32)
  base[:, 0], base[:, 1:len(row) + 1], base[:, len(row) + 1] = spm_en.cls_id, row, spm_en.sep_id
  rows = {"input_ids": base, "input_mask": (base != spm_en.pad_id).astype(np.int32)}
  out = mask(spm_en, rows, masking=strategy)
  # Words by the ▁ boundary of the text (not by our table): all-or-nothing.
  starts = [k for k, i in enumerate(row) if spm_en.sp.id_to_piece(i).startswith("\u2581")] + [len(row)]
  unk_words = 0
  for r in range(len(base)):
    selected = np.zeros(L, bool)
    selected[out["masked_lm_positions"][r][out["masked_lm_weights"][r] > 0]] = True
    for a, b in zip(starts[:-1], starts[1:]):
      span = selected[1 + a:1 + b]
      assert span.all() or not span.any(), [spm_en.sp.id_to_piece(i) for i in row[a:b]]
      unk_words += int(span.all() and spm_en.unk_id in row[a:b])
  assert unk_words > 20


# ---------------------------------------------------------------------------------------------
# The preprocessor's records and the streaming reader keep the flags.
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_preprocessed_records_and_stream_keep_words_whole(wordpiece, texts, tmp_path):
  (tmp_path / "zh.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
  c = common.data_config(source="text", text_glob=str(tmp_path / "zh.txt"), text_format="document_per_line",
                         max_seq_length=64, max_predictions_per_seq=12, masking="whole_word",
                         instances="full_sentences", eval_fraction=0.0)
  c.cache_dir = str(tmp_path / "cache")
  c.tokenizer.update(kind="wordpiece", path=wordpiece.path, word_segmenter="jieba")
  tok = tokenizers.build_or_load(c, str(tmp_path))
  summary = preprocess.run(c, tok, str(tmp_path / "rec" / "zh"), num_shards=2, num_workers=1)
  assert summary["tokenizer"]["fingerprint"] == tok.fingerprint()
  corpus, _ = preprocess.read_corpus(str(tmp_path / "rec" / "zh-*"), {}, tok)
  want = inst_lib.tokenize_documents(([t] for t in texts), tok, {})
  np.testing.assert_array_equal(np.sort(corpus.tokens), np.sort(want.tokens))  # flags kept
  assert (corpus.tokens >= FLAG).sum() > 1000
  # Records' word_starts feature = the flags and the table.
  rec = next(tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(str(tmp_path / "rec" / "zh-0*")))).as_numpy_iterator())
  f = tf.train.Example.FromString(rec).features.feature
  t = np.asarray(f["tokens"].int64_list.value)
  np.testing.assert_array_equal(np.asarray(f["word_starts"].int64_list.value, bool), tok.word_starts(t))
  # Streaming reader: masked positions cover whole segmented words (flags of the records).
  c.update(source="tfrecord", tfrecord_glob=str(tmp_path / "rec" / "zh-*"), stream_window_docs=50)
  flagged_stream = want.tokens
  it = pipeline.train_iterator(c, tok, batch_size=16)
  checked = 0
  for _ in range(4):
    b = next(it)
    for r in range(16):
      orig = b["input_ids"][r].copy()
      w = b["masked_lm_weights"][r] > 0
      orig[b["masked_lm_positions"][r][w]] = b["masked_lm_ids"][r][w]
      n = int(b["input_mask"][r].sum())
      body = orig[1:n - 1]
      # Find the row's tokens in the flagged corpus (rows are runs of one review's tokens).
      plain = flagged_stream & (FLAG - 1)
      hits = np.nonzero(np.all(np.lib.stride_tricks.sliding_window_view(plain, len(body)) == body, axis=1))[0]
      if len(hits) != 1:
        continue
      flags = flagged_stream[hits[0]:hits[0] + len(body)] >= FLAG
      selected = np.zeros(len(body), bool)
      selected[b["masked_lm_positions"][r][w] - 1] = True
      # A flagged token is masked exactly when the token before it is.
      assert (selected[1:][flags[1:]] == selected[:-1][flags[1:]]).all()
      checked += 1
  assert checked > 30
  it.close()


# ---------------------------------------------------------------------------------------------
# Slow: a tiny Chinese pretraining with wwm, then ChnSentiCorp fine-tuning.
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_chinese_wwm_pretraining_then_chnsenticorp(tmp_path):
  """End to end: corpus -> per-character sentencepiece -> jieba whole-word masking -> MLM
  pretraining -> ChnSentiCorp fine-tuning from the workdir and from random init. At this size
  (150 + 50 steps) nothing is learned (README): this checks the pipeline, not the figure."""
  from bert_jax.benchmarks import chinese_wwm  # pylint: disable=g-import-not-at-top
  data = shared_path("data", "chinese", "ChnSentiCorp")
  out = chinese_wwm.main([f"--data_dir={data}", f"--workdir={tmp_path}", "--pretrain_steps=150",
                          "--train_examples=800", "--epochs=2", "--max_seq_length=64"])
  settings = json.loads((tmp_path / "pretrain" / "tokenizer" / "tokenizer.json").read_text())
  assert settings["split_cjk"]
  pre = json.loads((tmp_path / "pretrain" / "config.json").read_text())
  assert pre["data"]["masking"] == "whole_word" and pre["data"]["tokenizer"]["word_segmenter"] == "jieba"
  assert out["pretrain"]["steps"] == 150 and 0.0 < out["pretrain"]["mlm_accuracy"] <= 1.0
  ft = json.loads((tmp_path / "pretrained" / "results.json").read_text())
  assert ft["start"] == str(tmp_path / "pretrain") and ft["task"] == "tsv"
  for run in ("finetune", "random_init"):
    assert out["majority"] - 0.02 <= out[run]["accuracy"] <= 1.0, out
  assert json.loads((tmp_path / "summary.json").read_text())["finetune"]["accuracy"] == out["finetune"]["accuracy"]
