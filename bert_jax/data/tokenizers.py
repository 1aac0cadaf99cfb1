"""Tokenizers: sentencepiece (trained from a corpus stream) and WordPiece vocab.txt.

Both expose the same small interface (`Tokenizer`): special ids, encode/decode and a
per-id `is_word_start` table that whole-word, n-gram and span masking need.
Sentencepiece models we train put [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0..4.

Chinese (and any CJK text) is tokenized per character as BERT's basic tokenizer does:
WordPiece splits CJK characters itself; a sentencepiece model trained with
config.data.tokenizer.split_cjk (the default) sees every CJK character as its own word.
A word segmenter (config.data.tokenizer.word_segmenter=jieba) then tells masking which
characters form one word (Chinese-BERT-wwm): `encode_for_masking` sets the WORD_CONTINUES bit
on the first token of each character that continues a segmented word; the corpus and the
preprocessed records keep the bit and masking strips it (bert_jax.data.masking).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
import unicodedata
from typing import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm
import tensorflow as tf

from bert_jax.data import checks
from bert_jax.data import corpora
from bert_jax.data import instances as inst_lib

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SPM_FILE = "spm.model"
SETTINGS_FILE = "tokenizer.json"
WORD_SEGMENTERS = ("", "jieba")
WORD_CONTINUES = 1 << 30  # = masking.WORD_CONTINUES: "this token continues the previous word"


class Tokenizer:
  """Common interface; subclasses fill the ids and `_pieces`."""

  kind: str
  path: str
  lower_case: bool
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  is_word_start: np.ndarray  # bool [vocab_size]
  split_cjk: bool = False    # sentencepiece: CJK characters encoded one by one
  segmenter: str = ""        # word segmenter of encode_for_masking ("" or "jieba")

  @property
  def vocab_size(self) -> int:
    return len(self.is_word_start)

  @property
  def special_ids(self) -> tuple[int, ...]:
    """Ids never masked nor used as random replacements ([UNK] is an ordinary token)."""
    return (self.pad_id, self.cls_id, self.sep_id, self.mask_id)

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Iterable[int]) -> str:
    raise NotImplementedError

  def encode_for_masking(self, texts: Sequence[str]) -> list[list[int]]:
    """encode_batch, plus the WORD_CONTINUES bit on the first token of every CJK character
    that the word segmenter puts after another CJK character of the same word (strip it with
    `& (WORD_CONTINUES - 1)`: the ids are then encode_batch's). Without a segmenter:
    encode_batch."""
    if not self.segmenter:
      return self.encode_batch(texts)
    out = []
    for text in texts:
      parts = cjk_parts(text, self.segmenter)
      ids: list[int] = []
      for (_, continues), enc in zip(parts, self.encode_batch([p for p, _ in parts])):
        if continues and enc:
          enc = [enc[0] | WORD_CONTINUES] + list(enc[1:])
        ids.extend(enc)
      out.append(ids)
    return out

  def word_starts(self, ids: np.ndarray) -> np.ndarray:
    """bool per token of encode_for_masking's ids: starts a word (table and flags)."""
    ids = np.asarray(ids, np.int64)
    return self.is_word_start[ids & (WORD_CONTINUES - 1)] & ((ids & WORD_CONTINUES) == 0)

  def _options(self) -> bytes:
    """What changes encode / encode_for_masking besides the file (empty by default, so the
    fingerprints of plain tokenizers do not change)."""
    return (b"|split_cjk" if self.split_cjk else b"") + (f"|{self.segmenter}".encode() if self.segmenter else b"")

  def fingerprint(self) -> str:
    """Identifies the vocabulary (used to key caches of tokenized corpora)."""
    return self.file_fingerprint()

  def file_fingerprint(self) -> str:
    """The file's bytes (+ settings): also accepted from records preprocessed before the
    sentencepiece fingerprint became content-only."""
    with tf.io.gfile.GFile(self.path, "rb") as f:
      return hashlib.sha1(f.read() + str(self.lower_case).encode() + self._options()).hexdigest()[:12]


def _check_specials(found: dict[str, int | None], path: str, fix: str) -> None:
  missing = [t for t, i in found.items() if i is None]
  if missing:
    raise ValueError(f"Tokenizer {path} lacks the special tokens {missing}; {fix}")


class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece model with [PAD] [UNK] [CLS] [SEP] [MASK] pieces.

  split_cjk (None: from the tokenizer.json that bert_jax writes next to the models it
  trains; False without one) spaces out CJK characters before encoding, as the model was
  trained. [UNK] continues a word (sentencepiece gives "Piñera" as ▁pi [UNK] er a): only
  pieces with the ▁ word boundary start words.
  """

  kind = "sentencepiece"

  def __init__(self, path: str, lower_case: bool = True, split_cjk: bool | None = None, segmenter: str = ""):
    self.path = str(path)
    self.lower_case = lower_case
    if split_cjk is None:
      settings = os.path.join(os.path.dirname(self.path), SETTINGS_FILE)
      split_cjk = False
      if tf.io.gfile.exists(settings):
        with tf.io.gfile.GFile(settings) as f:
          split_cjk = bool(json.load(f).get("split_cjk", False))
    self.split_cjk = split_cjk
    self.segmenter = _check_segmenter(segmenter)
    if self.segmenter and not self.split_cjk:
      raise ValueError(f"config.data.tokenizer.word_segmenter={segmenter!r} needs CJK characters encoded one by "
                       f"one, but {self.path} was not trained with config.data.tokenizer.split_cjk; train a "
                       "tokenizer with it (leave config.data.tokenizer.path empty) or use a WordPiece vocab.txt.")
    with tf.io.gfile.GFile(self.path, "rb") as f:
      proto = f.read()
    self.sp = spm.SentencePieceProcessor()
    try:
      self.sp.LoadFromSerializedProto(proto)
    except (RuntimeError, OSError) as e:
      raise ValueError(f"{self.path} is not a sentencepiece model ({str(e).splitlines()[0][:200]}); set "
                       "config.data.tokenizer.path to a .model file, or leave it empty to train one "
                       "(delete <workdir>/tokenizer when that is the broken file).") from e
    n = self.sp.get_piece_size()
    ids = {}
    for tok in SPECIAL_TOKENS:
      i = self.sp.piece_to_id(tok)
      # piece_to_id returns unk_id for unknown pieces.
      ids[tok] = i if self.sp.id_to_piece(i) == tok else None
    _check_specials(ids, self.path, "train one with bert_jax (leave config.data.tokenizer.path "
                    "empty) or add them as control symbols.")
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        ids[t] for t in SPECIAL_TOKENS)
    pieces = [self.sp.id_to_piece(i) for i in range(n)]
    special = set(self.special_ids)  # not [UNK]: an unknown character inside a word continues it
    self.is_word_start = np.array(
        [p.startswith("\u2581") or i in special or self.sp.is_control(i)
         for i, p in enumerate(pieces)], dtype=bool)

  def encode(self, text: str) -> list[int]:
    text = text.lower() if self.lower_case else text
    return self.sp.encode(split_cjk(text) if self.split_cjk else text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    if self.lower_case:
      texts = [t.lower() for t in texts]
    if self.split_cjk:
      texts = [split_cjk(t) for t in texts]
    return self.sp.encode(list(texts))

  def decode(self, ids: Iterable[int]) -> str:
    return self.sp.decode([int(i) for i in ids])

  def fingerprint(self) -> str:
    """The model's content only: pieces, scores, normalizer and the trainer settings that shape
    encoding, without what a training run leaves in the file (its temporary path, input, thread
    count). A tokenizer retrained identically has the same fingerprint, so it finds the same
    tokenized-corpus cache and accepts the same preprocessed records."""
    proto = content_proto(self.sp.serialized_model_proto())
    return hashlib.sha1(proto + str(self.lower_case).encode() + self._options()).hexdigest()[:12]


def content_proto(serialized: bytes) -> bytes:
  """A serialized sentencepiece ModelProto without the fields that depend on where and how
  fast it was trained (model_prefix, input, num_threads)."""
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  m = sentencepiece_model_pb2.ModelProto()
  m.ParseFromString(serialized)
  for field in ("model_prefix", "input", "num_threads"):
    m.trainer_spec.ClearField(field)
  return m.SerializeToString(deterministic=True)


# ----------------------------------------------------------------------------- WordPiece

def _is_punctuation(ch: str) -> bool:
  cp = ord(ch)
  # ASCII non-alphanumerics count as punctuation (as in BERT's BasicTokenizer).
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or
          0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or
          0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def split_cjk(text: str) -> str:
  """Spaces around every CJK character (BERT's basic tokenizer's _tokenize_chinese_chars)."""
  return "".join(f" {ch} " if _is_cjk(ord(ch)) else ch for ch in text)


def _check_segmenter(name: str) -> str:
  if name not in WORD_SEGMENTERS:
    raise ValueError(f"config.data.tokenizer.word_segmenter={name!r}; choose one of {WORD_SEGMENTERS} "
                     "('' = none).")
  return name


_JIEBA = None


def _jieba():
  global _JIEBA
  if _JIEBA is None:
    import logging  # pylint: disable=g-import-not-at-top
    import jieba  # pylint: disable=g-import-not-at-top
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    _JIEBA = jieba
  return _JIEBA


def cjk_parts(text: str, segmenter: str = "jieba") -> list[tuple[str, bool]]:
  """`text` cut into single CJK characters and the runs of other text between them:
  [(part, continues)], continues=True for a CJK character that the segmenter puts right
  after another CJK character of the same word. Only CJK characters are ever joined: the
  segmenter's cuts inside other text (jieba cuts "Piñera" at the ñ) are ignored."""
  _check_segmenter(segmenter)
  parts: list[tuple[str, bool]] = []
  run = []
  for word in _jieba().cut(text, HMM=True):
    prev_cjk = False
    for ch in word:
      if _is_cjk(ord(ch)):
        if run:
          parts.append(("".join(run), False))
          run = []
        parts.append((ch, prev_cjk))
        prev_cjk = True
      else:
        run.append(ch)
        prev_cjk = False
  if run:
    parts.append(("".join(run), False))
  return parts


def basic_tokenize(text: str, lower_case: bool) -> list[str]:
  """BERT's basic tokenization: clean, split CJK and punctuation, optional lower+strip accents."""
  out = []
  for ch in text:
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and
                                   ch not in "\t\n\r"):
      continue
    if ch.isspace():
      out.append(" ")
    elif _is_cjk(cp):
      out.append(f" {ch} ")
    else:
      out.append(ch)
  words = []
  for word in "".join(out).split():
    if lower_case:
      word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                     if unicodedata.category(c) != "Mn")
    current = ""
    for ch in word:
      if _is_punctuation(ch):
        if current:
          words.append(current)
        words.append(ch)
        current = ""
      else:
        current += ch
    if current:
      words.append(current)
  return words


class WordPieceTokenizer(Tokenizer):
  """A BERT vocab.txt with basic + greedy longest-match-first WordPiece tokenization."""

  kind = "wordpiece"
  max_chars_per_word = 100

  def __init__(self, path: str, lower_case: bool = True):
    self.path = str(path)
    self.lower_case = lower_case
    with tf.io.gfile.GFile(self.path, "r") as f:
      self.pieces = [line.rstrip("\n") for line in f]
    self.vocab = {p: i for i, p in enumerate(self.pieces)}
    ids = {t: self.vocab.get(t) for t in SPECIAL_TOKENS}
    _check_specials(ids, self.path, "set config.data.tokenizer.path to a BERT-style vocab.txt (one piece "
                    "per line).")
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        ids[t] for t in SPECIAL_TOKENS)
    self.is_word_start = np.array([not p.startswith("##") for p in self.pieces], dtype=bool)
    self._cache: dict[str, list[int]] = {}

  def _word(self, word: str) -> list[int]:
    if word in self._cache:
      return self._cache[word]
    if len(word) > self.max_chars_per_word:
      return [self.unk_id]
    ids, start = [], 0
    while start < len(word):
      end, cur = len(word), None
      while start < end:
        sub = word[start:end] if start == 0 else "##" + word[start:end]
        if sub in self.vocab:
          cur = self.vocab[sub]
          break
        end -= 1
      if cur is None:
        ids = [self.unk_id]
        break
      ids.append(cur)
      start = end
    if len(self._cache) < 200_000:
      self._cache[word] = ids
    return ids

  def encode(self, text: str) -> list[int]:
    return [i for w in basic_tokenize(text, self.lower_case) for i in self._word(w)]

  def decode(self, ids: Iterable[int]) -> str:
    text = " ".join(self.pieces[int(i)] for i in ids)
    return text.replace(" ##", "")


JSON_KIND = "tokenizer_json"
# Special tokens by role: tokenizer_config.json / special_tokens_map.json name them; else the
# first of these in the vocabulary (BERT / ELECTRA, then ALBERT's sentencepiece names).
_SPECIAL_DEFAULTS = {"pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]",),
                     "sep": ("[SEP]",), "mask": ("[MASK]",)}


class JsonTokenizer(Tokenizer):
  """A transformers `tokenizer.json` (its normalizer, pre-tokenizer and WordPiece / Unigram / BPE
  model) through the `tokenizers` library: for HF directories with neither vocab.txt nor
  spiece.model (e.g. a continued pretraining's checkpoint). Casing is the file's own normalizer;
  encode adds no [CLS] / [SEP]."""

  kind = JSON_KIND

  def __init__(self, path: str):
    try:
      from tokenizers import Tokenizer as _Tokenizer  # pylint: disable=g-import-not-at-top  # only for this kind
    except ImportError as err:
      raise ImportError(f"{path} is a transformers tokenizer.json: `pip install tokenizers` to read it "
                        "(or put the model's vocab.txt / spiece.model next to it).") from err
    self.path = str(path)
    try:
      self.tk = _Tokenizer.from_file(self.path)
      with open(self.path, encoding="utf-8") as f:
        spec = json.load(f)
    except Exception as err:  # pylint: disable=broad-except  # the library raises its own Exception
      raise ValueError(f"{self.path} is not a readable transformers tokenizer.json ({err}); re-save "
                       "the tokenizer with save_pretrained.") from err
    self.tk.no_truncation()
    self.tk.no_padding()
    self.pieces = [self.tk.id_to_token(i) or "" for i in range(self.tk.get_vocab_size(with_added_tokens=True))]
    named: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
      file = os.path.join(os.path.dirname(self.path), name)
      if os.path.exists(file):
        with open(file, encoding="utf-8") as f:
          settings = json.load(f)
        for role in _SPECIAL_DEFAULTS:
          value = settings.get(f"{role}_token")
          value = value.get("content") if isinstance(value, dict) else value
          if isinstance(value, str) and value and role not in named:
            named[role] = value
    ids = {}
    for role, defaults in _SPECIAL_DEFAULTS.items():
      ids[role] = next((self.tk.token_to_id(t) for t in ([named[role]] if role in named else list(defaults))
                        if self.tk.token_to_id(t) is not None), None)
    missing = [role for role, i in ids.items() if i is None]
    if missing:
      raise ValueError(f"{self.path} has no {', '.join(f'{r} token' for r in missing)} "
                       f"({', '.join(_SPECIAL_DEFAULTS[r][0] for r in missing)}): not a BERT-style tokenizer.")
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        ids[r] for r in ("pad", "unk", "cls", "sep", "mask"))
    model = spec.get("model") or {}
    normalizer = json.dumps(spec.get("normalizer"))
    self.lower_case = '"lowercase": true' in normalizer or '"Lowercase"' in normalizer
    if model.get("type") == "WordPiece":
      prefix = model.get("continuing_subword_prefix") or "##"
      self.is_word_start = np.array([not p.startswith(prefix) for p in self.pieces], dtype=bool)
    else:  # Unigram / BPE with the sentencepiece word-boundary mark
      self.is_word_start = np.array([p.startswith("\u2581") for p in self.pieces], dtype=bool)

  def encode(self, text: str) -> list[int]:
    return list(self.tk.encode(text, add_special_tokens=False).ids)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [list(e.ids) for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    return self.tk.decode([int(i) for i in ids], skip_special_tokens=False)


# ----------------------------------------------------------------------------- build / load

def load(path: str, kind: str = "", lower_case: bool = True, segmenter: str = "") -> Tokenizer:
  """Loads a .model (sentencepiece) or vocab.txt (WordPiece) file; `segmenter` (jieba) marks
  Chinese words for masking (Tokenizer.encode_for_masking)."""
  if not tf.io.gfile.exists(path):
    raise ValueError(f"Tokenizer file {path} does not exist (config.data.tokenizer.path).")
  kind = kind or ("wordpiece" if str(path).endswith(".txt") else "sentencepiece")
  if kind == "wordpiece":
    try:
      tok = WordPieceTokenizer(path, lower_case)
      tok.segmenter = _check_segmenter(segmenter)
      return tok
    except (UnicodeDecodeError, tf.errors.OpError) as e:
      raise ValueError(f"{path} is not a WordPiece vocab.txt (one UTF-8 piece per line): {e}; fix "
                       "config.data.tokenizer.path (or config.data.tokenizer.kind).") from e
  if kind == "sentencepiece":
    return SentencePieceTokenizer(path, lower_case, segmenter=segmenter)
  if kind == JSON_KIND:
    tok = JsonTokenizer(path)
    tok.segmenter = _check_segmenter(segmenter)
    return tok
  raise ValueError(f"config.data.tokenizer.kind={kind!r}: use sentencepiece, wordpiece or {JSON_KIND} (a "
                   "transformers tokenizer.json).")


def _sentences(data_config, stats: dict, documents: list[int]) -> Iterator[str]:
  """The corpus's sentences as the tokenizer is trained on them; counts documents in documents[0]."""
  cjk = data_config.tokenizer.get("split_cjk", False)
  for doc in corpora.source_documents(data_config, "train", stats):
    documents[0] += 1
    for sent in doc:
      sent = sent.lower() if data_config.tokenizer.lower_case else sent
      yield split_cjk(sent) if cjk else sent


def sample_sentences(sentences: Iterable[str], n: int, seed: int) -> list[str]:
  """A uniform sample of n sentences from a stream of any length (reservoir, Algorithm R)."""
  rng = random.Random(seed * 0x9E3779B97F4A7C15 + 0x70C)
  out: list[str] = []
  for i, sent in enumerate(sentences):
    if i < n:
      out.append(sent)
    else:
      j = int(rng.random() * (i + 1))
      if j < n:
        out[j] = sent
  return out


def train_sentencepiece(data_config, out_dir: str) -> str:
  """Trains a sentencepiece model from the configured corpus stream into out_dir."""
  tc = data_config.tokenizer
  if tc.model_type not in ("unigram", "bpe"):
    raise ValueError(f"config.data.tokenizer.model_type={tc.model_type!r}: use unigram or bpe.")
  if tc.vocab_size < len(SPECIAL_TOKENS) + 100:
    raise ValueError(f"config.data.tokenizer.vocab_size={tc.vocab_size} is too small.")
  if tc.train_sentences < 1:
    raise ValueError(f"config.data.tokenizer.train_sentences={tc.train_sentences} must be >= 1 "
                     "(sentences sampled from the corpus to train sentencepiece).")
  stats: dict = {}
  model = tf.io.gfile.GFile  # keep the name short below
  with tempfile.TemporaryDirectory() as tmp:
    prefix = os.path.join(tmp, "spm")
    # We sample train_sentences sentences ourselves (reservoir, seeded): memory stays bounded
    # whatever the corpus size, and the result is the same in every process. sentencepiece's
    # own shuffle_input_sentence is not reproducible across processes (even after
    # set_random_generator_seed). hard_vocab_limit=False lets small corpora yield fewer pieces
    # than asked instead of failing.
    documents = [0]
    sample = sample_sentences(_sentences(data_config, stats, documents), tc.train_sentences,
                              seed=data_config.seed)
    if not any(s.strip() for s in sample):
      raise ValueError(f"{corpora.describe_source(data_config)} holds no text to train the tokenizer "
                       "on (config.data.tokenizer.path is empty, so one is trained from the corpus): "
                       "point the source at a non-empty corpus, or set config.data.tokenizer.path.")
    if not checks.separate_eval(data_config):  # else every document trains
      inst_lib.check_train_split(documents[0], data_config.eval_fraction, data_config.source)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sample), model_prefix=prefix,
        vocab_size=tc.vocab_size, model_type=tc.model_type,
        input_sentence_size=0, shuffle_input_sentence=False,
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="[PAD]", unk_piece="[UNK]",
        control_symbols="[CLS],[SEP],[MASK]", hard_vocab_limit=False,
        character_coverage=0.9995, num_threads=os.cpu_count() or 1,
        max_sentence_length=8192, minloglevel=2)
    tf.io.gfile.makedirs(out_dir)
    with open(prefix + ".model", "rb") as f:  # without the temporary path the trainer stored
      model_bytes = content_proto(f.read())
    with model(os.path.join(out_dir, SPM_FILE + ".tmp"), "wb") as f:
      f.write(model_bytes)
    settings = dict(kind="sentencepiece", model_type=tc.model_type, vocab_size=tc.vocab_size,
                    lower_case=tc.lower_case, train_sentences=tc.train_sentences,
                    split_cjk=bool(tc.get("split_cjk", False)),
                    source=data_config.source, special_tokens=list(SPECIAL_TOKENS),
                    input_stats=stats)
    with model(os.path.join(out_dir, SETTINGS_FILE), "w") as f:
      json.dump(settings, f, indent=2)
    # Rename last: other hosts wait for spm.model to appear.
    tf.io.gfile.rename(os.path.join(out_dir, SPM_FILE + ".tmp"),
                       os.path.join(out_dir, SPM_FILE), overwrite=True)
  return os.path.join(out_dir, SPM_FILE)


def build_or_load(data_config, workdir: str, process_index: int | None = None,
                  timeout_s: float = 3600) -> Tokenizer:
  """Loads config.data.tokenizer.path, or trains a sentencepiece model into <workdir>/tokenizer."""
  tc = data_config.tokenizer
  segmenter = tc.get("word_segmenter", "")
  if tc.path:
    return load(tc.path, tc.kind, tc.lower_case, segmenter)
  if tc.kind != "sentencepiece":
    raise ValueError("config.data.tokenizer.path is empty: only a sentencepiece tokenizer can "
                     f"be trained (config.data.tokenizer.kind={tc.kind!r}).")
  out_dir = os.path.join(workdir, "tokenizer")
  path = os.path.join(out_dir, SPM_FILE)
  if not tf.io.gfile.exists(path):
    if process_index is None:
      # JAX only to ask this host's index, when the caller did not say: no JAX load otherwise.
      import jax  # pylint: disable=g-import-not-at-top
      process_index = jax.process_index()
    if process_index == 0:
      train_sentencepiece(data_config, out_dir)
    else:
      deadline = time.time() + timeout_s
      while not tf.io.gfile.exists(path):
        if time.time() > deadline:
          raise TimeoutError(f"Process 0 did not write {path} within {timeout_s} s.")
        time.sleep(2)
  settings_path = os.path.join(out_dir, SETTINGS_FILE)
  lower = tc.lower_case
  if tf.io.gfile.exists(settings_path):
    with tf.io.gfile.GFile(settings_path) as f:
      lower = json.load(f).get("lower_case", lower)
  return SentencePieceTokenizer(path, lower, segmenter=segmenter)
